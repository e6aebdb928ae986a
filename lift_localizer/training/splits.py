"""Which sets LIFT may be trained on (splits.json, section "lift"; test sets are refused) and the
quadruplet sources each set gives."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .options import SPLIT_SECTION, DataError

KINDS = ("sfm", "webcam", "homography")


@dataclass
class SetEntry:
    path: str            # relative to the data root, as in splits.json
    name: str            # short name: "fox", "sacre_coeur", "mexico"
    kind: str            # "bag" (posed), "collection" (unposed photos) or "webcam"


def read_split(split_file: str | Path, section: str = SPLIT_SECTION) -> dict:
    path = Path(split_file)
    try:
        split = json.loads(path.read_text())[section]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: no split section {section!r} ({type(e).__name__}: {e})") from None
    train, test = [_norm(p) for p in split.get("train", [])], [_norm(p) for p in split.get("test", [])]
    excluded = [_norm(p) for p in split.get("excluded", [])]
    for t in train:
        for u in test + excluded:
            if overlap(Path(t), Path(u)):
                raise DataError(f"{path} [{section}]: training set {t} overlaps the test/excluded set {u}")
    return {"train": train, "test": test, "excluded": excluded}


def overlap(a: Path, b: Path) -> bool:
    """Whether one set's folder is, holds or lies in the other's."""
    return a == b or a in b.parents or b in a.parents


def refuse_held_out(user: list[tuple[SetEntry, list[str]]], root: Path, split: dict) -> None:
    """A user's set (absolute path) that overlaps one of the split's test or excluded sets is refused."""
    held_out = [(root / p).resolve() for p in split["test"] + split["excluded"]]
    for entry, _ in user:
        for h in held_out:
            if overlap(Path(entry.path), h):
                raise DataError(f"{entry.path}: held out by the split ({h}); never trained on")


def _norm(p: str) -> str:
    return str(Path(p)).strip("/")


def classify(path: str) -> SetEntry:
    parts = Path(path).parts
    if parts[0] == "bags":
        return SetEntry(path, parts[1], "bag")
    if len(parts) >= 3 and parts[:2] == ("raw", "webcam"):
        return SetEntry(path, parts[2], "webcam")
    return SetEntry(path, parts[1] if len(parts) > 1 else parts[0], "collection")


def source_names(entry: SetEntry) -> list[str]:
    pair = f"webcam:{entry.name}" if entry.kind == "webcam" else f"sfm:{entry.name}"
    return [pair, f"homography:{entry.name}"]


def select_sources(train: list[str], wanted, test: list[str] = ()) -> list[tuple[SetEntry, list[str]]]:
    """Training sets with the sources wanted of each: names ('sfm:fox'), kinds ('webcam') or set names."""
    entries = [classify(p) for p in train]
    if wanted is None:
        return [(e, source_names(e)) for e in entries]
    wanted = list(wanted)
    test_names = {classify(p).name for p in test} | set(test)
    out, used = [], set()
    for e in entries:
        names = [s for s in source_names(e) if any(w in (s, s.split(":")[0], e.name, e.path) for w in wanted)]
        used.update(w for w in wanted for s in names if w in (s, s.split(":")[0], e.name, e.path))
        if names:
            out.append((e, names))
    unknown = [w for w in wanted if w not in used]
    if unknown:
        bad = [w for w in unknown if w.split(":")[-1] in test_names]
        if bad:
            raise DataError(f"{', '.join(bad)}: test set(s) of this split; never trained on")
        avail = [s for e in entries for s in source_names(e)]
        raise DataError(f"unknown source(s) {', '.join(unknown)}; available: {', '.join(avail)} (or a kind: "
                        f"{', '.join(KINDS)})")
    return out


def user_plan(user_sets, taken=()) -> tuple[list[tuple[SetEntry, list[str]]], dict]:
    """A user's own sets (fine-tuning) → the build plan and the split to record (all of it is training).

    A set is named by its folder, or by as many of its last path parts as make the name unique among
    the others and ``taken``: sources are told apart by name (``sfm:NAME``), and two bags are often
    both called ``mapping``."""
    paths = []
    for kind, path in user_sets:
        if kind not in ("bag", "collection", "webcam"):
            raise DataError(f"{path}: unknown kind {kind!r} (bag, collection, webcam)")
        path = Path(path).resolve()
        if not path.exists():
            raise DataError(f"{path} is absent")
        if path in (p for _, p in paths):
            raise DataError(f"{path} is given twice")
        paths.append((kind, path))
    names = _unique_names([p for _, p in paths], set(taken))
    plan = [(e, source_names(e)) for e in (SetEntry(str(p), n, k) for (k, p), n in zip(paths, names))]
    return plan, {"train": [e.path for e, _ in plan], "test": [], "excluded": []}


def _unique_names(paths: list[Path], taken: set[str]) -> list[str]:
    parts = [p.relative_to(p.anchor).parts for p in paths]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(q[-d:]) for q, d in zip(parts, depth)]
        clash = [i for i, n in enumerate(names) if n in taken or names.count(n) > 1]
        if not clash:
            return names
        for i in clash:
            if depth[i] == len(parts[i]):
                raise DataError(f"{paths[i]}: its name {names[i]!r} is taken by another set")
            depth[i] += 1
