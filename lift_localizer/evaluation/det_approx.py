"""Measure the cheaper DET convolutions against the dense one (nets/det_separable.py).

    python tools/det_approx.py [--image PATH] [--repeat 3] [--weights STEM ...]

At 640×480 over the paper's 21 levels (``--preset``):

* **Time** of the whole DET stage (convolution + GHH on every level, inputs already resized) for the
  dense 25×25 convolution (today's DET), the dense convolution over the distinct filters only,
  separable forms of 1…8 terms per distinct filter (opencv engine; the torch engine at rank 1),
  and FFT. Variants run interleaved (A, B, C, A, B, C, …) and the report gives medians and the ratio
  to dense, so that load from other processes hits every variant alike. Time depends on the number
  of distinct filters and of terms, not on the filters' values.
* **Accuracy** per filter set and rank on the image: the score map's largest error as a fraction of
  its range (worst level), and the fraction of the exact top-1000 keypoints that the approximation
  also finds within 0.5 px (and, second number, at the same scale within 10 %). Filter sets: the
  shipped weights, each ``--weights`` stem, and perturbed or random banks with 16 distinct filters,
  which is what trained weights look like unless training keeps copies.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch

from ..nets.det import DET, NUM_MAX, NUM_SUM
from ..nets.det_separable import (
    FastDET,
    FftResponses,
    GhhPlan,
    choose_rank,
    dense_responses,
    filter2d_responses,
    merge_duplicates,
    rank_errors,
    separable_factors,
    separable_responses_opencv,
    separable_responses_torch,
)
from ..nets.layers import ghh
from ..features.lift import Lift
from ..nets.scale_space import make_levels, resize_level


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float = 2.0, k: int = 25) -> torch.Tensor:
    """(n, k, k) white noise blurred by a Gaussian of ``sigma`` px, zero mean, unit Frobenius norm."""
    out = []
    for _ in range(n):
        f = cv2.GaussianBlur(rng.normal(size=(k, k)).astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        f -= f.mean()
        out.append(f / np.linalg.norm(f))
    return torch.from_numpy(np.stack(out))


def filter_sets(shipped: DET, extra: dict[str, DET], seed: int = 0) -> dict[str, DET]:
    """Named DET modules: the shipped weights, the extra ones, and perturbed or random banks."""
    rng = np.random.default_rng(seed)
    sets = {"shipped": shipped, **extra}
    w, b = shipped.conv.weight.detach()[:, 0], shipped.conv.bias.detach()
    scale = float(w.flatten(1).norm(dim=1).max())

    def make(weight: torch.Tensor, bias: torch.Tensor) -> DET:
        d = DET()
        with torch.no_grad():
            d.conv.weight.copy_(weight[:, None].float())
            d.conv.bias.copy_(bias.float())
        return d.eval()

    # Every filter perturbed by smooth noise of 10 % and 30 % of the largest filter's norm: 16 distinct.
    for frac in (0.1, 0.3):
        sets[f"shipped+{int(frac * 100)}% smooth noise"] = make(w + frac * scale * _smooth_noise(rng, len(w)), b)
    # Bank with no structure: 16 smooth random filters (sigma 2 px) and 1.5 px (rougher).
    for sigma in (2.0, 1.5):
        sets[f"random smooth (sigma {sigma:g} px)"] = make(scale * _smooth_noise(rng, len(w), sigma), torch.zeros(len(w)))
    for name, det in list(extra.items()):
        we, be = det.conv.weight.detach()[:, 0], det.conv.bias.detach()
        s = float(we.flatten(1).norm(dim=1).max())
        sets[f"{name}+10% smooth noise"] = make(we + 0.1 * s * _smooth_noise(rng, len(we)), be)
    return sets


def level_inputs(gray: np.ndarray, networks, levels_conf: dict) -> tuple[list, list[torch.Tensor]]:
    """The levels for the image's size, and the normalised, resized level images."""
    h, w = gray.shape
    lift = Lift({"backend": "torch", "det_conv": None, **levels_conf}, networks=networks)
    levels = make_levels(h, w, lift.scales_for(h, w), min_size=27)
    image = (torch.from_numpy(gray)[None, None] - networks["det"].mean) / networks["det"].std
    return levels, [resize_level(image, lv) for lv in levels]


