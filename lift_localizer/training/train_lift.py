"""Train LIFT's networks in the paper's order: DESC first, then ORI with DESC fixed (DET next).

    lift-localizer train desc --data DATA.h5 --output STEM [--epochs E] [--no-hard-negatives]
    lift-localizer train ori  --data DATA.h5 --output STEM --desc DESC_STEM

DATA.h5 is made by ``python -m lift_localizer.training.data`` (training/data.py): quadruplets of
upright 128×128 patches covering twice the descriptor support, with the SfM keypoint angles.
DESC sees each patch's centre rotated by its SfM angle; ORI sees the upright centre, predicts an
angle, and DESC (fixed) sees the centre rotated by it — the loss pulls the two views of a point
together, so ORI learns angles that DESC can match (Yi et al. 2016, §4).

Every phase: fixed seed, tqdm, a checkpoint after every epoch (safetensors + JSON, ``--resume``),
a loss log, 5 % of the quadruplets held out for validation, and weights + card at the end.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..weights import LoadedNetwork, load_network, save_network
from .checkpoint import load_checkpoint, save_checkpoint
from .det_phase import (
    SOURCE,
    det_loss,
    det_terms,
    det_validation,
    keypoint_descriptors,
    patch_centres,
)

PATCH = 64

default_conf = {
    "epochs": 3,
    "batch_size": 64,
    "lr": 1e-3,
    "margin": None,               # desc_loss margin C; None: the loss's default
    "hard_negatives": True,
    # DESC on upright patches (angles ignored), for a pipeline whose ORI is untrained or turned off.
    "upright": False,
    # ORI only: epochs of regressing the SfM keypoints' SIFT angles before the paper's pair loss
    # (see losses.angle_regression_loss for why); they come before ``epochs`` of the pair loss.
    "pretrain_epochs": 0,
    # DET only: γ of γ · L_class + L_pair, and the inverse temperatures of its soft maximum and
    # softargmax (losses.py explains the defaults).
    "class_weight": 10.0,
    "softmax_beta": None,
    "softargmax_beta": None,
    "val_fraction": 0.05,
    "chunk": 4096,                # quadruplets read from the file at a time (shuffled within)
    "max_samples": None,          # use at most this many training quadruplets (time budget)
    "sources": None,              # train only on these sources of the file ("webcam:mexico"; None: all)
    "seed": 0,
    "threads": None,
}


def centre_crops(big: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
    """(B, 1, 128, 128) patches → (B, 1, 64, 64): the descriptor support at the centre, rotated by
    ``angles`` (B,) radians or upright. Differentiable in ``angles`` (the ORI phase needs it)."""
    from .losses import crop_at

    b = big.shape[0]
    return crop_at(big, patch_centres(b).to(big.dtype), torch.full((b,), float(SOURCE // 2), dtype=big.dtype),
                   angles, PATCH)


class Quadruplets:
    """Lazy access to DATA.h5: chunks of consecutive quadruplets, shuffled within."""

    def __init__(self, path: str | Path, conf: dict) -> None:
        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "r")
            n = len(self.file["p1"])
            for k in ("p2", "p3", "angle1", "angle2", "angle3"):
                if len(self.file[k]) != n:
                    raise ValueError(f"{k} has {len(self.file[k])} rows, p1 has {n}")
            if self.file["p1"].shape[1:] != (SOURCE, SOURCE):
                raise ValueError(f"patches are {self.file['p1'].shape[1:]}, expected {SOURCE}×{SOURCE}")
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{self.path}: not a LIFT training file ({e}); build one with "
                             f"`python -m lift_localizer.training.data`") from None
        self.sources = self.file.attrs.get("sources", "[]")
        rng = np.random.default_rng(conf["seed"])
        # Validation: a fixed random 5 %, the same whatever the chunking.
        is_val = rng.random(n) < conf["val_fraction"]
        self.val = np.flatnonzero(is_val)[:2048]
        self.train = np.flatnonzero(~is_val)
        if conf["sources"]:
            names = json.loads(self.sources)
            unknown = sorted(set(conf["sources"]) - set(names))
            if unknown:
                raise ValueError(f"{self.path}: no source {', '.join(unknown)} (it has {', '.join(names)})")
            wanted = [names.index(s) for s in conf["sources"]]
            # A file of one source may leave out the per-row index.
            source = self.file["source"][:] if "source" in self.file else np.zeros(n, np.int16)
            self.train = self.train[np.isin(source[self.train], wanted)]
        if conf["max_samples"]:
            self.train = self.train[: int(conf["max_samples"])]

    def batch(self, idx: np.ndarray, keys=("p1", "p2", "p3")) -> dict[str, torch.Tensor]:
        idx = np.sort(idx)
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        # h5py's point selection is ~10× slower than reading the covering slice and indexing in memory.
        if hi - lo <= 2 * len(idx):
            def read(k):
                return self.file[k][lo:hi][idx - lo]
        else:
            def read(k):
                return self.file[k][idx]
        out = {k: torch.from_numpy(read(k).astype(np.float32))[:, None] for k in keys}
        for k in ("angle1", "angle2", "angle3"):
            out[k] = torch.from_numpy(read(k).astype(np.float32))
        return out

    def epoch(self, rng: np.random.Generator, batch_size: int, chunk: int, keys=("p1", "p2", "p3")):
        starts = rng.permutation(np.arange(0, len(self.train), chunk))
        for s in starts:
            block = self.train[s:s + chunk]
            cached = self.batch(block, keys)
            order = rng.permutation(len(block))
            for b in range(0, len(block) - batch_size + 1, batch_size):
                sel = torch.from_numpy(order[b:b + batch_size])
                yield {k: v[sel] for k, v in cached.items()}


# Patches each phase reads: P4 (no keypoint) only for DET's classification term.
PATCH_KEYS = {"desc": ("p1", "p2", "p3"), "ori": ("p1", "p2", "p3"), "det": ("p1", "p2", "p3", "p4")}


def _normalise(patches: torch.Tensor, net: LoadedNetwork) -> torch.Tensor:
    return (patches - net.mean) / net.std


def desc_step(desc: LoadedNetwork, batch: dict, conf: dict) -> torch.Tensor:
    from .losses import desc_loss

    d = [desc.module(_normalise(centre_crops(batch[f"p{k}"], None if conf["upright"] else batch[f"angle{k}"]), desc))
         for k in (1, 2, 3)]
    kwargs = {"hard_negatives": conf["hard_negatives"]}
    if conf["margin"] is not None:
        kwargs["margin"] = conf["margin"]
    return desc_loss(*d, **kwargs)


def _oriented_views(nets: dict[str, LoadedNetwork], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """ORI's angles and DESC's descriptors of P1's and P2's SfM points (the patch centres), P1 rows first."""
    both = torch.cat([batch["p1"], batch["p2"]])
    return keypoint_descriptors(nets, both, patch_centres(len(both)))


def ori_step(nets: dict[str, LoadedNetwork], batch: dict) -> torch.Tensor:
    from .losses import pair_distance_loss

    _, d = _oriented_views(nets, batch)
    b = len(d) // 2
    return pair_distance_loss(d[:b], d[b:])


def ori_pretrain_step(ori: LoadedNetwork, batch: dict) -> torch.Tensor:
    from .losses import angle_regression_loss

    patches = torch.cat([batch["p1"], batch["p2"]])
    target = torch.cat([batch["angle1"], batch["angle2"]])
    return angle_regression_loss(ori.module(_normalise(centre_crops(patches, None), ori)), target)


def _objective(phase: str, epoch: int, conf: dict) -> str:
    if phase != "ori":
        return {"det": "class+pair", "desc": "desc"}[phase]
    return "angle" if epoch < conf["pretrain_epochs"] else "pair"


def train_step(phase: str, objective: str, nets: dict[str, LoadedNetwork], batch: dict, conf: dict) -> torch.Tensor:
    if phase == "desc":
        return desc_step(nets["desc"], batch, conf)
    if phase == "det":
        return det_loss(det_terms(nets, batch, conf), conf)
    if objective == "angle":
        return ori_pretrain_step(nets["ori"], batch)
    return ori_step(nets, batch)


@torch.no_grad()
def validate(phase: str, nets: dict[str, LoadedNetwork], data: Quadruplets, conf: dict) -> dict:
    """Held-out loss and nearest-neighbour accuracy of P1 → P2 among the held-out points."""
    if len(data.val) < 8:
        return {}
    if phase == "det":
        batch = data.batch(data.val, PATCH_KEYS["det"])
        terms = det_terms(nets, batch, conf)
        return {"val_loss": float(det_loss(terms, conf)), **det_validation(terms), "val_points": len(data.val)}
    batch = data.batch(data.val)
    desc = nets["desc"]
    if phase == "desc":
        a1, a2 = (None, None) if conf["upright"] else (batch["angle1"], batch["angle2"])
        d1 = desc.module(_normalise(centre_crops(batch["p1"], a1), desc))
        d2 = desc.module(_normalise(centre_crops(batch["p2"], a2), desc))
    else:
        a, d = _oriented_views(nets, batch)
        a1, a2, d1, d2 = *a.chunk(2), *d.chunk(2)
    dist = torch.cdist(d1, d2)
    nn_acc = float((dist.argmin(1) == torch.arange(len(d1))).float().mean())
    loss = desc_step(desc, batch, conf) if phase == "desc" else ori_step(nets, batch)
    out = {"val_loss": float(loss), "val_nn_accuracy": nn_acc, "val_points": len(d1)}
    if phase == "ori":
        # How far ORI is from the SIFT angles (the warm start's target), in degrees.
        err = torch.remainder(torch.cat([a1 - batch["angle1"], a2 - batch["angle2"]]) + math.pi, 2 * math.pi) - math.pi
        out["val_median_angle_error_to_sift_deg"] = round(float(err.abs().median()) * 180 / math.pi, 2)
    return out


@torch.no_grad()
def det_score_threshold(nets: dict[str, LoadedNetwork], data: Quadruplets, conf: dict) -> float | None:
    from .det_phase import score_maps
    from .losses import softmax_pool

    if len(data.val) < 8:
        return None
    p4 = data.batch(data.val, ("p4",))["p4"]
    return round(float(torch.quantile(softmax_pool(score_maps(nets["det"], p4), conf["softmax_beta"]), 0.01)), 4)


def _fixed(net: LoadedNetwork) -> LoadedNetwork:
    # The paper's order: earlier phases' networks stay fixed (gradients still flow through them).
    net.module.requires_grad_(False)
    net.module.eval()
    return net


def train_phase(phase: str, data_path: str | Path, output: str | Path, conf: dict | None = None,
                desc_weights: str | None = None, checkpoint: str | Path | None = None, resume: bool = False,
                log=print, ori_weights: str | None = None, init_weights: str | None = None) -> dict:
    """Train ``phase`` ('desc', 'ori' or 'det') and save ``output``.safetensors + card. Returns the card.

    ``init_weights``: start from these weights of the phase's network (fine-tuning) instead of the
    shipped ones."""
    if phase not in PATCH_KEYS:
        raise ValueError(f"phase {phase!r}: one of {', '.join(PATCH_KEYS)}")
    conf = {**default_conf, **(conf or {})}
    from .losses import SOFTARGMAX_BETA, SOFTMAX_BETA
    conf["softmax_beta"] = conf["softmax_beta"] or SOFTMAX_BETA
    conf["softargmax_beta"] = conf["softargmax_beta"] or SOFTARGMAX_BETA
    if conf["threads"]:
        torch.set_num_threads(int(conf["threads"]))
    torch.manual_seed(conf["seed"])
    rng = np.random.default_rng(conf["seed"])
    data = Quadruplets(data_path, conf)
    nets = {"desc": load_network("desc", init_weights if phase == "desc" else desc_weights)}
    if phase in ("ori", "det"):
        _fixed(nets["desc"])
        nets["ori"] = load_network("ori", init_weights if phase == "ori" else ori_weights)
    if phase == "det":
        _fixed(nets["ori"])
        nets["det"] = load_network("det", init_weights)
    net = nets[phase]
    net.module.train()
    opt = torch.optim.Adam(net.module.parameters(), lr=conf["lr"])
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and resume and ckpt.with_suffix(".json").exists():
        start, history = load_checkpoint(ckpt, net.module, opt)
        log(f"resumed from {ckpt} after epoch {start}")
    before = validate(phase, nets, data, conf)
    log(f"{phase}: {len(data.train)} training and {len(data.val)} held-out quadruplets; before: {before}")
    t0 = time.perf_counter()
    steps_per_epoch = len(data.train) // conf["batch_size"]
    total_epochs = conf["epochs"] + (conf["pretrain_epochs"] if phase == "ori" else 0)
    keys = PATCH_KEYS[phase]
    for epoch in range(start, total_epochs):
        losses = []
        objective = _objective(phase, epoch, conf)
        bar = tqdm(data.epoch(rng, conf["batch_size"], conf["chunk"], keys), total=steps_per_epoch, file=sys.stderr,
                   desc=f"train {phase} ({objective}) {epoch + 1}/{total_epochs}", unit="batch", disable=None)
        for batch in bar:
            loss = train_step(phase, objective, nets, batch, conf)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        net.module.eval()
        entry = {"epoch": epoch + 1, "objective": objective, "loss": float(np.mean(losses)) if losses else None, **validate(phase, nets, data, conf),
                 "seconds": round(time.perf_counter() - t0, 1)}
        net.module.train()
        history.append(entry)
        log(f"{phase} epoch {epoch + 1}: {entry}")
        if ckpt:
            save_checkpoint(ckpt, net.module, opt, epoch + 1, history)
    net.module.eval()
    after = validate(phase, nets, data, conf)
    card = {
        "trained": True,
        "input": dict(net.card["input"]),
        "training": {"phase": phase, **{k: v for k, v in conf.items()}, "seconds": round(time.perf_counter() - t0, 1),
                     "loss_log": history, "init_weights": str(init_weights) if init_weights else None,
                     **{f"{k}_{field}": (nets[k].path.name if field == "weights" else nets[k].sha256)
                        for k in ("desc", "ori") if k != phase and k in nets for field in ("weights", "sha256")}},
        "data": {"file": str(data_path), "sources": data.sources, "train_quadruplets": len(data.train)},
        "split": "lift_localizer/training/splits.json (lift)",
        "quality": {"held_out_before": before, "held_out_after": after},
        "seed": conf["seed"],
    }
    if phase == "det":
        card["score_threshold"] = det_score_threshold(nets, data, conf)
        card["score_threshold_note"] = ("1st percentile of the soft maximum of DET's score map over held-out "
                                        "no-keypoint patches (P4): only maxima flatter than almost every "
                                        "non-keypoint patch are cut; the keypoint budget does the rest")
    save_network(phase, net.module, output, card)
    log(f"{phase}: saved {output} (held-out NN accuracy {before.get('val_nn_accuracy')} → {after.get('val_nn_accuracy')})")
    return card
