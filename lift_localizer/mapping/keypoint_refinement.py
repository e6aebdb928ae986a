"""Photometric refinement of a map's keypoints along their tracks, before triangulation.

A detector places each keypoint of a track on its own, so the observations of one 3D point disagree
by the detector's localisation noise (LIFT's more than SIFT's: its finest level is the image at
0.69×). Here every track gets one reference observation, and each other observation is moved to
where its image looks like the reference's patch: a Gauss-Newton (Lucas-Kanade) alignment
of an affine patch plus gain and bias, started from the keypoints' scale and orientation frames, on
the original pixels. This is the keypoint adjustment of pixel-perfect SfM (Lindenberger et al.,
ICCV 2021) on image intensities instead of dense CNN features.

    refined, stats = refine_keypoints(images, features, matches)

Aligned observations agree with each other, but sit where one detection (the reference's) put the
point; the track is then moved, all observations together, to where the detector put it on average.

``images(k)`` gives image k's grey levels; each image is read twice (references, then refinement),
so that only one image is held at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..features.types import Features

default_conf = {
    # The patch: patch_size² samples covering ±patch_radius keypoint sigmas (sigma = OpenCV size / 2).
    "patch_size": 15,
    "patch_radius": 2.0,
    "iterations": 12,
    # A refinement is kept when the aligned patches correlate at least this much (ZNCC) and the keypoint
    # moved by at most max_shift sigmas; otherwise the detector's position stays.
    "min_correlation": 0.8,
    "max_shift": 0.5,
    # Move each track to its observations' mean detected position (True) or onto its reference (False).
    "centre": True,
}


@dataclass
class RefinementStats:
    observations: int      # keypoints in a track of two or more images, references included
    refined: int           # aligned to their reference's patch
    rejected: int          # kept where the detector put them
    median_shift_px: float  # of the refined: from the detection to the reference's point, before centring

    def as_dict(self) -> dict:
        return {"observations": self.observations, "refined": self.refined, "rejected": self.rejected,
                "median_shift_px": round(self.median_shift_px, 4)}


def tracks(counts: Sequence[int], matches: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """The connected components of the match graph: (sum(counts),) track label per keypoint (keypoint
    k of image i is node offsets[i] + k), −1 for keypoints without a match."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if not matches:
        return np.full(int(offsets[-1]), -1, np.int64)
    a = np.concatenate([offsets[i] + m[:, 0] for (i, _), m in matches.items()])
    b = np.concatenate([offsets[j] + m[:, 1] for (_, j), m in matches.items()])
    label = np.arange(offsets[-1], dtype=np.int64)
    # Minimum-label propagation with pointer jumping: a few passes over the edges, no Python per node.
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    matched = np.zeros(offsets[-1], bool)
    matched[a] = matched[b] = True
    _, dense = np.unique(label[matched], return_inverse=True)
    out = np.full(int(offsets[-1]), -1, np.int64)
    out[matched] = dense
    return out


# Each patch is read from the image blurred in proportion to its sample spacing (BLUR × spacing,
# spacings rounded to quarter octaves), so that two views of one place are read with the same blur
# whatever their scales, and bilinear reads between samples are smooth.
BLUR = 0.6
STEPS_PER_OCTAVE = 4


class BlurredImage:
    """An image's intensity and x, y derivatives (3, H, W), blurred per spacing level, made on demand."""

    def __init__(self, gray: np.ndarray) -> None:
        self.gray = np.ascontiguousarray(gray, np.float32)
        self.levels: dict[int, torch.Tensor] = {}

    def __call__(self, q: int) -> torch.Tensor:
        if q not in self.levels:
            sigma = BLUR * 2 ** (q / STEPS_PER_OCTAVE)
            img = cv2.GaussianBlur(self.gray, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
            gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8, borderType=cv2.BORDER_REPLICATE)
            gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8, borderType=cv2.BORDER_REPLICATE)
            self.levels[q] = torch.from_numpy(np.stack([img, gx, gy]))
        return self.levels[q]


