"""Build a map from posed images: features → pose-based pairs → matches verified by the known
poses → points triangulated by pycolmap with the poses fixed → the map directory.

    summary = build_map(frames, "out/map", features=("lift", "sift"))

The per-image extraction and the per-image matching run through an executor (mapping/executors.py):
here by default, or as Ray tasks (mapping/ray_build.py); everything else runs here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..features.extractors import conf_for
from ..images import ImageError, to_gray
from ..features.types import Features
from ..geometry.triangulate import triangulate
from ..nets.presets import PRESETS
from ..retrieval.index import build_index
from ..retrieval.retriever import (GLOBAL_FILE, INDEX_FILE, MODEL_DIR, compatible_model, global_descriptors,
                                   model_ref, replace_atomically, retrieval_files, write_retrieval_files)
from ..weights import paths_for
from .executors import Executor, InProcess, Task
from .frames import Frame
from .io import ALT_DIR, MapImage, atomic_directory, write_map
from .keypoint_refinement import refine_keypoints
from .options import default_conf
from .pairs import (ExtractorSet, PairMatches, View, collect_matches, extract_image, match_group, pair_groups,
                    select_pairs)
from .spool import FeatureSpool

# The features being built wait here, inside the build's partial folder (so that what a killed build
# leaves is removed with it), one scratch file per feature set.
SPOOL_DIR = ".features-spool"


class MapBuildError(ValueError):
    """Inputs from which no map can be built; the message says what is missing."""


def match_pairs(pairs: list[tuple[int, int]], features: Sequence[Features], frames: list[Frame], conf: dict,
                executor: Executor, progress: str) -> PairMatches:
    """Mutual-NN + ratio matches for each pair, kept where the known poses agree (epipolar); one
    task per image and its partners, each image's features shared once. ``features[k]`` is read when
    image k's first task is made and its share dropped after its last, so that only the images of
    nearby tasks are held at once (the pairs join images with nearby poses). ``progress``: the bar's label."""
    groups = pair_groups(pairs)
    views = [View(f.camera, f.T_map_camera) for f in frames]
    last_task = {k: g for g, (i, js) in enumerate(groups) for k in (i, *js)}

    def tasks():
        shared: dict[int, object] = {}
        for g, (i, js) in enumerate(groups):
            for k in (i, *js):
                if k not in shared:
                    shared[k] = executor.share(features[k])
            yield Task(f"matching image {frames[i].name}", (conf, views[i], shared[i], [views[j] for j in js],
                                                            *(shared[j] for j in js)), len(js))
            for k in (i, *js):
                if last_task[k] == g:
                    del shared[k]   # a task that still needs it holds it (Ray counts references)

    with _bar(progress, total=len(pairs), unit="pair") as bar:
        results = executor.run(match_group, tasks(), bar)
    return collect_matches(groups, results)


def extractor_conf(name: str, conf: dict) -> dict:
    """The options of extractor ``name`` for a map built with options ``conf``: each extractor takes
    those it has (only LIFT has ``upright``, ``precision`` and weights)."""
    conf = {**default_conf, **conf}
    weights = {k: conf[k] for k in ("det", "ori", "desc") if conf[k]}
    levels = {k: v for k, v in PRESETS[conf["preset"]].items() if k != "max_keypoints"}
    return conf_for(name, {"max_keypoints": conf["max_keypoints"], "upright": conf["upright"],
                           "precision": conf["precision"], **levels, **({"weights": weights} if weights else {})})


def usable_frames(frames: list[Frame], log=print) -> list[Frame]:
    """Frames with a pose and a camera; the others are counted and named, never silently dropped."""
    skipped: dict[str, list[str]] = {}
    keep = []
    for f in frames:
        reason = f.error or ("no pose" if f.T_map_camera is None else "no camera" if f.camera is None else None)
        if reason:
            skipped.setdefault(reason, []).append(f.name)
        else:
            keep.append(f)
    for reason, names in skipped.items():
        log(f"warning: skipped {len(names)} frame(s): {reason} (e.g. {names[0]})")
    return keep


