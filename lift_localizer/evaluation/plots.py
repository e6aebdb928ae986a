"""Figures for an evaluation report: trajectory top view, error CDFs, inlier matches on images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

COLOURS = {"lift": "tab:blue", "sift": "tab:orange"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt

    return plt


def top_view_axes(points: np.ndarray) -> np.ndarray:
    """(2, 3) the two principal directions of the ground-truth positions: a top view for a
    ground vehicle or a person, whatever the map's up axis is."""
    if len(points) < 3:
        return np.eye(3)[[0, 2]]
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:2]


def plot_trajectories(path: Path, gt: np.ndarray, estimates: dict[str, np.ndarray], title: str) -> None:
    """gt (N, 3) positions; estimates {method: (N, 3)} with NaN rows for failures."""
    plt = _plt()
    axes = top_view_axes(gt)
    fig, ax = plt.subplots(figsize=(7, 6))
    g = (gt - gt.mean(0)) @ axes.T
    ax.plot(g[:, 0], g[:, 1], "k.-", lw=1, ms=4, label="ground truth")
    for name, est in estimates.items():
        ok = np.isfinite(est[:, 0])
        e = (est - gt.mean(0)) @ axes.T
        c = COLOURS.get(name)
        ax.plot(e[ok, 0], e[ok, 1], "o", mfc="none", color=c, ms=7, label=f"{name} ({ok.sum()}/{len(ok)})")
        if (~ok).any():
            ax.plot(g[~ok, 0], g[~ok, 1], "x", color=c, ms=9, mew=2, label=f"{name} failed")
    ax.set_aspect("equal", "datalim")
    ax.set_xlabel("principal axis 1 (map units)")
    ax.set_ylabel("principal axis 2 (map units)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_error_cdfs(path: Path, errors: dict[str, np.ndarray], title: str) -> None:
    """errors {method: (N, 2) translation, rotation°}, inf for failures (they keep the curve below 1)."""
    plt = _plt()
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for name, err in errors.items():
        n = len(err)
        for k, ax in enumerate(axs):
            v = np.sort(err[:, k][np.isfinite(err[:, k])])
            if k == 0:
                v = v * 100
            ax.step(np.r_[v, v[-1:] if len(v) else []], np.r_[np.arange(1, len(v) + 1) / n, [len(v) / n] if len(v) else []],
                    where="post", color=COLOURS.get(name), label=name)
    from matplotlib.ticker import NullFormatter

    for ax, label in zip(axs, ("translation error (cm)", "rotation error (°)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labels on every minor tick overlap
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of queries")
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_inliers(image: np.ndarray, keypoints: np.ndarray, projected: np.ndarray, inliers: np.ndarray,
                 caption: str) -> np.ndarray:
    """BGR image with each 2D–3D match drawn from the keypoint to its 3D point's reprojection at
    the estimated pose: inliers green, outliers red."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    # A copy: bag images are read-only views of the message buffer.
    img = np.array(img if img.dtype == np.uint8 else (img / max(img.max(), 1) * 255).astype(np.uint8))
    h, w = img.shape[:2]
    for (x, y), (u, v), ok in zip(keypoints, projected, inliers):
        colour = (0, 200, 0) if ok else (0, 0, 230)
        if np.isfinite(u) and np.isfinite(v) and -w < u < 2 * w and -h < v < 2 * h:
            cv2.line(img, (int(round(x)), int(round(y))), (int(round(u)), int(round(v))), colour, 1, cv2.LINE_AA)
        cv2.circle(img, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
    cv2.putText(img, caption, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, caption, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img
