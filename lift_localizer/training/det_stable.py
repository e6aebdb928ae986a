"""DET by TILDE's principle (Verdie et al., CVPR 2015): a good detector fires again at the same points
when the light changes, so rank the points that survive illumination changes above those that do not.

    lift-localizer train det-stable --output STEM [--images DIR ...] [--webcam DIR ...] [--validation DIR]

Data: *illumination stacks*, images of one view under many lights. A synthetic stack is one training
image and ``variants - 1`` photometric changes of it (a smooth gain field for shadows and light pools,
gamma, dusk/night gain, blur, noise; pixel-aligned, so no geometry is needed); a webcam stack is a fixed
camera's images (TILDE's data; registered by ``data.load_webcam``). The current DET finds its keypoints
in every image of a stack; a keypoint found again (within ``repeat_px`` in position and 0.3 octave in
scale) in at least ``stable`` of the other images is *stable*, one found in at most ``unstable`` of them
is *unstable*. The stable points, placed in every image of the stack (also where DET missed them: dark
or noisy ones), are the positives; each image's unstable keypoints its negatives.

Loss, per image, on DET's score maps over the scale space as inference computes them (each point read
bilinearly on the level of its scale): a pairwise ranking term softplus((s_neg - s_pos) / T) over
random positive/negative pairs, T a fraction of the image's median positive score (so dark and bright
images weigh the same: DET's scores scale with contrast); a peak term that keeps every positive above
its neighbours ``peak_px`` away (keypoints stay where NMS finds them); and the squared distance to the
initial weights relative to their norm. Weights are averaged (EMA) and the average is selected by
repeatability on a validation webcam never trained on.

Why not the paper's DET loss (train_lift): on our data it never beat the analytic |LoG| start on the
held-out Webcam scenes; this objective does, through a small learned response to local brightness
(docs/training.md).
"""
from __future__ import annotations

import copy
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..nets.det import FILTER_SIZE, NUM_MAX, analytic_init
from ..images import read_image
from ..features.keypoints import Detections
from ..features.lift import Lift
from ..nets.scale_space import Level, make_levels, resize_level
from ..weights import LoadedNetwork, load_network, save_network
from .checkpoint import load_checkpoint, save_checkpoint
from ..evaluation.features import repeatability as pair_repeatability
from .options import DataError, merge_options
from .options import default_conf as data_conf
from .scenes import list_images
from .webcams import load_webcam
from .det_stable_conf import default_conf


@dataclass
class Stack:
    """Images of one view under several lights and the points to rank there.

    images: (H, W) float32 grey each; offsets (n, 2): image i pixel = reference pixel + offsets[i];
    stable (P, 3): reference x, y, 8 log2 scale; unstable[i] (N_i, 3): image i's unstable keypoints."""

    name: str
    images: list[np.ndarray]
    offsets: np.ndarray
    stable: np.ndarray
    unstable: list[np.ndarray]


def illumination_variant(gray: np.ndarray, rng: np.random.Generator, conf: dict) -> np.ndarray:
    """(H, W) grey in [0, 255] → the same view under another light (pixel-aligned), float32."""
    h, w = gray.shape
    x = gray.astype(np.float32) / 255.0
    field = cv2.resize(rng.normal(size=(4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    x = x * np.exp(rng.uniform(0, conf["gain_field"]) * field)
    x = np.clip(x, 0, None) ** np.exp(rng.uniform(*np.log(conf["gamma"])))
    x = x * rng.uniform(*conf["gain"]) + rng.uniform(-conf["offset"], conf["offset"])
    x = x * 255.0
    if rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*conf["blur"]))
    x = x + rng.normal(0, rng.uniform(*conf["noise"]), x.shape)
    return np.clip(x, 0, 255).astype(np.float32)


def _points(found: Detections, offset: np.ndarray) -> np.ndarray:
    return np.c_[found.xy - offset, 8.0 * np.log2(found.scale)].astype(np.float64)


def repeat_counts(points: list[np.ndarray], radius: float) -> list[np.ndarray]:
    """Per image, the fraction of the other images with a keypoint within ``radius`` of each of its
    keypoints; points (N_i, 3) in the stack's reference frame."""
    out = []
    for i, p in enumerate(points):
        c = np.zeros(len(p))
        for j, q in enumerate(points):
            if j != i and len(p) and len(q):
                d2 = ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)
                c += d2.min(1) < radius ** 2
        out.append(c / max(len(points) - 1, 1))
    return out


