"""LIFT's training data: quadruplets of patches (Yi et al., ECCV 2016, §4).

P1 and P2 show the same 3D point in two images, P3 a different point, P4 a place with no keypoint.
The points are SIFT keypoints that survived structure from motion (posed bags: the project's map
builder with the known poses; photo collections: pycolmap's incremental SfM on the project's SIFT),
keypoints of fixed webcams that are re-detected under many illuminations (the same pixel is the
same 3D point, as TILDE used), and keypoints moved by random homographies with photometric changes.

    lift-localizer training-data --output DATA.h5 [--max-per-source N] [--sources ...]
    summary = build_dataset("DATA.h5", {"max_per_source": 2000})

DATA.h5 (one row per quadruplet, rows of all sources shuffled together):
    p1 p2 p3 p4        (N, 128, 128) uint8 upright grey patches centred on the keypoint (patch pixel
                       (63.5, 63.5)), 2 × the descriptor support wide (support = SUPPORT_PER_SCALE ×
                       sigma, sigma = OpenCV size / 2): the central 64×64 is exactly the upright patch
                       inference samples (PatchSampler, 64 pixels over the support)
    angle1 angle2 angle3  (N,) float32 radians: the SIFT orientation in crop_patches' convention
                       (direction of the patch x axis in the image, x right, y down); P4 is upright
    source             (N,) int16 index into attrs["sources"]
    point1 point3      (N,) int64 ids of P1/P2's 3D point and of P3's (≥ 0), unique within a scene: the
                       sources of one scene ("sfm:fox", "homography:fox") share them, so rows that show
                       the same point can be told apart from true negatives
    attrs: sources (JSON list like "sfm:sacre_coeur", "webcam:mexico", "homography:llff_fern"),
    split (JSON: split file and section), created (JSON: parameters, counts, time), patch_size 128.

Which sets may be trained on is read from splits.json, section "lift"; test sets are refused.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..nets.scale_space import SUPPORT_PER_SCALE
from .homographies import homography_quads
from .options import DataError, default_conf, log_to_stderr, merge_options
from .patches import PATCH_SIZE, SUPPORT_MULTIPLE, render
from .quadruplets import sfm_quads, webcam_quads
from .scenes import Scene, load_bag, load_collection
from .splits import SetEntry, read_split, refuse_held_out, select_sources, user_plan
from .webcams import load_webcam

WRITE_BLOCK = 4096             # rows gathered in memory per write


def load_scene(entry: SetEntry, root: Path, conf: dict, log=log_to_stderr) -> Scene:
    path = root / entry.path
    if not path.exists():
        raise FileNotFoundError(f"{path} is absent")
    if entry.kind == "bag":
        return load_bag(entry.name, path, conf, log)
    if entry.kind == "webcam":
        return load_webcam(entry.name, path, conf, log)
    return load_collection(entry.name, path, conf, log)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def build_dataset(output: str | Path, conf: dict | None = None, log=log_to_stderr) -> dict:
    """Build the quadruplet file ``output`` (written beside and moved into place when complete).
    Returns {"output", "counts": {source: N}, "total", "seconds", "skipped": {source: reason}}."""
    conf = merge_options(default_conf, conf or {})
    if conf["threads"]:
        torch.set_num_threads(int(conf["threads"]))
    t0 = time.perf_counter()
    output = Path(output)
    root = Path(conf["data_root"])
    with_split = not conf["user_sets"] or conf["keep_split"]
    plan, split = [], {"train": [], "test": [], "excluded": []}
    if with_split:
        if not root.is_dir():
            raise DataError(f"data root {root} is absent (expected the shared data folder with bags/ and raw/)")
        split = read_split(conf["split_file"], conf["split"])
        plan = select_sources(split["train"], conf["sources"], split["test"])
    if conf["user_sets"]:
        user, user_split = user_plan(conf["user_sets"], taken={e.name for e, _ in plan})
        if with_split:
            refuse_held_out(user, root, split)
        plan += user
        split = {**split, "train": split["train"] + user_split["train"]}
    # What the file records of the split: which file and section it was read from, if any.
    split["file"] = str(Path(conf["split_file"]).resolve()) if with_split else None
    split["section"] = conf["split"] if with_split else None
    output.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.parts-", dir=output.parent) as tmp:
        parts: list[tuple[str, Path, Path, Path]] = []
        for entry, names in tqdm(plan, desc="sets", unit="set", file=sys.stderr, disable=None):
            try:
                scene = load_scene(entry, root, conf, log)
            except (OSError, ValueError, RuntimeError) as e:   # a missing or unusable set is skipped, never silently
                for s in names:
                    skipped[s] = f"{type(e).__name__}: {e}"
                log(f"warning: skipped {', '.join(names)}: {e}")
                continue
            for s in names:
                kind = s.split(":")[0]
                rng = _rng(conf["seed"], s)
                if kind == "homography":
                    cap = int(round(conf["max_per_source"] * conf["homography_share"]))
                    quads, warps = homography_quads(scene, cap, rng, conf)
                else:
                    quads, warps = (sfm_quads if kind == "sfm" else webcam_quads)(scene, conf["max_per_source"],
                                                                                  rng, conf), []
                if len(quads) == 0:
                    skipped[s] = "no quadruplet could be formed"
                    log(f"warning: {s}: no quadruplet could be formed")
                    continue
                patches = render(scene, quads, warps, desc=s)
                stem = Path(tmp) / str(len(parts))
                pfile, afile, ifile = (stem.with_suffix(x) for x in (".npy", ".angles.npy", ".points.npy"))
                np.save(pfile, patches)
                np.save(afile, quads.angle[:, :3].astype(np.float32))
                np.save(ifile, quads.point.astype(np.int64))
                parts.append((s, pfile, afile, ifile))
                counts[s] = len(quads)
                log(f"{s}: {len(quads)} quadruplets")
            scene.drop_images()
        if not parts:
            raise DataError("no training data: every source was skipped (" +
                            "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
        partial = Path(tmp) / "data.h5"
        _write(partial, parts, conf, split, counts, time.perf_counter() - t0)
        os.replace(partial, output)
    seconds = time.perf_counter() - t0
    with h5py.File(output, "r+") as f:
        created = json.loads(f.attrs["created"])
        created["seconds"] = round(seconds, 1)
        f.attrs["created"] = json.dumps(created)
    return {"output": str(output), "counts": counts, "total": int(sum(counts.values())), "seconds": seconds,
            "skipped": skipped}


def _write(path: Path, parts, conf: dict, split: dict, counts: dict, seconds: float) -> None:
    sources = [s for s, _, _, _ in parts]
    patches = [np.load(p, mmap_mode="r") for _, p, _, _ in parts]
    angles = np.concatenate([np.load(a) for _, _, a, _ in parts])
    points = np.concatenate([np.load(i) for _, _, _, i in parts])
    source = np.concatenate([np.full(len(p), k, np.int16) for k, p in enumerate(patches)])
    local = np.concatenate([np.arange(len(p)) for p in patches])
    n = len(source)
    perm = np.random.default_rng(conf["seed"]).permutation(n)
    comp = None if conf["compression"] in (None, "none") else conf["compression"]
    with h5py.File(path, "w") as f:
        chunk = (min(n, 64), PATCH_SIZE, PATCH_SIZE)
        ds = [f.create_dataset(f"p{k}", (n, PATCH_SIZE, PATCH_SIZE), np.uint8, chunks=chunk, compression=comp)
              for k in (1, 2, 3, 4)]
        for k in range(3):
            f.create_dataset(f"angle{k + 1}", data=angles[perm, k].astype(np.float32))
        f.create_dataset("source", data=source[perm])
        f.create_dataset("point1", data=points[perm, 0])
        f.create_dataset("point3", data=points[perm, 1])
        step = WRITE_BLOCK
        for s in tqdm(range(0, n, step), desc="write", unit="block", file=sys.stderr, disable=None):
            rows = perm[s:s + step]
            block = np.empty((len(rows), 4, PATCH_SIZE, PATCH_SIZE), np.uint8)
            for k, p in enumerate(patches):
                m = source[rows] == k
                if m.any():
                    block[m] = p[np.sort(local[rows[m]])][np.argsort(np.argsort(local[rows[m]]))]
            for k in range(4):
                ds[k][s:s + len(rows)] = block[:, k]
        f.attrs["sources"] = json.dumps(sources)
        f.attrs["split"] = json.dumps({k: split[k] for k in ("file", "section", "train", "test")})
        f.attrs["created"] = json.dumps({
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), "lift_localizer_version": __version__,
            "opencv": cv2.__version__, "parameters": conf, "counts": counts, "seconds": round(seconds, 1),
            "patch": f"{PATCH_SIZE}x{PATCH_SIZE} upright, {SUPPORT_MULTIPLE:g} x support wide "
                     f"(support = {SUPPORT_PER_SCALE:g} sigma, sigma = OpenCV size / 2)",
        })
        f.attrs["patch_size"] = PATCH_SIZE