def time_variants(inputs: list[torch.Tensor], variants: dict, repeat: int) -> dict[str, float]:
    """Median seconds of running each variant over every level, interleaved."""
    with torch.inference_mode():
        for fn in variants.values():
            for x in inputs:
                fn(x)
        runs: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeat):
            for name, fn in variants.items():
                t = time.perf_counter()
                for x in inputs:
                    fn(x)
                runs[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in runs.items()}


def _random_bank(distinct: int, seed: int = 0) -> DET:
    """DET whose 16 filters are ``distinct`` random ones repeated (timing depends only on the count)."""
    g = torch.Generator().manual_seed(seed)
    d = DET()
    with torch.no_grad():
        base = torch.randn(distinct, 25, 25, generator=g)
        d.conv.weight.copy_(base[torch.arange(16) % distinct][:, None])
        d.conv.bias.zero_()
    return d.eval()


def timing_table(inputs: list[torch.Tensor], distinct_counts: list[int], ranks: list[int], repeat: int) -> list[dict]:
    """Every route on banks of 16 filters holding ``distinct`` random filters (repeated)."""
    variants = {"dense (today)": _random_bank(16)}
    for u in distinct_counts:
        det = _random_bank(u)
        bank = merge_duplicates(det.conv.weight, det.conv.bias)
        plan = GhhPlan(bank, NUM_SUM, NUM_MAX)
        variants[f"{u} distinct: dense + GHH plan"] = lambda x, b=bank, p=plan: p(dense_responses(x, b))
        variants[f"{u} distinct: filter2D + GHH plan"] = lambda x, b=bank, p=plan: p(filter2d_responses(x, b))
        fft = FftResponses(bank)
        variants[f"{u} distinct: fft + GHH plan"] = lambda x, f=fft, p=plan: p(f(x))
        for r in ranks:
            sep = separable_factors(bank, r)
            variants[f"{u} distinct: separable {sep.terms} terms (opencv)"] = \
                lambda x, s=sep, p=plan: p(separable_responses_opencv(x, s))
        sep = separable_factors(bank, 1)
        variants[f"{u} distinct: separable {sep.terms} terms (torch)"] = \
            lambda x, s=sep, p=plan: p(separable_responses_torch(x, s))
    seconds = time_variants(inputs, variants, repeat)
    base = seconds["dense (today)"]
    return [{"variant": k, "ms": 1000 * v, "ratio_to_dense": v / base} for k, v in seconds.items()]


def set_timing(inputs: list[torch.Tensor], sets: dict[str, DET], tolerance: float, repeat: int,
               probes: list[torch.Tensor]) -> list[dict]:
    """Per filter set, interleaved: today's DET, FastDET exact, FastDET separable at ``tolerance`` (as
    chosen, which may be exact), and the separable form forced at the smallest rank within tolerance."""
    variants, notes = {}, {}
    for name, det in sets.items():
        variants[f"{name} | dense (today)"] = det
        exact = FastDET(det, "exact")
        variants[f"{name} | exact"] = exact
        notes[f"{name} | exact"] = exact.describe()
        sep = FastDET(det, "separable", tolerance, probes=probes)
        if not sep.exact:
            variants[f"{name} | separable {tolerance:g}"] = sep
            notes[f"{name} | separable {tolerance:g}"] = sep.describe()
        rank, err = choose_rank(det.conv.weight, det.conv.bias, tolerance, probes, 12)
        if rank is not None and (sep.exact or rank != sep.rank):
            forced = FastDET(det, rank=rank)
            variants[f"{name} | separable rank {rank} forced"] = forced
            notes[f"{name} | separable rank {rank} forced"] = f"{forced.separable.terms} terms, probe error {err:.2g}"
    seconds = time_variants(inputs, variants, repeat)
    rows = []
    for k, v in seconds.items():
        name = k.split(" | ")[0]
        rows.append({"variant": k, "ms": 1000 * v, "ratio_to_dense": v / seconds[f"{name} | dense (today)"],
                     "note": notes.get(k, "")})
    return rows


