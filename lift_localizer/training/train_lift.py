"""Train LIFT's networks in the paper's order: DESC first, then ORI with DESC fixed, then DET with
both fixed; optionally all three together on the global cost (``joint``).

    lift-localizer train desc  --data DATA.h5 --output STEM [--epochs E] [--no-hard-negatives]
    lift-localizer train ori   --data DATA.h5 --output STEM --desc DESC_STEM
    lift-localizer train det   --data DATA.h5 --output STEM [--ori ORI_STEM] [--desc DESC_STEM]
    lift-localizer train joint --data DATA.h5 --output DIR [--det D] [--ori O] [--desc D] [--lr 1e-4]

DATA.h5 is made by ``lift-localizer training-data`` (training/data.py): quadruplets of
upright 128×128 patches covering twice the descriptor support, with the SfM keypoint angles.
DESC sees each patch's centre rotated by its SfM angle; ORI sees the upright centre, predicts an
angle, and DESC (fixed) sees the centre rotated by it — the loss pulls the two views of a point
together, so ORI learns angles that DESC can match (Yi et al. 2016, §4). The joint phase trains
DET, ORI and DESC with one optimizer on the global cost (``joint_loss``), from given weights, and
writes DIR/det, DIR/ori and DIR/desc.

Every phase: fixed seed, tqdm, a checkpoint after every epoch (safetensors + JSON, ``--resume``),
a loss log, 5 % of the quadruplets held out for validation, and weights + card at the end.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..features.matching import mutual_nearest_neighbours
from ..localization.options import default_conf as default_localizer_conf
from ..weights import LoadedNetwork, load_network, save_network, tensors_sha256
from .checkpoint import load_checkpoint, save_checkpoint
from .det_phase import (
    SOURCE,
    det_loss,
    det_terms,
    det_validation,
    keypoint_descriptors,
    nn_accuracy,
    patch_centres,
)

PATCH = 64

default_conf = {
    "epochs": 3,
    "batch_size": 64,
    "lr": 1e-3,
    "margin": None,               # desc_loss margin C; None: the loss's default
    "hard_negatives": True,
    # Where DESC's in-batch negatives come from: "batch" (batches mix every scene, as the rows of the
    # file), "scene" (each batch from one scene, e.g. sfm:fox and homography:fox: the hardest
    # negative is another point of the same real place) or "mined" (each batch of one scene's
    # look-alike points, by the descriptors of the network being trained, re-mined every chunk).
    # "scene" and "mined" need the file's point ids.
    "negatives": "batch",
    # DESC's loss: "paper" (desc_loss, LIFT's) or "ratio" (ratio_loss, the localizer's matching test;
    # with a teacher, which holds the descriptors' scale).
    "loss": "paper",
    # DESC on upright patches (angles ignored), for a pipeline whose ORI is untrained or turned off.
    "upright": False,
    # DESC and ORI: train a network of this architecture (nets/desc.py WIDTHS, nets/ori.py
    # ARCHITECTURES; None: that of the weights it starts from), distilled from the weights ``teacher``
    # (a stem) of the same network. DESC: the loss adds distill_weight · ‖d − d_teacher‖², which keeps
    # its descriptors in the teacher's space, so that the NetVLAD trained on the teacher's descriptors
    # aggregates them too. ORI: the warm-start epochs regress the teacher's angles instead of SIFT's.
    "architecture": None,
    "teacher": None,
    "distill_weight": 1.0,
    # ORI only: epochs of regressing the SfM keypoints' SIFT angles (or the teacher's) before the
    # paper's pair loss (see losses.angle_regression_loss for why); they come before ``epochs``.
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
                             f"`lift-localizer training-data`") from None
        self.sources = self.file.attrs.get("sources", "[]")
        source = self._source_column(n)
        self.points = self._point_keys(n, source)
        if conf.get("negatives", "batch") != "batch" and self.points is None:
            raise ValueError(f"{self.path}: no point ids (point1, point3), which --negatives {conf['negatives']} needs; "
                             f"rebuild it with `lift-localizer training-data`")
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
            self.train = self.train[np.isin(source[self.train], wanted)]
        if conf["max_samples"]:
            self.train = self.train[: int(conf["max_samples"])]

    def _source_column(self, n: int) -> np.ndarray:
        """(n,) int64 each row's index into the file's sources (all 0 where the file, of one source,
        leaves the column out)."""
        if "source" not in self.file:
            return np.zeros(n, np.int64)
        if self.file["source"].shape != (n,):
            raise ValueError(f"{self.path}: source does not match the {n} quadruplets")
        return self.file["source"][:].astype(np.int64)

    def _point_keys(self, n: int, source: np.ndarray) -> np.ndarray | None:
        """(n, 3) int64: ids of P1/P2's point and of P3's, unique over the file (the scene, the part
        of the source name after the colon, in the high bits), then each row's scene; None for a file
        without point ids. ``source``: ``_source_column``'s."""
        if "point1" not in self.file or "point3" not in self.file:
            return None
        names = json.loads(self.sources)
        scenes = sorted({s.split(":", 1)[-1] for s in names})
        scene_of = np.array([scenes.index(s.split(":", 1)[-1]) for s in names] or [0], np.int64)
        if any(self.file[k].shape != (n,) for k in ("point1", "point3")):
            raise ValueError(f"{self.path}: point1 or point3 do not match the {n} quadruplets")
        if n and (source.min() < 0 or source.max() >= len(scene_of)):
            raise ValueError(f"{self.path}: a source index outside the file's {len(names)} sources")
        scene = scene_of[source]
        ids = [np.asarray(self.file[k][:], np.int64) for k in ("point1", "point3")]
        return np.stack([(scene << 40) + ids[0], (scene << 40) + ids[1], scene], axis=1)

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
        if self.points is not None:
            out["points"] = torch.from_numpy(self.points[idx])
        return out

    def epoch(self, rng: np.random.Generator, batch_size: int, chunk: int, keys=("p1", "p2", "p3"),
              negatives: str = "batch", describe: Callable[[dict], torch.Tensor] | None = None):
        """Batches of ``batch_size`` from chunks of ``chunk`` consecutive training rows (the file's rows
        are shuffled). ``negatives``: "batch" (rows drawn at random), "scene" (each batch from one
        scene) or "mined" (each batch from one scene, of rows whose P1 descriptors ``describe(chunk)``
        lie near each other: look-alike points of one place). The rows of a chunk that do not fill a
        batch (by scene: of each scene) are left out of that epoch; a different few each epoch, since
        every epoch reshuffles the chunk (``steps`` counts the batches)."""
        starts = rng.permutation(np.arange(0, len(self.train), chunk))
        for s in starts:
            block = self.train[s:s + chunk]
            cached = self.batch(block, keys)
            order = rng.permutation(len(block))
            if negatives == "batch":
                batches = [order[b:b + batch_size] for b in range(0, len(block) - batch_size + 1, batch_size)]
            else:
                scene = cached["points"][:, 2].numpy()[order]
                groups = [order[scene == g] for g in np.unique(scene)]
                if negatives == "mined":
                    d = describe(cached).detach().numpy()
                    groups = [g[nearest_chain(d[g], int(rng.integers(len(g))))] for g in groups]
                batches = [g[b:b + batch_size] for g in groups for b in range(0, len(g) - batch_size + 1, batch_size)]
                batches = [batches[i] for i in rng.permutation(len(batches))]
            for rows in batches:
                sel = torch.from_numpy(rows)
                yield {k: v[sel] for k, v in cached.items()}

    def steps(self, batch_size: int, chunk: int, negatives: str = "batch") -> int:
        """How many batches ``epoch`` yields with the same arguments: the same every epoch, since
        chunks are fixed ranges of the training rows and only the order within them changes."""
        n = 0
        for s in range(0, len(self.train), chunk):
            block = self.train[s:s + chunk]
            if negatives == "batch":
                n += len(block) // batch_size
            else:
                per_scene = np.unique(self.points[block, 2], return_counts=True)[1]
                n += int((per_scene // batch_size).sum())
        return n


def nearest_chain(x: np.ndarray, start: int = 0) -> np.ndarray:
    """(N,) an order of the N rows of ``x`` (N, D): from ``start``, each next row the nearest one not
    yet taken, so that consecutive rows are neighbours."""
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    sq = (x * x).sum(1)
    dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    taken = np.zeros(n, bool)
    out = np.empty(n, np.int64)
    cur = start
    for k in range(n):
        out[k] = cur
        taken[cur] = True
        if k + 1 < n:
            row = np.where(taken, np.inf, dist[cur])
            cur = int(row.argmin())
    return out


# Patches each phase reads: P4 (no keypoint) only for DET's classification term.
PATCH_KEYS = {"desc": ("p1", "p2", "p3"), "ori": ("p1", "p2", "p3"), "det": ("p1", "p2", "p3", "p4"),
              "joint": ("p1", "p2", "p3", "p4")}
# The paper's order: a phase runs the networks trained before it (the joint phase runs and trains all).
ORDER = ("desc", "ori", "det")


def _normalise(patches: torch.Tensor, net: LoadedNetwork) -> torch.Tensor:
    return (patches - net.mean) / net.std


def _desc_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, conf: dict,
               points: torch.Tensor | None = None) -> torch.Tensor:
    """``points``: (N, 2+) the rows' point ids (P1/P2's, P3's), so that no view of an anchor's own
    point is mined as its negative; None for a file without them."""
    from .losses import desc_loss, ratio_loss

    ids = None if points is None else (points[:, 0], points[:, 1])
    if conf["loss"] == "ratio":
        return ratio_loss(d1, d2, d3, points=ids)
    kwargs = {"hard_negatives": conf["hard_negatives"], "points": ids}
    if conf["margin"] is not None:
        kwargs["margin"] = conf["margin"]
    return desc_loss(d1, d2, d3, **kwargs)


def _desc_crops(desc: LoadedNetwork, batch: dict, k: int, conf: dict) -> torch.Tensor:
    """(B, 1, 64, 64) what DESC sees of a batch's P{k}: its support, turned by its angle (upright with
    ``conf['upright']``), normalised for ``desc``."""
    return _normalise(centre_crops(batch[f"p{k}"], None if conf["upright"] else batch[f"angle{k}"]), desc)


def desc_step(desc: LoadedNetwork, batch: dict, conf: dict, teacher: LoadedNetwork | None = None) -> torch.Tensor:
    from .losses import distillation_loss

    crops = [_desc_crops(desc, batch, k, conf) for k in (1, 2, 3)]
    d = [desc.module(c) for c in crops]
    loss = _desc_loss(*d, conf, batch.get("points"))
    if teacher is None:
        return loss
    with torch.no_grad():
        t = [teacher.module(c) for c in crops]
    return loss + conf["distill_weight"] * distillation_loss(torch.cat(d), torch.cat(t))


@torch.no_grad()
def _describe_p1(desc: LoadedNetwork, chunk: dict, conf: dict, step: int = 512) -> torch.Tensor:
    """(N, D) descriptors of a chunk's P1 patches as the desc phase sees them, by the network as it
    now is (evaluation mode, then back to training)."""
    desc.module.eval()
    try:
        out = []
        for s in range(0, len(chunk["p1"]), step):
            part = {k: chunk[k][s:s + step] for k in ("p1", "angle1")}
            out.append(desc.module(_desc_crops(desc, part, 1, conf)))
        return torch.cat(out) if out else torch.zeros(0, 128)
    finally:
        desc.module.train()


def joint_loss(terms: dict[str, torch.Tensor], conf: dict) -> torch.Tensor:
    """LIFT's global cost on ``det_terms(..., with_p3=True)``: γ · L_class + desc_loss of the
    descriptors at P1's, P2's and P3's softargmax keypoints (after ORI). desc_loss's positive term is
    DET's pair term; its hinge is DESC's negative term on P3, mined as the desc phase mines."""
    d1, d2, d3 = terms["keypoint_descriptors"].chunk(3)
    return conf["class_weight"] * terms["class"] + _desc_loss(d1, d2, d3, conf)


def _oriented_views(nets: dict[str, LoadedNetwork], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """ORI's angles and DESC's descriptors of P1's and P2's SfM points (the patch centres), P1 rows first."""
    both = torch.cat([batch["p1"], batch["p2"]])
    return keypoint_descriptors(nets, both, patch_centres(len(both)))


def ori_step(nets: dict[str, LoadedNetwork], batch: dict) -> torch.Tensor:
    from .losses import pair_distance_loss

    _, d = _oriented_views(nets, batch)
    b = len(d) // 2
    return pair_distance_loss(d[:b], d[b:])


def ori_pretrain_step(ori: LoadedNetwork, batch: dict, teacher: LoadedNetwork | None = None) -> torch.Tensor:
    """The warm start: ORI's angles regressed to the SfM keypoints' SIFT angles, or to ``teacher``'s."""
    from ..nets.ori import angle
    from .losses import angle_regression_loss

    patches = _normalise(centre_crops(torch.cat([batch["p1"], batch["p2"]]), None), ori)
    if teacher is None:
        target = torch.cat([batch["angle1"], batch["angle2"]])
    else:
        with torch.no_grad():
            target = angle(teacher.module(patches))
    return angle_regression_loss(ori.module(patches), target)


def _objective(phase: str, epoch: int, conf: dict) -> str:
    if phase != "ori":
        return {"det": "class+pair", "desc": "desc", "joint": "global"}[phase]
    return "angle" if epoch < conf["pretrain_epochs"] else "pair"


def train_step(phase: str, objective: str, nets: dict[str, LoadedNetwork], batch: dict, conf: dict) -> torch.Tensor:
    if phase == "desc":
        return desc_step(nets["desc"], batch, conf, nets.get("teacher"))
    if phase == "det":
        return det_loss(det_terms(nets, batch, conf), conf)
    if phase == "joint":
        return joint_loss(det_terms(nets, batch, conf, with_p3=True), conf)
    if objective == "angle":
        return ori_pretrain_step(nets["ori"], batch, nets.get("teacher"))
    return ori_step(nets, batch)


@torch.no_grad()
def validate(phase: str, nets: dict[str, LoadedNetwork], data: Quadruplets, conf: dict) -> dict:
    """Held-out loss and nearest-neighbour accuracy of P1 → P2 among the held-out points."""
    if len(data.val) < 8:
        return {}
    if phase in ("det", "joint"):
        return _keypoint_validation(phase, nets, data.batch(data.val, PATCH_KEYS[phase]), conf)
    batch = data.batch(data.val)
    desc = nets["desc"]
    if phase == "desc":
        a1, a2 = (None, None) if conf["upright"] else (batch["angle1"], batch["angle2"])
        d1 = desc.module(_normalise(centre_crops(batch["p1"], a1), desc))
        d2 = desc.module(_normalise(centre_crops(batch["p2"], a2), desc))
    else:
        a, d = _oriented_views(nets, batch)
        a1, a2, d1, d2 = *a.chunk(2), *d.chunk(2)
    loss = desc_step(desc, batch, conf, nets.get("teacher")) if phase == "desc" else ori_step(nets, batch)
    out = {"val_loss": float(loss), "val_nn_accuracy": nn_accuracy(d1, d2), "val_points": len(d1)}
    if phase == "desc":
        out.update(ratio_matches(d1, d2))
    if phase == "desc" and "teacher" in nets:
        teacher = nets["teacher"]
        t1 = teacher.module(_normalise(centre_crops(batch["p1"], a1), desc))
        t2 = teacher.module(_normalise(centre_crops(batch["p2"], a2), desc))
        out["val_teacher_nn_accuracy"] = nn_accuracy(t1, t2)
        out["val_relative_distance_to_teacher"] = round(float(((d1 - t1).norm(dim=1) / t1.norm(dim=1)).median()), 4)
    if phase == "ori":
        # How far ORI is from the SIFT angles (the warm start's target), in degrees.
        out["val_median_angle_error_to_sift_deg"] = _median_angle_error_deg(
            torch.cat([a1, a2]), torch.cat([batch["angle1"], batch["angle2"]]))
        if "teacher" in nets:
            from ..nets.ori import angle

            teacher = nets["teacher"]
            patches = _normalise(centre_crops(torch.cat([batch["p1"], batch["p2"]]), None), teacher)
            out["val_median_angle_error_to_teacher_deg"] = _median_angle_error_deg(
                torch.cat([a1, a2]), angle(teacher.module(patches)))
    return out


@torch.no_grad()
def ratio_matches(d1: torch.Tensor, d2: torch.Tensor, ratio: float = default_localizer_conf["ratio"]) -> dict:
    """The localizer's matching (mutual nearest neighbours and the ratio test) between two views of
    N points, (N, D) each: the share of points it matches to themselves, and of its matches that are right."""
    m = mutual_nearest_neighbours(d1, d2, ratio)
    right = int((m[:, 0] == m[:, 1]).sum())
    return {"val_ratio_recall": round(right / len(d1), 4), "val_ratio_precision": round(right / max(len(m), 1), 4)}


def _median_angle_error_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    err = torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi
    return round(float(err.abs().median()) * 180 / math.pi, 2)


def _keypoint_validation(phase: str, nets: dict[str, LoadedNetwork], batch: dict, conf: dict) -> dict:
    """DET's held-out figures at the keypoints DET finds; the joint phase adds its loss and the NN
    accuracy at the SfM points (the ORI phase's figure), since it moves ORI and DESC too."""
    terms = det_terms(nets, batch, conf, with_p3=phase == "joint")
    if phase == "det":
        return {"val_loss": float(det_loss(terms, conf)), **det_validation(terms), "val_points": len(batch["p1"])}
    _, d = _oriented_views(nets, batch)
    return {"val_loss": float(joint_loss(terms, conf)), **det_validation(terms),
            "val_nn_accuracy_at_sfm_points": nn_accuracy(*d.chunk(2)), "val_points": len(batch["p1"])}


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


def _networks(phase: str, weights: dict[str, str | Path | None]) -> dict[str, LoadedNetwork]:
    """The networks ``phase`` runs, from ``weights`` (None: the shipped ones); those it does not train fixed."""
    used = ORDER if phase == "joint" else ORDER[:ORDER.index(phase) + 1]
    nets = {k: load_network(k, weights[k]) for k in used}
    for k in used:
        if phase not in ("joint", k):
            _fixed(nets[k])
    return nets


def _distillation(phase: str, nets: dict[str, LoadedNetwork], conf: dict) -> None:
    """DESC or ORI phase: a fresh network of ``conf['architecture']`` (where it differs from the
    starting weights') and the fixed teacher ``conf['teacher']`` of the same kind, both in ``nets``."""
    from ..nets import desc, ori
    from ..weights import architecture_of, build_module

    start = nets[phase]
    names = (desc if phase == "desc" else ori).ARCHITECTURE_NAMES
    wanted = names.get(conf["architecture"], conf["architecture"])
    teacher = _fixed(load_network(phase, conf["teacher"])) if conf["teacher"] else None
    if wanted and wanted != architecture_of(phase, start.module):
        # Weights of another architecture cannot be fine-tuned: the new network starts from the
        # teacher (DESC cut to its widths, nets/desc.pruned; ORI's same tensors, nets/ori.converted),
        # or random from the seed without one, with the starting weights' input normalisation (the
        # patches it sees are the teacher's).
        if teacher is None:
            module = build_module(phase, wanted)
        else:
            module = desc.pruned(teacher.module, wanted) if phase == "desc" else ori.converted(teacher.module, wanted)
        card = {"input": dict(start.card["input"]), "trained": False}
        nets[phase] = LoadedNetwork(phase, module.train(), card, start.path)
    if teacher:
        if (teacher.mean, teacher.std) != (nets[phase].mean, nets[phase].std):
            raise ValueError(f"teacher {conf['teacher']} normalises its patches with mean {teacher.mean}, std "
                             f"{teacher.std}; the trained {phase.upper()} with {nets[phase].mean}, {nets[phase].std}")
        nets["teacher"] = teacher


def _trainable(phase: str, nets: dict[str, LoadedNetwork]) -> torch.nn.Module:
    if phase != "joint":
        return nets[phase].module
    # One module over all three: one optimizer and one checkpoint (with its Adam moments) hold them all.
    return torch.nn.ModuleDict({k: net.module for k, net in nets.items()})


def _outputs(phase: str, output: str | Path) -> dict[str, Path]:
    """Weights stem of each network the phase writes: OUTPUT, or OUTPUT/det, OUTPUT/ori, OUTPUT/desc."""
    if phase != "joint":
        return {phase: Path(output)}
    # Absolute, so that `--output .` never means weights.paths_for's bare names (the shipped weights).
    return {k: Path(output).absolute() / k for k in ORDER}


def _training_record(phase: str, nets: dict[str, LoadedNetwork], weights: dict, kind: str) -> dict:
    """The card's record of the weights the phase started from (joint) or ran fixed (the others)."""
    if phase == "joint":
        others = {k: tensors_sha256(nets[k].module.state_dict()) for k in ORDER if k != kind}
        return {"init_weights": {k: str(weights[k]) if weights[k] else None for k in ORDER},
                "init_sha256": {k: nets[k].sha256 for k in ORDER},
                # A jointly trained network goes with its partners: their new hashes.
                "trained_with_sha256": others}
    return {"init_weights": str(weights[phase]) if weights[phase] else None,
            **{f"{k}_{field}": (nets[k].path.name if field == "weights" else nets[k].sha256)
               for k in (*ORDER, "teacher") if k != phase and k in nets for field in ("weights", "sha256")}}


def _save(phase: str, output: str | Path, nets: dict[str, LoadedNetwork], weights: dict, data: Quadruplets,
          conf: dict, record: dict, quality: dict) -> dict[str, dict]:
    """Write the weights and card of each network the phase trained; returns the cards by network."""
    cards = {}
    for kind, stem in _outputs(phase, output).items():
        cards[kind] = {
            "trained": True,
            "input": dict(nets[kind].card["input"]),
            "training": {"phase": phase, **conf, **record, **_training_record(phase, nets, weights, kind)},
            "data": {"file": str(data.path), "sources": data.sources, "train_quadruplets": len(data.train)},
            "split": "lift_localizer/training/splits.json (lift)",
            "quality": quality,
            "seed": conf["seed"],
        }
        if kind == "desc" and "teacher" in nets:
            # Descriptors in the teacher's space: what a NetVLAD trained on the teacher's accepts.
            cards[kind]["distilled_from_sha256"] = nets["teacher"].sha256
        if kind == "det":
            cards[kind]["score_threshold"] = det_score_threshold(nets, data, conf)
            cards[kind]["score_threshold_note"] = (
                "1st percentile of the soft maximum of DET's score map over held-out no-keypoint patches (P4): "
                "only maxima flatter than almost every non-keypoint patch are cut; the keypoint budget does the rest")
        save_network(kind, nets[kind].module, stem, cards[kind])
    return cards


def train_phase(phase: str, data_path: str | Path, output: str | Path, conf: dict | None = None,
                desc_weights: str | None = None, checkpoint: str | Path | None = None, resume: bool = False,
                log=print, ori_weights: str | None = None, init_weights: str | None = None,
                det_weights: str | None = None) -> dict:
    """Train ``phase`` ('desc', 'ori', 'det' or 'joint') and save ``output``.safetensors + card.
    Returns the card (joint: DET's card; it saves ``output``/det, /ori and /desc, each with a card).

    ``init_weights``: start from these weights of the phase's network (fine-tuning) instead of the
    shipped ones. ``desc_weights``, ``ori_weights``: the fixed networks (joint: where DESC and ORI
    start, and ``det_weights`` where DET starts; ``init_weights`` has no meaning there)."""
    if phase not in PATCH_KEYS:
        raise ValueError(f"phase {phase!r}: one of {', '.join(PATCH_KEYS)}")
    if phase == "joint" and init_weights:
        raise ValueError("joint: give the starting weights of each network (det_weights, ori_weights, desc_weights)")
    conf = {**default_conf, **(conf or {})}
    from .losses import SOFTARGMAX_BETA, SOFTMAX_BETA
    conf["softmax_beta"] = conf["softmax_beta"] or SOFTMAX_BETA
    conf["softargmax_beta"] = conf["softargmax_beta"] or SOFTARGMAX_BETA
    if conf["loss"] not in ("paper", "ratio") or (conf["loss"] == "ratio" and phase != "desc"):
        raise ValueError(f"loss {conf['loss']!r}: 'paper', or 'ratio' for the desc phase")
    if conf["negatives"] not in ("batch", "scene", "mined") or (conf["negatives"] != "batch" and phase != "desc"):
        raise ValueError(f"negatives {conf['negatives']!r}: 'batch', or 'scene' or 'mined' for the desc phase")
    if conf["threads"]:
        torch.set_num_threads(int(conf["threads"]))
    torch.manual_seed(conf["seed"])
    rng = np.random.default_rng(conf["seed"])
    data = Quadruplets(data_path, conf)
    weights = {"desc": desc_weights, "ori": ori_weights, "det": det_weights}
    if phase != "joint":
        weights[phase] = init_weights
    nets = _networks(phase, weights)
    if phase in ("desc", "ori"):
        _distillation(phase, nets, conf)
    elif conf["architecture"] or conf["teacher"]:
        raise ValueError("architecture and teacher are options of the desc and ori phases")
    net = _trainable(phase, nets)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=conf["lr"])
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and resume and ckpt.with_suffix(".json").exists():
        start, history = load_checkpoint(ckpt, net, opt)
        log(f"resumed from {ckpt} after epoch {start}")
    before = validate(phase, nets, data, conf)
    log(f"{phase}: {len(data.train)} training and {len(data.val)} held-out quadruplets; before: {before}")
    t0 = time.perf_counter()
    steps_per_epoch = data.steps(conf["batch_size"], conf["chunk"], conf["negatives"])
    total_epochs = conf["epochs"] + (conf["pretrain_epochs"] if phase == "ori" else 0)
    keys = PATCH_KEYS[phase]
    for epoch in range(start, total_epochs):
        losses = []
        objective = _objective(phase, epoch, conf)
        bar = tqdm(data.epoch(rng, conf["batch_size"], conf["chunk"], keys, conf["negatives"],
                                    lambda chunk: _describe_p1(nets["desc"], chunk, conf)), total=steps_per_epoch, file=sys.stderr,
                   desc=f"train {phase} ({objective}) {epoch + 1}/{total_epochs}", unit="batch", disable=None)
        for batch in bar:
            loss = train_step(phase, objective, nets, batch, conf)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        net.eval()
        entry = {"epoch": epoch + 1, "objective": objective, "loss": float(np.mean(losses)) if losses else None, **validate(phase, nets, data, conf),
                 "seconds": round(time.perf_counter() - t0, 1)}
        net.train()
        history.append(entry)
        log(f"{phase} epoch {epoch + 1}: {entry}")
        if ckpt:
            save_checkpoint(ckpt, net, opt, epoch + 1, history)
    net.eval()
    after = validate(phase, nets, data, conf)
    record = {"seconds": round(time.perf_counter() - t0, 1), "loss_log": history}
    cards = _save(phase, output, nets, weights, data, conf, record, {"held_out_before": before, "held_out_after": after})
    log(f"{phase}: saved {output} (held-out NN accuracy {before.get('val_nn_accuracy')} → {after.get('val_nn_accuracy')})")
    return cards["det" if phase == "joint" else phase]