def _bar(desc: str, total: int, unit: str) -> tqdm:
    """One stage's progress line on stderr (hidden where stderr is not a terminal); it stays when done,
    so that the log shows every stage and how long it took."""
    return tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, disable=None)


def _extract_all(frames: list[Frame], extractors: ExtractorSet, log, executor: Executor,
                 spools: dict[str, FeatureSpool]) -> list[Frame]:
    """The frames whose features were extracted, their features appended to ``spools`` (one per
    feature set, in the order of ``extractors``) as they arrive."""
    kept: list[Frame] = []
    shared = executor.share(extractors)
    with _bar(f"features {' '.join(extractors.confs)}", total=len(frames), unit="img") as bar:
        def tasks():
            # Images are read here, as the executor takes them; a bad one is skipped here, never retried.
            for frame in frames:
                try:
                    gray = to_gray(frame.image())
                except ImageError as e:
                    log(f"warning: skipped {frame.name}: {e}")
                    bar.update()
                    continue
                if gray.shape != (frame.camera.height, frame.camera.width):
                    log(f"warning: skipped {frame.name}: image is {gray.shape[1]}×{gray.shape[0]}, camera says "
                        f"{frame.camera.width}×{frame.camera.height}")
                    bar.update()
                    continue
                kept.append(frame)
                yield Task(f"features of image {frame.name}", (shared, executor.share(gray)))

        for result in executor.each(extract_image, tasks(), bar):
            for name, features in zip(extractors.confs, result):
                spools[name].append(features)
    return kept


def _global_index(identity: dict, descriptors: Sequence[np.ndarray]) -> tuple[dict | None, str]:
    """NetVLAD descriptors of the map images (their local descriptors, read a batch at a time) and
    their faiss index, if a model fits these features."""
    net, why = compatible_model(identity)
    if net is None:
        return None, why
    desc = global_descriptors(net, descriptors)
    index, kind = build_index(desc)
    meta = {"method": "netvlad", "model": model_ref(net), "model_sha256": net.sha256, "index": kind,
            "dim": int(desc.shape[1]), "files": [GLOBAL_FILE, INDEX_FILE]}
    return {"meta": meta, "descriptors": desc, "index": index, "net": net}, ""


def drop_non_finite_points(rec, point_ids: list[np.ndarray]) -> int:
    """Remove the points of ``rec`` (a pycolmap Reconstruction) whose coordinates are not finite,
    and their ids from ``point_ids`` (−1: none); the number removed. A degenerate triangulation can
    give them, and a map holding one would be refused at load."""
    bad = [i for i, p in rec.points3D.items() if not np.isfinite(p.xyz).all()]
    for i in bad:
        rec.delete_point3D(i)
    if bad:
        gone = np.array(bad, np.int64)
        for ids in point_ids:
            ids[np.isin(ids, gone)] = -1
    return len(bad)