def _keypoints(lift: Lift, det_module, image: torch.Tensor):
    lift.backend.det_net = det_module
    found = lift.detect(image, {})
    return found.xy, found.scale


def agreement(xy_a, s_a, xy_b, s_b, radius: float = 0.5, scale_tol: float = 0.1) -> tuple[float, float]:
    """Fraction of keypoints a with a keypoint b within ``radius`` px (and, second, also at a scale within
    ``scale_tol``)."""
    if len(xy_a) == 0:
        return 1.0, 1.0
    if len(xy_b) == 0:
        return 0.0, 0.0
    d = torch.cdist(torch.from_numpy(xy_a).double(), torch.from_numpy(xy_b).double())
    near = d <= radius
    ratio = torch.from_numpy(s_a).double()[:, None] / torch.from_numpy(s_b).double()[None]
    same = near & ((ratio - 1).abs() <= scale_tol)
    return float(near.any(1).double().mean()), float(same.any(1).double().mean())


def accuracy_table(gray: np.ndarray, sets: dict[str, DET], ranks: list[int], inputs: list[torch.Tensor],
                   max_keypoints: int, tolerances: list[float], networks, probes: list[torch.Tensor],
                   levels_conf: dict) -> list[dict]:
    """Per filter set and rank: score-map error on the image's levels and on the probes, keypoint agreement."""
    lift = Lift({"backend": "torch", "det_conv": None, "max_keypoints": max_keypoints, "score_threshold": -1e30,
                 **levels_conf}, networks=networks)
    image = torch.from_numpy(gray)[None, None]
    rows = []
    for name, det in sets.items():
        w, b = det.conv.weight.detach(), det.conv.bias.detach()
        distinct = len(merge_duplicates(w, b).unique)
        xy0, s0 = _keypoints(lift, det, image)
        with torch.inference_mode():
            exact = [ghh(det.conv(x), NUM_SUM, NUM_MAX) for x in inputs]
        probe_err = rank_errors(w, b, probes, ranks)
        chosen = {t: FastDET(det, tolerance=t, probes=probes).describe() for t in tolerances}
        for r in ranks:
            fast = FastDET(det, rank=r)
            with torch.inference_mode():
                err = 0.0
                for x, e in zip(inputs, exact):
                    a = fast(x)
                    err = max(err, float((a - e).abs().max() / (e.max() - e.min())))
            xy, s = _keypoints(lift, fast, image)
            pos, both = agreement(xy0, s0, xy, s)
            rows.append({"set": name, "distinct": distinct, "rank": r, "terms": fast.separable.terms,
                         "score_error": err, "probe_error": probe_err[r], "kp_within_0.5px": pos,
                         "kp_within_0.5px_same_scale": both, "keypoints": len(xy0)})
        fft = FastDET(det, mode="fft")
        with torch.inference_mode():
            ferr = max(float((fft(x) - e).abs().max() / (e.max() - e.min())) for x, e in zip(inputs, exact))
        dense = FastDET(det, mode="exact")
        with torch.inference_mode():
            derr = max(float((dense(x) - e).abs().max() / (e.max() - e.min())) for x, e in zip(inputs, exact))
        rows.append({"set": name, "distinct": distinct, "rank": "exact", "terms": None, "score_error": derr,
                     "probe_error": None, "kp_within_0.5px": agreement(xy0, s0, *_keypoints(lift, dense, image))[0],
                     "kp_within_0.5px_same_scale": None, "keypoints": len(xy0)})
        rows.append({"set": name, "distinct": distinct, "rank": "fft", "terms": None, "score_error": ferr,
                     "probe_error": None, "kp_within_0.5px": agreement(xy0, s0, *_keypoints(lift, fft, image))[0],
                     "kp_within_0.5px_same_scale": None, "keypoints": len(xy0), "chosen": chosen})
    return rows


def load_gray(path: str | None, size=(640, 480)) -> np.ndarray:
    if path:
        img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise SystemExit(f"cannot read {path}")
    else:
        from ..synthetic import demo_views, make_texture

        img = demo_views(make_texture(), image_size=(size[1], size[0]))[0].image.astype(np.uint8)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.float32)