def patch_grid(conf: dict) -> torch.Tensor:
    """(P², 2) patch sample offsets in keypoint sigmas, and their Gaussian weights (P²,)."""
    n = conf["patch_size"]
    t = torch.linspace(-conf["patch_radius"], conf["patch_radius"], n, dtype=torch.float64)
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    g = torch.stack([gx.flatten(), gy.flatten()], 1)
    w = torch.exp(-(g ** 2).sum(1) / (2 * (conf["patch_radius"] / 1.5) ** 2))
    return g, w


def _level(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(n,) blur level of each patch (quarter octaves of its sample spacing, in pixels); below half a
    pixel the image's own pixels set the blur, so one level serves all those patches."""
    spacing = torch.sqrt(torch.abs(torch.linalg.det(A))) * (g[1, 0] - g[0, 0])
    return torch.round(torch.log2(spacing.clamp(min=0.5)) * STEPS_PER_OCTAVE).long()


def _sample(img: torch.Tensor, c: torch.Tensor, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Values and derivatives (n, P², 3) of the blurred image ``img`` (3, H, W) at c + A g: centres
    (n, 2), frames (n, 2, 2), offsets (P², 2)."""
    h, w = img.shape[1:]
    xy = (c[:, None, :] + torch.einsum("nij,pj->npi", A, g)).float()
    grid = torch.stack([2 * xy[..., 0] / max(w - 1, 1) - 1, 2 * xy[..., 1] / max(h - 1, 1) - 1], -1)
    return F.grid_sample(img[None], grid[None], mode="bilinear", padding_mode="border",
                         align_corners=True)[0].permute(1, 2, 0)


def keypoint_frames(f: Features, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres (n, 2), affine frames (n, 2, 2) mapping sigma units to pixels, sigmas (n,)."""
    c = torch.from_numpy(f.keypoints[idx].astype(np.float64))
    sigma = torch.from_numpy(f.scales[idx].astype(np.float64)) / 2
    th = torch.from_numpy(f.orientations[idx].astype(np.float64))
    rot = torch.stack([torch.stack([th.cos(), -th.sin()], -1), torch.stack([th.sin(), th.cos()], -1)], -2)
    return c, rot * sigma[:, None, None], sigma


def _znorm(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    mean = (v * w).sum(-1, keepdim=True) / w.sum()
    d = v - mean
    return d / torch.sqrt((d * d * w).sum(-1, keepdim=True) / w.sum()).clamp(min=1e-6)


def read_patches(image: BlurredImage, c: torch.Tensor, A: torch.Tensor, g: torch.Tensor,
                 w: torch.Tensor) -> torch.Tensor:
    """Z-normalised patches (n, P²) at frames (c, A), each read at its blur level."""
    out = torch.zeros(len(c), len(g))
    level = _level(A, g)
    for lv in torch.unique(level).tolist():
        sel = level == lv
        out[sel] = _znorm(_sample(image(lv), c[sel], A[sel], g)[..., 0], w.float())
    return out


def align_patches(image: BlurredImage, template: torch.Tensor, c: torch.Tensor, A: torch.Tensor, g: torch.Tensor,
                  w: torch.Tensor, conf: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gauss-Newton on (centre, affine frame, gain, bias) so that the image around each c matches its
    z-normalised ``template`` (n, P²), each patch read at the blur level of its starting frame.
    Returns the centres (n, 2), the frames (n, 2, 2) and the final weighted ZNCC (n,)."""
    c, A, zncc = c.clone(), A.clone(), torch.zeros(len(c), dtype=torch.float64)
    level = _level(A, g)
    for lv in torch.unique(level).tolist():
        sel = level == lv
        c[sel], A[sel], zncc[sel] = _align_level(image(lv), template[sel], c[sel], A[sel], g, w, conf["iterations"])
    return c, A, zncc


def _align_level(img, template, c, A, g, w, iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gf, wf = g.float(), w.float()
    # Each sample serves the step after it: the starting one the gain, the bias and the first step.
    s = _sample(img, c, A, g)
    val = s[..., 0]
    mean = (val * wf).sum(-1) / wf.sum()
    gain = 1 / torch.sqrt(((val - mean[:, None]) ** 2 * wf).sum(-1) / wf.sum()).clamp(min=1e-6)
    bias = -mean * gain
    eye = torch.eye(8, dtype=torch.float64)
    for _ in range(iterations):
        val, grad = s[..., 0], s[..., 1:]
        r = gain[:, None] * val + bias[:, None] - template                          # (n, P²)
        gg = gain[:, None, None] * grad                                             # (n, P², 2)
        # d xy / d (c, A): c directly, A[i, j] through g_j.
        J = torch.cat([gg, gg[..., :1] * gf, gg[..., 1:] * gf, val[..., None], torch.ones_like(val)[..., None]],
                      -1)                                                           # (n, P², 8)
        Jw = J * wf[None, :, None]
        H = (Jw.transpose(1, 2) @ J).double()
        b = (Jw.transpose(1, 2) @ r[..., None]).double()
        H = H + 1e-3 * torch.diag_embed(torch.diagonal(H, dim1=1, dim2=2)) + 1e-9 * eye
        step = torch.nan_to_num(-torch.linalg.solve(H, b)[..., 0])
        c = c + step[:, :2]
        A = A + torch.stack([step[:, 2:4], step[:, 4:6]], 1)
        gain, bias = gain + step[:, 6].float(), bias + step[:, 7].float()
        s = _sample(img, c, A, g)
    val = s[..., 0]
    zncc = (_znorm(val, wf) * template * wf).sum(-1) / wf.sum()
    return c, A, zncc.double()


def _place(keypoints, offsets, image_of, label, ref_node, ref_frames, node, c, A, e, centre: bool) -> None:
    """Write the aligned keypoints into ``keypoints``. Aligned, each observation sits where its track's
    reference keypoint is (patch coordinate 0); with ``centre``, every aligned observation and the
    reference move together to the mean, in patch coordinates, of where the detector put them (the
    reference at 0), so that the track keeps the detector's average position, which is where a query's
    keypoint of the same point lands on average: one reference's detection noise is not copied to all."""
    track = torch.from_numpy(label[node])
    if centre:
        n = len(ref_node)
        total = torch.zeros(n, 2, dtype=torch.float64).index_add_(0, track, e)
        count = torch.ones(n, dtype=torch.float64).index_add_(0, track, torch.ones(len(node), dtype=torch.float64))
        mean = total / count[:, None]                                   # (tracks, 2), the reference counted at 0
        c = c + (A @ mean[track][..., None])[..., 0]
        moved_ref = torch.unique(track)
        ref_xy = (ref_frames[moved_ref] @ mean[moved_ref][..., None])[..., 0]
        refs = ref_node[moved_ref.numpy()]
        for k, part in enumerate(_by_image(image_of[refs], len(keypoints))):
            keypoints[k][refs[part] - offsets[k]] += ref_xy[torch.from_numpy(part)].numpy().astype(np.float32)
    for k, part in enumerate(_by_image(image_of[node], len(keypoints))):
        keypoints[k][node[part] - offsets[k]] = c[torch.from_numpy(part)].numpy().astype(np.float32)


def _by_image(image: np.ndarray, n: int) -> list[np.ndarray]:
    """Per image 0..n-1, the increasing positions in ``image`` (an image index per item) that are it."""
    order = np.argsort(image, kind="stable")
    bounds = np.searchsorted(image[order], np.arange(n + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n)]


def refine_keypoints(images: Callable[[int], np.ndarray], features: Sequence[Features],
                     matches: dict[tuple[int, int], np.ndarray], conf: dict | None = None,
                     progress: Callable[[], None] | None = None
                     ) -> tuple[list[np.ndarray], RefinementStats]:
    """Each image's keypoints (N, 2) with the observations of every track aligned to their reference's
    patch (the observation with the most matches, then the highest score) and, with ``conf["centre"]``,
    moved together to the mean of their detected positions; unmatched and rejected keypoints unchanged.
    ``images(k)``: image k as (H, W) grey levels, read only where it has track keypoints; ``progress``
    is called once per image in each of the two passes."""
    conf = {**default_conf, **(conf or {})}
    threads = torch.get_num_threads()
    # Many small tensors: one thread is faster, and much faster while other processes hold the cores
    # (OpenMP threads wait on each other: 0.33 s against 10 s for 1000 keypoints on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        return _refine(images, features, matches, conf, progress)
    finally:
        torch.set_num_threads(threads)


def _refine(images, features, matches, conf, progress) -> tuple[list[np.ndarray], RefinementStats]:
    # One read of each image's features here (a build's features wait on disk), one per pass below.
    keypoints, scores = [], []
    for f in features:
        keypoints.append(f.keypoints.astype(np.float32).copy())
        scores.append(f.scores.astype(np.float64))
    counts = [len(kp) for kp in keypoints]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    label = tracks(counts, matches)
    matched = np.flatnonzero(label >= 0)
    if len(matched) == 0:
        return keypoints, RefinementStats(0, 0, 0, 0.0)
    degree = np.zeros(offsets[-1], np.int64)
    for (i, j), m in matches.items():
        np.add.at(degree, offsets[i] + m[:, 0], 1)
        np.add.at(degree, offsets[j] + m[:, 1], 1)
    score = np.concatenate(scores)
    # The reference of each track: most matches, then best score (lexsort: last key first).
    order = matched[np.lexsort((-score[matched], -degree[matched], label[matched]))]
    first = np.ones(len(order), bool)
    first[1:] = label[order[1:]] != label[order[:-1]]
    ref_node = order[first]                      # indexed by track label
    image_of = np.repeat(np.arange(len(counts)), counts)   # per keypoint node, its image
    g, w = patch_grid(conf)
    templates = torch.zeros(len(ref_node), len(g), dtype=torch.float32)   # 0.9 KB a track
    ref_frames = torch.zeros(len(ref_node), 2, 2, dtype=torch.float64)

    refs_of = _by_image(image_of[ref_node], len(features))
    for k in range(len(features)):
        sel = refs_of[k]
        if len(sel) == 0:
            if progress:
                progress()
            continue
        pyr = BlurredImage(images(k))
        c, A, _ = keypoint_frames(features[k], ref_node[sel] - offsets[k])
        templates[torch.from_numpy(sel)] = read_patches(pyr, c, A, g, w)
        ref_frames[torch.from_numpy(sel)] = A
        if progress:
            progress()
    is_ref = np.zeros(offsets[-1], bool)
    is_ref[ref_node] = True
    todo = matched[~is_ref[matched]]
    shifts: list[np.ndarray] = []
    aligned_node: list[np.ndarray] = []
    aligned_c: list[torch.Tensor] = []
    aligned_A: list[torch.Tensor] = []
    aligned_e: list[torch.Tensor] = []
    rejected = 0
    todo_of = _by_image(image_of[todo], len(features))
    for k in range(len(features)):
        sel = todo[todo_of[k]]
        if len(sel) == 0:
            if progress:
                progress()
            continue
        pyr = BlurredImage(images(k))
        idx = sel - offsets[k]
        c0, A, sigma = keypoint_frames(features[k], idx)
        c, A, zncc = align_patches(pyr, templates[torch.from_numpy(label[sel])], c0, A, g, w, conf)
        shift = torch.linalg.norm(c - c0, dim=1)
        ok = (zncc >= conf["min_correlation"]) & (shift <= conf["max_shift"] * sigma) & torch.isfinite(c).all(1)
        ok &= torch.isfinite(A).all(2).all(1) & (torch.abs(torch.linalg.det(A)) > 1e-9)
        ok_np = ok.numpy()
        aligned_node.append(sel[ok_np])
        aligned_c.append(c[ok])
        aligned_A.append(A[ok])
        # Where the detector put it, in the reference patch's coordinates.
        aligned_e.append(torch.linalg.solve(A[ok], (c0[ok] - c[ok])[..., None])[..., 0])
        shifts.append(shift[ok].numpy())
        rejected += int((~ok).sum())
        if progress:
            progress()
    if aligned_node:
        _place(keypoints, offsets, image_of, label, ref_node, ref_frames, np.concatenate(aligned_node),
               torch.cat(aligned_c), torch.cat(aligned_A), torch.cat(aligned_e), conf["centre"])
    moved = np.concatenate(shifts) if shifts else np.zeros(0)
    return keypoints, RefinementStats(len(matched), len(moved), rejected,
                                      float(np.median(moved)) if len(moved) else 0.0)