def build_map(frames: list[Frame], output: str | Path, features: tuple[str, ...] = ("lift",),
              conf: dict | None = None, source: str = "", log=print, executor: Executor | None = None) -> dict:
    """Build the map directory ``output`` (replaced atomically) from posed frames.

    The first of ``features`` is the map's own; others go to ``output/alt/<name>`` with the same
    images and pairs, for side-by-side evaluation. ``executor`` runs the extraction and matching
    tasks (default: here, in order). Returns a summary per feature set.
    """
    executor = executor or InProcess()
    conf = {**default_conf, **(conf or {})}
    unknown = set(conf) - set(default_conf)
    if unknown:
        raise ValueError(f"unknown map options {sorted(unknown)}")
    frames = usable_frames(frames, log)
    if len(frames) < 2:
        raise MapBuildError(f"need at least 2 images with a pose and a camera, have {len(frames)}")
    extractor_set = ExtractorSet({name: extractor_conf(name, conf) for name in features})
    # Built here too for their identity (map.json) and warnings, whichever executor extracts.
    extractors = extractor_set.built()
    for ex in extractors.values():
        if ex.untrained_warning:
            log(ex.untrained_warning)
    summary: dict[str, dict] = {}
    with atomic_directory(output) as tmp, contextlib.ExitStack() as spooled:
        (tmp / SPOOL_DIR).mkdir()
        spooled.callback(shutil.rmtree, tmp / SPOOL_DIR, ignore_errors=True)   # before the map is swapped in
        feats = {name: spooled.enter_context(FeatureSpool(tmp / SPOOL_DIR / f"{k}.h5"))
                 for k, name in enumerate(extractors)}
        start = time.perf_counter()
        frames = _extract_all(frames, extractor_set, log, executor, feats)
        extraction_s = time.perf_counter() - start
        if len(frames) < 2:
            raise MapBuildError(f"only {len(frames)} image(s) could be read; need at least 2")
        poses = [f.T_map_camera for f in frames]
        pairs = select_pairs(poses, conf["num_neighbours"], conf["max_view_angle_deg"])
        for k, (name, ex) in enumerate(extractors.items()):
            target = tmp if k == 0 else tmp / ALT_DIR / name
            start = time.perf_counter()
            pm = match_pairs(pairs, feats[name], frames, conf, executor, f"matching {name}")
            matching_s = time.perf_counter() - start
            keypoints = feats[name].keypoints
            refinement = None
            if conf["refine_keypoints"]:
                start = time.perf_counter()
                with _bar(f"refining {name}", total=2 * len(frames), unit="img") as bar:
                    keypoints, refinement = refine_keypoints(lambda k: to_gray(frames[k].image()), feats[name],
                                                             pm.matches, progress=bar.update)
                refinement_s = time.perf_counter() - start
            # One pycolmap call: the bar shows that it runs and, when done, how long it took.
            start = time.perf_counter()
            with _bar(f"triangulation {name}", total=1, unit="model") as bar:
                tri = triangulate([f.name for f in frames], [f.camera for f in frames], poses,
                                  keypoints, pm.matches,
                                  {"ignore_two_view_tracks": not conf["keep_two_view_tracks"]})
                bar.update()
            triangulation_s = time.perf_counter() - start
            rec = tri.reconstruction
            dropped = drop_non_finite_points(rec, tri.point_ids)
            if dropped:
                log(f"warning: {name}: dropped {dropped} triangulated point(s) with non-finite coordinates")
            ids = np.array(sorted(rec.points3D.keys()), np.int64)
            xyz = np.array([rec.points3D[i].xyz for i in ids]).reshape(-1, 3)
            err = np.array([rec.points3D[i].error for i in ids])
            tl = np.array([rec.points3D[i].track.length() for i in ids], np.int64)
            stats = {
                "images": len(frames), "pairs": len(pairs), "matched_pairs": len(pm.matches),
                "raw_matches": pm.raw, "verified_matches": pm.verified, "points": int(len(ids)),
                "mean_track_length": float(tl.mean()) if len(tl) else 0.0,
                "mean_reprojection_error_px": float(err.mean()) if len(err) else float("nan"),
                "mean_keypoints": float(np.mean([len(kp) for kp in feats[name].keypoints])),
                # Wall time of each stage; "features" extracts every feature set of the build at once.
                "seconds": {"features": round(extraction_s, 3), "matching": round(matching_s, 3),
                            "triangulation": round(triangulation_s, 3)},
            }
            if refinement is not None:
                stats["refinement"] = refinement.as_dict()
                stats["seconds"]["refinement"] = round(refinement_s, 3)
            with _bar(f"writing {name}", total=2, unit="part") as bar:
                bar.set_postfix_str("global descriptors and index")
                retrieval, why = _global_index(ex.identity(), feats[name].descriptors)
                if why:
                    log(f"note: {name} map without NetVLAD retrieval ({why}); localization will rank map images "
                        f"by descriptor votes")
                if retrieval:
                    # Written before map.json, which records their hashes (the localizer checks them).
                    target.mkdir(parents=True, exist_ok=True)
                    retrieval["meta"].update(write_retrieval_files(
                        target, [f.name for f in frames], retrieval["descriptors"], retrieval["index"],
                        retrieval["net"]))
                bar.update()
                bar.set_postfix_str("COLMAP model, features, points, map.json")
                meta = {"features": ex.identity(), "retrieval": retrieval["meta"] if retrieval else None,
                        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                        "lift_localizer_version": __version__, "source": str(source), "parameters": conf,
                        "statistics": stats}
                images = (MapImage(f.name, f.camera, f.T_map_camera,
                                   dataclasses.replace(feats[name][k], keypoints=keypoints[k]), pid)
                          for k, (f, pid) in enumerate(zip(frames, tri.point_ids)))
                write_map(target, meta, images, ids, xyz, err, tl, rec)
                bar.update()
            summary[name] = stats
            if stats["points"] == 0:
                raise MapBuildError(f"{name}: no 3D points could be triangulated ({pm.verified} verified matches "
                                    f"over {len(pairs)} pairs); are the poses and the camera right?")
    return summary


