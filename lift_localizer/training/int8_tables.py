"""Record the INT8 calibration tables of ORI and DESC (backends/onnx_int8.py) on real keypoint
patches of the Webcam training scene, beside the weights they were recorded with.

    python tools/int8_tables.py [--images DIR] [--ori STEM] [--desc STEM]

The patches are those the localizer's own LIFT feeds its back end (``calibration_batches`` with
``reference_lift``: the detector's keypoints, ORI's patches upright, DESC's rotated by ORI), a
sample spread over the images. The default images are the one Webcam scene that splits.json lets
LIFT train on; a folder in a test or excluded set is refused, so that no number reported on it
comes from a quantisation tuned on it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .options import DATA_ROOT, SPLIT_SECTION
from .splits import read_split

DEFAULT_IMAGES = "raw/webcam/mexico"
SPLIT_FILE = Path(__file__).with_name("splits.json")
MAX_PATCHES = 2048
PATCH_BATCH = 256


def held_out(images: Path, data_root: Path = DATA_ROOT) -> str | None:
    """The test or excluded set of splits.json that ``images`` lies in, or None."""
    split = read_split(SPLIT_FILE, SPLIT_SECTION)
    try:
        rel = images.resolve().relative_to(data_root.resolve())
    except ValueError:
        return None
    for held in split["test"] + split["excluded"]:
        if rel == Path(held) or Path(held) in rel.parents or rel in Path(held).parents:
            return held
    return None


def record_tables(images: Path, weights: dict[str, str], max_images: int = 40) -> dict[str, Path]:
    """Write ``<stem>.int8.json`` for ORI and DESC from patches of ``images``; their paths."""
    from ..backends.int8_calibration import calibration_batches
    from ..backends.onnx_cache import ensure_export
    from ..backends.onnx_int8 import CALIBRATED, table_path, write_table
    from ..features.extractors import reference_lift
    from ..weights import LIFT_WEIGHTS, load_networks

    names = {**LIFT_WEIGHTS, **weights}
    networks = load_networks(names)
    directory, manifest = ensure_export(networks)
    data = calibration_batches(images, patch_batch=PATCH_BATCH, max_images=max_images, max_patches=MAX_PATCHES,
                               reference=lambda: reference_lift({"weights": names, "device": "cpu"}), progress=True,
                               expected_weights={k: networks[k].sha256 for k in ("det", "ori", "desc")})
    print(f"calibration data: {data.summary()}", file=sys.stderr)
    source = f"{images.name}: {len(data.images)} images"
    written = {}
    for kind in CALIBRATED:
        path = table_path(networks[kind])
        write_table(directory / manifest["models"][kind]["file"], data.batches[kind], networks[kind], path, source)
        written[kind] = path
    return written
