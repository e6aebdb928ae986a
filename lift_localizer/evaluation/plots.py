"""Figures for an evaluation report: trajectory top view, error CDFs, 2D–3D matches on images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .metrics import THRESHOLDS

COLOURS = {"lift": "tab:blue", "sift": "tab:orange"}
OTHER_COLOURS = ("tab:green", "tab:purple", "tab:brown", "tab:pink")
# Different shapes and sizes, so that two feature sets' markers at the same place both stay visible.
FAILURE_MARKERS = ("x", "+", "1", "2")
ESTIMATE_SIZES = (9, 6, 4, 3)


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt

    return plt


def colour(name: str, k: int) -> str:
    return COLOURS.get(name, OTHER_COLOURS[k % len(OTHER_COLOURS)])


def top_view_axes(points: np.ndarray, down: np.ndarray | None = None) -> np.ndarray:
    """(2, 3) the axes of a top view of the positions ``points`` (N, 3): the main direction of the
    path, then the direction across it, whatever the map's up axis is. The ground plane is the
    plane the positions span; on a near straight path (a car on a road) that plane is not defined
    by the positions, and it is the plane perpendicular to ``down`` (the cameras' mean y axis, the
    image's down direction) instead. ``down`` also turns the view to be seen from above."""
    d = None if down is None or not np.linalg.norm(down) else down / np.linalg.norm(down)
    centred = points - points.mean(0) if len(points) else np.zeros((0, 3))
    sv, vt = (np.linalg.svd(centred, full_matrices=False)[1:] if len(points) >= 3
              else (np.zeros(3), np.eye(3)[[0, 2, 1]]))
    if d is None or (len(sv) > 1 and sv[1] > 0.2 * sv[0]):
        axes = vt[:2].copy()
    else:
        flat = centred - np.outer(centred @ d, d)
        a1 = np.linalg.svd(flat, full_matrices=False)[2][0] if len(points) >= 2 else np.eye(3)[0]
        a1 = a1 - (a1 @ d) * d
        if np.linalg.norm(a1) < 1e-9:  # the path is along ``down``: any horizontal direction
            a1 = np.cross(d, np.eye(3)[np.argmin(np.abs(d))])
        a1 /= np.linalg.norm(a1)
        axes = np.stack([a1, np.cross(a1, d)])
    if d is not None and np.cross(axes[0], axes[1]) @ d > 0:
        axes[1] *= -1  # seen from above, not mirrored
    if len(points) >= 2 and (points[-1] - points[0]) @ axes[0] < 0:
        axes *= -1  # turned half a circle: the path goes left to right
    return axes


def plot_trajectories(path: Path, gt: np.ndarray, estimates: dict[str, np.ndarray], title: str,
                      down: np.ndarray | None = None) -> None:
    """gt (N, 3) positions in metres; estimates {method: (N, 3)} with NaN rows for failures; down:
    see ``top_view_axes``."""
    plt = _plt()
    from matplotlib.collections import LineCollection

    axes = top_view_axes(gt, down)
    g = (gt - gt.mean(0)) @ axes.T
    # A figure shaped like the path (a road is long and narrow), within bounds that keep it readable.
    span = np.ptp(g, 0) if len(g) else np.ones(2)
    shape = float(np.clip(span[1] / span[0], 0.35, 1.0)) if span[0] > 0 else 1.0
    fig, ax = plt.subplots(figsize=(9, 1.5 + 7 * shape))
    ax.plot(g[:, 0], g[:, 1], "-", color="0.35", lw=1, zorder=1, label=f"ground truth ({len(g)} queries)")
    ax.plot(g[:, 0], g[:, 1], ".", color="k", ms=3, zorder=1)
    if len(g):
        ax.plot(*g[0], "k^", ms=12, mfc="none", zorder=4, label="first query")
    for k, (name, est) in enumerate(estimates.items()):
        ok = np.isfinite(est[:, 0])
        e = (est - gt.mean(0)) @ axes.T
        c = colour(name, k)
        # Segments from the true to the estimated position: large errors show as long lines.
        ax.add_collection(LineCollection(np.stack([g[ok], e[ok]], 1), colors=c, linewidths=0.8, zorder=2))
        ax.plot(e[ok, 0], e[ok, 1], "o", mfc="none", color=c, mew=1.2, ms=ESTIMATE_SIZES[k % 4], zorder=3,
                label=f"{name}: estimate ({ok.sum()}/{len(ok)} localized)")
        if (~ok).any():
            ax.plot(g[~ok, 0], g[~ok, 1], FAILURE_MARKERS[k % 4], color=c, ms=11 - 2 * (k % 4), mew=2, zorder=5,
                    label=f"{name}: failed ({(~ok).sum()}), at the true position")
    ax.set_aspect("equal", "datalim")
    ax.set_xlabel("along the main direction of the true path (m)")
    ax.set_ylabel("across it (m)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    # Below the axes: a legend inside would hide part of the trajectory.
    # Anchored to the axes' bottom edge with a pad (in font sizes) that clears the tick labels and the
    # x label, whatever the figure's height.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0), borderaxespad=5, ncol=2, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def cdf_steps(values: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF of the finite ``values`` as step vertices (draw with ``where="post"``):
    it starts at (smallest value, 0) and rises by 1/n at each value, n = len(values) unless given,
    so non-finite values (failures) keep it below 1."""
    v = np.sort(np.asarray(values, float)[np.isfinite(values)])
    n = len(values) if n is None else n
    if not len(v):
        return np.zeros(0), np.zeros(0)
    return np.r_[v[0], v], np.arange(len(v) + 1) / n


def _metres(v: float, _=None) -> str:
    if v >= 1:
        return f"{v:g} m"
    if v >= 0.01:
        return f"{v * 100:.3g} cm"
    return f"{v * 1000:.3g} mm"


def _degrees(v: float, _=None) -> str:
    return f"{v:g}°"


def plot_error_cdfs(path: Path, errors: dict[str, np.ndarray], title: str,
                    thresholds=THRESHOLDS) -> None:
    """errors {method: (N, 2) translation in metres, rotation in degrees}, inf for failures (they keep
    the curve below 1). Log x axes with labelled 1-2-5 ticks; the recall thresholds dashed."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.8))
    marks = (sorted({t for t, _ in thresholds}), sorted({r for _, r in thresholds}))
    formats = (_metres, _degrees)
    for k, (ax, label) in enumerate(zip(axs, ("translation error", "rotation error"))):
        finite = np.concatenate([e[:, k][np.isfinite(e[:, k])] for e in errors.values()] or [np.zeros(0)])
        finite = finite[finite > 0]
        lo = min([*finite.tolist(), *marks[k]]) / 1.6
        hi = max([*finite.tolist(), *marks[k]]) * 1.6
        for j, (name, err) in enumerate(errors.items()):
            x, y = cdf_steps(err[:, k])
            if len(x):
                # Carried on to the right edge: the level it stays at is the recall at any larger error.
                x, y = np.r_[np.maximum(x, lo), hi], np.r_[y, y[-1]]
            n_ok = int(np.isfinite(err[:, k]).sum())
            # Thinner for each further set: where curves coincide, both colours still show.
            ax.step(x, y, where="post", color=colour(name, j), lw=max(2.8 - 0.8 * j, 1.0),
                    label=f"{name} ({n_ok}/{len(err)} localized)")
        for t in marks[k]:
            ax.axvline(t, color="0.4", ls="--", lw=0.8, zorder=0)
            ax.text(t, 0.03, " " + formats[k](t), rotation=90, fontsize=8, color="0.3", ha="right", va="bottom")
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        decades = np.log10(hi / lo)
        ax.xaxis.set_major_locator(LogLocator(10, subs=(1, 2, 5) if decades <= 3 else (1,)))
        ax.xaxis.set_major_formatter(FuncFormatter(formats[k]))
        ax.xaxis.set_minor_locator(LogLocator(10, subs=np.arange(1, 10)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(f"{label} (log scale)")
        ax.set_ylabel("fraction of queries at most this error")
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
        ax.legend(loc="upper left", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_matches(path: Path, image: np.ndarray, keypoints: np.ndarray, projected: np.ndarray,
                 inliers: np.ndarray, title: str) -> None:
    """The 2D–3D matches of one query: inliers as green dots with a line to their 3D point
    reprojected at the estimated pose, outliers as small red crosses only (they are most of the
    matches, and their lines would hide the inliers). Title above and legend below the image."""
    plt = _plt()
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    inliers = np.zeros(len(keypoints), bool) if inliers is None else np.asarray(inliers, bool)
    # Small images shown larger, so that the markers stay apart; large ones shrunk to a page.
    width_in = min(max(w, 800), 1400) / 100
    fig, ax = plt.subplots(figsize=(width_in, width_in * h / w))
    # Lightened: the coloured markers stand out on any texture.
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255 if gray.dtype == np.uint8 else max(float(gray.max()), 1),
              alpha=0.55, interpolation="antialiased")
    out = ~inliers
    ax.plot(keypoints[out, 0], keypoints[out, 1], "x", color="red", ms=3.5, mew=0.8, alpha=0.7, ls="none",
            label=f"outliers ({out.sum()})")
    ok = inliers & np.isfinite(projected).all(1)
    if ok.any():
        seg = np.full((3 * ok.sum(), 2), np.nan)
        seg[0::3], seg[1::3] = keypoints[ok], projected[ok]
        ax.plot(seg[:, 0], seg[:, 1], "-", color="#006400", lw=1.2)
    ax.plot(keypoints[inliers, 0], keypoints[inliers, 1], "o", ms=5, mfc="#00e000", mec="black", mew=0.6,
            ls="none", label=f"inliers ({inliers.sum()}), line to the reprojected 3D point")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2, frameon=False, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