def index_map(map_dir: str | Path, log=print) -> dict | None:
    """(Re)compute a map's NetVLAD global descriptors and faiss index from its stored features,
    e.g. after training a new NetVLAD. Returns the new retrieval record, or None when no model fits
    the features.

    Every file is renamed into place, and map.json (which names the global files and their hashes)
    is only ever replaced when the files it will name are complete, so an interruption at any point
    leaves a map that loads with either the old index or the new one:
    1. the new files are written under names of their own (``global-<random>.h5``, ``.index``);
    2. map.json is replaced to name them;
    3. copies take the usual names (global.h5, global.index), which map.json no longer names;
    4. map.json is replaced to name those; 5. files that map.json does not name are removed.
    """
    from ..mapping.io import load_map

    m = load_map(map_dir)
    directory = Path(m.path)
    retrieval, why = _global_index(m.meta["features"], [im.features.descriptors for im in m.images])
    if retrieval is None:
        log(f"{map_dir}: no NetVLAD for these features ({why})")
        return None
    names = [im.name for im in m.images]
    staged = write_retrieval_files(directory, names, retrieval["descriptors"], retrieval["index"], retrieval["net"],
                                   f"global-{_token()}.h5", f"global-{_token()}.index")
    meta = json.loads((directory / "map.json").read_text())
    _replace_meta(directory, {**meta, "retrieval": {**retrieval["meta"], **staged}})
    for staged_name, name in zip(staged["files"], (GLOBAL_FILE, INDEX_FILE)):
        replace_atomically(directory / name, lambda p, src=directory / staged_name: shutil.copyfile(src, p))
    record = {**retrieval["meta"], "model": staged["model"], "files": [GLOBAL_FILE, INDEX_FILE],
              "sha256": {name: staged["sha256"][staged_name]
                         for staged_name, name in zip(staged["files"], (GLOBAL_FILE, INDEX_FILE))}}
    _replace_meta(directory, {**meta, "retrieval": record})
    _remove_unnamed_retrieval_files(directory, record)
    return record


def _token() -> str:
    return uuid.uuid4().hex[:12]


def _replace_meta(directory: Path, meta: dict) -> None:
    replace_atomically(directory / "map.json", lambda p: p.write_text(json.dumps(meta, indent=1)))


def _remove_unnamed_retrieval_files(directory: Path, record: dict) -> None:
    """Global files that map.json does not name: staged copies, and what an interruption left."""
    keep = set(retrieval_files(record))
    for path in [*directory.glob("global-*.h5"), *directory.glob("global-*.index"), *directory.glob(".global*.partial")]:
        if path.name not in keep:
            path.unlink(missing_ok=True)
    models = directory / MODEL_DIR
    if models.is_dir() and not models.is_symlink():
        kept = set(paths_for(directory / record["model"]))
        for path in models.iterdir():
            if path not in kept:
                path.unlink(missing_ok=True)