def stable_and_unstable(points: list[np.ndarray], conf: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """The stack's stable points (most repeated first, merged within suppress_px) and each image's
    unstable keypoints; points as in ``repeat_counts``."""
    counts = repeat_counts(points, conf["repeat_px"])
    allp = np.concatenate(points) if points else np.zeros((0, 3))
    allc = np.concatenate(counts) if counts else np.zeros(0)
    taken = np.zeros(len(allp), bool)
    stable = []
    for k in np.argsort(-allc, kind="stable"):
        if allc[k] < conf["stable"]:
            break
        if taken[k]:
            continue
        stable.append(allp[k])
        taken |= np.linalg.norm(allp[:, :2] - allp[k, :2], axis=1) < conf["suppress_px"]
    unstable = [p[c <= conf["unstable"]] for p, c in zip(points, counts)]
    return np.array(stable).reshape(-1, 3), unstable


def make_stack(name: str, images: list[np.ndarray], offsets: np.ndarray, detect, conf: dict) -> Stack:
    points = [_points(detect(im), off) for im, off in zip(images, offsets)]
    stable, unstable = stable_and_unstable(points, conf)
    return Stack(name, images, np.asarray(offsets, np.float64), stable, unstable)


def shrink(gray: np.ndarray, max_side: int) -> np.ndarray:
    s = max_side / max(gray.shape)
    return cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else gray


def webcam_images(folder: Path, log=print) -> tuple[list[np.ndarray], np.ndarray]:
    """A fixed camera's distinct images, registered (offsets as in ``Stack``)."""
    scene = load_webcam(folder.name, folder, data_conf, log)
    return [ld().astype(np.float32) for ld in scene.loaders], np.asarray(scene.offsets, np.float64)


class LevelSampler:
    """Scores of DET's maps over the scale space at points (x, y, 8 log2 s) of one image, each read on
    the level of the nearest scale, differentiably."""

    def __init__(self, levels: list[Level]) -> None:
        self.levels = levels
        self.log_scales = np.log2([lv.scale for lv in levels])

    def __call__(self, maps: list[torch.Tensor], points: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> torch.Tensor:
        if not len(points):
            return torch.zeros(0)
        nearest = np.abs(self.log_scales[None] - points[:, 2:3] / 8.0).argmin(1)
        out = torch.zeros(len(points), dtype=maps[0].dtype)
        margin = FILTER_SIZE // 2
        for li in np.unique(nearest):
            rows = np.nonzero(nearest == li)[0]
            lv, score = self.levels[li], maps[li]
            u = (points[rows, 0] + 0.5) * lv.ratio_x - 0.5 - margin + dx
            v = (points[rows, 1] + 0.5) * lv.ratio_y - 0.5 - margin + dy
            h, w = score.shape[-2:]
            grid = torch.from_numpy(np.stack([(2 * u + 1) / w - 1, (2 * v + 1) / h - 1], -1)).to(score.dtype)
            out = out.index_put((torch.from_numpy(rows),), F.grid_sample(
                score, grid.view(1, 1, -1, 2), align_corners=False, padding_mode="border")[0, 0, 0])
        return out


def rank_loss(positive: torch.Tensor, negative: torch.Tensor, temperature: float, pairs: int,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean softplus((s_neg - s_pos) / T) over ``pairs`` random (positive, negative) pairs: (P,), (N,) → ()."""
    a = torch.randint(len(positive), (pairs,), generator=generator)
    b = torch.randint(len(negative), (pairs,), generator=generator)
    return F.softplus((negative[b] - positive[a]) / temperature).mean()


def peak_loss(centre: torch.Tensor, neighbours: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Mean softplus((s_neighbour - s_centre) / T): each (P,) → ()."""
    return torch.stack([F.softplus((n - centre) / temperature).mean() for n in neighbours]).mean()


def weight_distance(module: torch.nn.Module, initial: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ||W - W0||² / ||W0||² over the weight tensors (not biases)."""
    return sum(((p - initial[k]) ** 2).sum() / (initial[k] ** 2).sum().clamp_min(1e-12)
               for k, p in module.named_parameters() if k.endswith("weight"))


def _detector(nets: dict[str, LoadedNetwork], keypoints: int):
    lift = Lift({"max_keypoints": keypoints, "det_conv": None, "score_threshold": -1e30}, networks=nets)

    @torch.no_grad()
    def detect(gray: np.ndarray) -> Detections:
        return lift.detect(torch.from_numpy(np.ascontiguousarray(gray, np.float32))[None, None], {})
    return detect


def repeatability(detect, images: list[np.ndarray], offsets: np.ndarray, threshold: float = 5.0) -> float:
    """evaluate-features' Webcam repeatability, over all pairs of registered images."""
    pts = [detect(im).xy - off for im, off in zip(images, offsets)]
    return float(np.mean([pair_repeatability(pts[a], pts[b], threshold)
                          for a, b in itertools.combinations(range(len(pts)), 2)]))


def train_det_stable(images: list[Path], output: str | Path, conf: dict | None = None, webcams: list[Path] = (),
                     validation: Path | None = None, init: str = "det", checkpoint: Path | None = None,
                     resume: bool = False, log=print) -> dict:
    """Train DET on illumination stacks of ``images`` (one synthetic stack each) and ``webcams`` (one real
    stack each); select the weight average by repeatability on the ``validation`` webcam (else keep the
    last); save ``output``.safetensors + card. Returns the card."""
    conf = merge_options(default_conf, conf or {}, "det-stable")
    if not images and not webcams:
        raise DataError("no training images: give --images and/or --webcam")
    torch.manual_seed(conf["seed"])
    rng = np.random.default_rng(conf["seed"])
    gen = torch.Generator().manual_seed(conf["seed"])
    start = load_network("det", init)
    det = copy.deepcopy(start.module)
    if conf["init_sigma"] is not None:
        analytic_init(det, float(conf["init_sigma"]))
    others = {k: load_network(k, k) for k in ("ori", "desc")}   # not used by DET's scores; Lift needs them

    def nets_of(module: torch.nn.Module) -> dict[str, LoadedNetwork]:
        return {"det": LoadedNetwork("det", module, start.card, start.path), **others}

    t0 = time.perf_counter()
    detect0 = _detector(nets_of(det), conf["keypoints"])
    scales_for = Lift({"det_conv": None}, networks=nets_of(det)).scales_for
    stacks: list[Stack] = []
    for path in tqdm(images, desc="synthetic illumination stacks", unit="image", file=sys.stderr, disable=None):
        gray = shrink(read_image(path).astype(np.float32), conf["max_side"])
        ims = [gray] + [illumination_variant(gray, rng, conf["photometric"]) for _ in range(conf["variants"] - 1)]
        stacks.append(make_stack(path.name, ims, np.zeros((len(ims), 2)), detect0, conf))
    for folder in webcams:
        ims, offsets = webcam_images(Path(folder), log)
        stacks.append(make_stack(Path(folder).name, ims, offsets, detect0, conf))
    usable = [(s, i) for s in stacks for i in range(len(s.images)) if len(s.stable) >= 10 and len(s.unstable[i]) >= 10]
    if not usable:
        raise DataError("no image has 10 stable and 10 unstable keypoints; give more or more varied images")
    log(f"det-stable: {len(stacks)} stacks, {len(usable)} training images, "
        f"{np.mean([len(s.stable) for s in stacks]):.0f} stable points per stack, "
        f"{np.mean([len(u) for s in stacks for u in s.unstable]):.0f} unstable keypoints per image "
        f"({time.perf_counter() - t0:.0f} s)")

    val = None
    if validation is not None:
        ims, offsets = webcam_images(Path(validation), log)
        pick = np.unique(np.linspace(0, len(ims) - 1, min(conf["validation_images"], len(ims))).round().astype(int))
        val = ([ims[i] for i in pick], offsets[pick])

    def validate(module: torch.nn.Module) -> float | None:
        return None if val is None else round(repeatability(_detector(nets_of(module), conf["keypoints"]), *val), 4)

    initial = {k: v.detach().clone() for k, v in det.state_dict().items()}
    ema = copy.deepcopy(det)
    scale = float(det.conv.weight.detach().abs().max())
    opt = torch.optim.Adam(det.parameters(), lr=conf["lr"] * scale)
    history: list[dict] = []
    epoch0 = 0
    if resume:
        if checkpoint is None:
            raise ValueError("resume needs a checkpoint")
        epoch0, history = load_checkpoint(checkpoint, det, opt)
        ema.load_state_dict(det.state_dict())
    best = {"val_repeatability": validate(ema), "step": epoch0 * len(usable), "state": copy.deepcopy(ema.state_dict())}
    init_rep = best["val_repeatability"] if not resume else None
    log(f"det-stable: validation repeatability at the start {best['val_repeatability']}")
    mean, std = start.mean, start.std
    keep = slice(NUM_MAX, None) if conf["first_group_only"] else slice(0, 0)
    step = epoch0 * len(usable)
    for epoch in range(epoch0, conf["epochs"]):
        order = rng.permutation(len(usable))
        bar = tqdm(order, desc=f"train det-stable {epoch + 1}/{conf['epochs']}", unit="image", file=sys.stderr,
                   disable=None)
        terms = []
        for k in bar:
            s, i = usable[k]
            gray = s.images[i]
            levels = make_levels(*gray.shape, scales_for(*gray.shape), min_size=FILTER_SIZE + 2)
            sample = LevelSampler(levels)
            x = (torch.from_numpy(gray)[None, None] - mean) / std
            maps = [det(resize_level(x, lv)) for lv in levels]
            positives = s.stable + np.r_[s.offsets[i], 0.0]
            unstable = s.unstable[i] + np.r_[s.offsets[i], 0.0]
            sp, sn = sample(maps, positives), sample(maps, unstable)
            temperature = float(sp.detach().abs().median()) * conf["temperature"] + 1e-12
            rank = rank_loss(sp, sn, temperature, conf["pairs"], gen)
            d = conf["peak_px"]
            peak = peak_loss(sp, [sample(maps, positives, dx, dy) for dx, dy in ((d, 0), (-d, 0), (0, d), (0, -d))],
                             temperature)
            reg = weight_distance(det, initial)
            loss = rank + conf["peak_weight"] * peak + conf["reg"] * reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                det.conv.weight[keep] = initial["conv.weight"][keep]
                det.conv.bias[keep] = initial["conv.bias"][keep]
                if conf["zero_mean"]:
                    det.conv.weight -= det.conv.weight.mean(dim=(1, 2, 3), keepdim=True)
                    det.conv.bias.zero_()
                for pe, pd in zip(ema.parameters(), det.parameters()):
                    pe.mul_(conf["ema"]).add_((1 - conf["ema"]) * pd)
            step += 1
            terms.append([float(rank.detach()), float(peak.detach()), float(reg.detach())])
            bar.set_postfix(rank=f"{np.mean([t[0] for t in terms[-20:]]):.3f}")
            if val is not None and step % conf["validate_every"] == 0:
                r = validate(ema)
                history.append({"step": step, "rank": round(float(np.mean([t[0] for t in terms[-conf['validate_every']:]])), 4),
                                "val_repeatability": r})
                if r > best["val_repeatability"]:
                    best = {"val_repeatability": r, "step": step, "state": copy.deepcopy(ema.state_dict())}
        t = np.mean(terms, 0)
        history.append({"epoch": epoch + 1, "rank": round(float(t[0]), 4), "peak": round(float(t[1]), 4),
                        "reg": round(float(t[2]), 5)})
        log(f"det-stable epoch {epoch + 1}: " + json.dumps(history[-1]))
        if checkpoint is not None:
            save_checkpoint(checkpoint, det, opt, epoch + 1, history)
    if val is None:
        best = {"val_repeatability": None, "step": step, "state": ema.state_dict()}
    elif step % conf["validate_every"] != 0:
        # The final average is a candidate too: without this a run shorter than one validation
        # interval would save the start as its result.
        r = validate(ema)
        history.append({"step": step, "val_repeatability": r})
        if r > best["val_repeatability"]:
            best = {"val_repeatability": r, "step": step, "state": copy.deepcopy(ema.state_dict())}
    ema.load_state_dict(best["state"])
    card = {
        "trained": True,
        "input": dict(start.card["input"]),
        "score_threshold": start.card.get("score_threshold", 0.0),
        "training": {"phase": "det-stable", "objective": "TILDE-style ranking of illumination-stable keypoints "
                     "(training/det_stable.py)", **conf,
                     "init": f"analytic |LoG|, sigma {conf['init_sigma']} x the keypoint scale" if conf["init_sigma"] else init,
                     "selected_step": best["step"], "steps": step, "log": history,
                     "seconds": round(time.perf_counter() - t0)},
        "data": {"images": [str(p) for p in images], "webcams": [str(w) for w in webcams],
                 "stacks": len(stacks), "training_images": len(usable)},
        "split": "lift_localizer/training/splits.json (lift)",
        "quality": {"validation": str(validation) if validation else None,
                    "val_repeatability_init": init_rep, "val_repeatability": best["val_repeatability"]},
        "seed": conf["seed"],
    }
    save_network("det", ema, output, card)
    log(f"det-stable: wrote {output}.safetensors (validation repeatability {init_rep} → {best['val_repeatability']}, "
        f"step {best['step']} of {step})")
    return card


def split_images(data_root: Path, split_file: Path | None = None) -> tuple[list[Path], Path | None]:
    """The split's training photo collections (their images) and its training webcam (the validation)."""
    from .options import SPLIT_SECTION
    from .options import default_conf as dconf
    from .splits import classify, read_split

    split = read_split(split_file or dconf["split_file"], SPLIT_SECTION)
    images, webcam = [], None
    for path in split["train"]:
        entry = classify(path)
        folder = data_root / path
        if entry.kind == "collection" and folder.is_dir():
            images += list_images(folder)
        elif entry.kind == "webcam" and folder.is_dir() and webcam is None:
            webcam = folder
    return images, webcam
