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

import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..features import ori as ori_module
from ..weights import LoadedNetwork, load_network, save_network
from .checkpoint import load_checkpoint, save_checkpoint

PATCH = 64
SOURCE = 128        # stored patch side: twice the descriptor support

default_conf = {
    "epochs": 3,
    "batch_size": 64,
    "lr": 1e-3,
    "margin": None,               # desc_loss margin C; None: the loss's default
    "hard_negatives": True,
    # DESC on upright patches (angles ignored), for a pipeline whose ORI is untrained or turned off.
    "upright": False,
    "val_fraction": 0.05,
    "chunk": 4096,                # quadruplets read from the file at a time (shuffled within)
    "max_samples": None,          # use at most this many training quadruplets (time budget)
    "seed": 0,
    "threads": None,
}


def centre_crops(big: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
    """(B, 1, 128, 128) patches → (B, 1, 64, 64): the descriptor support at the centre, rotated by
    ``angles`` (B,) radians or upright. Differentiable in ``angles`` (the ORI phase needs it)."""
    from .losses import crop_at

    b = big.shape[0]
    centre = torch.full((b, 2), (SOURCE - 1) / 2, dtype=big.dtype)
    return crop_at(big, centre, torch.full((b,), float(SOURCE // 2), dtype=big.dtype), angles, PATCH)


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

    def epoch(self, rng: np.random.Generator, batch_size: int, chunk: int):
        starts = rng.permutation(np.arange(0, len(self.train), chunk))
        for s in starts:
            block = self.train[s:s + chunk]
            cached = self.batch(block)
            order = rng.permutation(len(block))
            for b in range(0, len(block) - batch_size + 1, batch_size):
                sel = torch.from_numpy(order[b:b + batch_size])
                yield {k: v[sel] for k, v in cached.items()}


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


def ori_step(ori: LoadedNetwork, desc: LoadedNetwork, batch: dict, conf: dict) -> torch.Tensor:
    from .losses import pair_distance_loss

    views = []
    for k in (1, 2):
        upright = _normalise(centre_crops(batch[f"p{k}"], None), ori)
        angle = ori_module.angle(ori.module(upright))
        views.append(desc.module(_normalise(centre_crops(batch[f"p{k}"], angle), desc)))
    return pair_distance_loss(*views)


@torch.no_grad()
def validate(phase: str, nets: dict[str, LoadedNetwork], data: Quadruplets, conf: dict) -> dict:
    """Held-out loss and nearest-neighbour accuracy of P1 → P2 among the held-out points."""
    if len(data.val) < 8:
        return {}
    batch = data.batch(data.val)
    desc = nets["desc"]
    if phase == "desc":
        a1, a2 = (None, None) if conf["upright"] else (batch["angle1"], batch["angle2"])
    else:
        a1, a2 = (ori_module.angle(nets["ori"].module(_normalise(centre_crops(batch[f"p{k}"], None), nets["ori"])))
                  for k in (1, 2))
    d1 = desc.module(_normalise(centre_crops(batch["p1"], a1), desc))
    d2 = desc.module(_normalise(centre_crops(batch["p2"], a2), desc))
    dist = torch.cdist(d1, d2)
    nn_acc = float((dist.argmin(1) == torch.arange(len(d1))).float().mean())
    loss = desc_step(desc, batch, conf) if phase == "desc" else ori_step(nets["ori"], desc, batch, conf)
    return {"val_loss": float(loss), "val_nn_accuracy": nn_acc, "val_points": len(d1)}


def train_phase(phase: str, data_path: str | Path, output: str | Path, conf: dict | None = None,
                desc_weights: str | None = None, checkpoint: str | Path | None = None, resume: bool = False,
                log=print) -> dict:
    """Train ``phase`` ('desc' or 'ori') and save ``output``.safetensors + card. Returns the card."""
    if phase not in ("desc", "ori"):
        raise ValueError(f"phase {phase!r}: desc or ori (det comes next)")
    conf = {**default_conf, **(conf or {})}
    if conf["threads"]:
        torch.set_num_threads(int(conf["threads"]))
    torch.manual_seed(conf["seed"])
    rng = np.random.default_rng(conf["seed"])
    data = Quadruplets(data_path, conf)
    nets = {"desc": load_network("desc", desc_weights)}
    if phase == "ori":
        nets["ori"] = load_network("ori")
        nets["desc"].module.requires_grad_(False)     # the paper's order: DESC fixed while ORI learns
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
    for epoch in range(start, conf["epochs"]):
        losses = []
        bar = tqdm(data.epoch(rng, conf["batch_size"], conf["chunk"]), total=steps_per_epoch, file=sys.stderr,
                   desc=f"train {phase} {epoch + 1}/{conf['epochs']}", unit="batch", disable=None)
        for batch in bar:
            loss = desc_step(net, batch, conf) if phase == "desc" else ori_step(net, nets["desc"], batch, conf)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        net.module.eval()
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None, **validate(phase, nets, data, conf),
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
                     "loss_log": history, "desc_weights": nets["desc"].path.name if phase == "ori" else None,
                     "desc_sha256": nets["desc"].sha256 if phase == "ori" else None},
        "data": {"file": str(data_path), "sources": data.sources, "train_quadruplets": len(data.train)},
        "split": "lift_localizer/training/splits.json (lift)",
        "quality": {"held_out_before": before, "held_out_after": after},
        "seed": conf["seed"],
    }
    for key in ("score_threshold",):
        if key in net.card:
            card[key] = net.card[key]
    save_network(phase, net.module, output, card)
    log(f"{phase}: saved {output} (held-out NN accuracy {before.get('val_nn_accuracy')} → {after.get('val_nn_accuracy')})")
    return card
