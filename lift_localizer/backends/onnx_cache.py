"""The ONNX export a back end runs: where it is cached (keyed by the weights' hashes), checked
against the loaded weights and the manifest's file hashes, and written atomically."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..weights import LoadedNetwork
from .export import changed_models, export_onnx, read_manifest

log = logging.getLogger(__name__)
KINDS = ("det", "ori", "desc")


def cache_dir(networks: dict[str, LoadedNetwork]) -> Path:
    root = Path(os.environ.get("LIFT_LOCALIZER_CACHE", Path.home() / ".cache" / "lift_localizer"))
    key = "-".join(networks[k].sha256[:12] for k in ("det", "ori", "desc"))
    return root / "onnx" / key


def ensure_export(networks: dict[str, LoadedNetwork], model_dir: str | Path | None = None) -> tuple[Path, dict]:
    """An export directory for these weights (exported now if needed) and its manifest; each model
    file is checked against the hash the manifest recorded: a changed cached export is exported
    again (with a warning), a changed ``model_dir`` is refused (ValueError)."""
    directory = Path(model_dir) if model_dir else cache_dir(networks)
    try:
        manifest = read_manifest(directory)
    except ValueError:
        if model_dir:
            raise
        manifest = _export_atomically(directory, networks, replace=directory.exists())
    _check_weights(directory, manifest, networks)
    changed = changed_models(directory, manifest, KINDS)
    if changed and model_dir:
        raise ValueError(f"{directory}: {'; '.join(changed)}; export again")
    if changed:
        # A cache that someone or something changed: exported again, never run.
        log.warning("%s: %s; exporting again", directory, "; ".join(changed))
        manifest = _export_atomically(directory, networks, replace=True)
    return directory, manifest


def _check_weights(directory: Path, manifest: dict, networks: dict[str, LoadedNetwork]) -> None:
    for kind in KINDS:
        have = manifest["models"].get(kind, {}).get("weights_sha256")
        if have != networks[kind].sha256:
            raise ValueError(f"{directory}: the exported {kind} was made from other weights ({str(have)[:12]}…) than "
                             f"the ones loaded ({networks[kind].sha256[:12]}…); export again")


def _export_atomically(directory: Path, networks: dict[str, LoadedNetwork], replace: bool = False) -> dict:
    return write_atomically(directory, lambda tmp: export_onnx(tmp, networks, netvlad=False), replace)


def write_atomically(directory: Path, write: Callable[[Path], dict], replace: bool = False) -> dict:
    """``write`` (models and manifest.json; returns the manifest) into a fresh folder, renamed into
    place: a process that starts at the same time (the node beside a test, two nodes) never reads
    half-written models. ``replace``: a folder already there is moved aside first (and removed)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        manifest = write(tmp)
        if replace and directory.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.rename(directory, aside / "export")
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(tmp, directory)
    except OSError:
        if not (directory / "manifest.json").exists():
            raise
        manifest = read_manifest(directory)   # another process won the race: use its export
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
