"""``lift-localizer extract``: LIFT keypoints and descriptors of images into an HDF5 file."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..images import MAX_IMAGE_SIDE
from . import add_lift_options, add_network_options, backend_error, network_weights, positive_int


def add(sub) -> None:
    p = sub.add_parser(
        "extract", help="LIFT keypoints and descriptors of images into an HDF5 file",
        description="Run LIFT (DET over the scale space, then ORI and DESC at the keypoints) on each "
                    "image and write one HDF5 group per image, named by the path as given, with the "
                    "datasets keypoints (N×2 x y pixels), scales (N, OpenCV keypoint size in pixels), "
                    "orientations (N, radians), scores (N) and descriptors (N×128). Images that "
                    "cannot be read are reported and skipped; the exit code is 1 if any failed.")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG, JPEG, TIFF, ...; grey, colour or 16-bit)")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="FEATURES.h5",
                   help="HDF5 file to write; an existing file is appended to, and groups of the "
                        "same images are replaced")
    add_lift_options(p, "keep the N keypoints with the highest detector score")
    add_network_options(p)
    p.add_argument("--max-image-side", type=positive_int, default=MAX_IMAGE_SIDE, metavar="PX",
                   help="refuse an image whose longer side exceeds PX, read from its header before decoding")
    p.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..images import ImageError, read_image
    from ..features.io import open_for_writing, write_features
    from ..features.lift import Lift
    from ..weights import WeightsError

    if (code := backend_error(args.backend)) is not None:
        return code
    try:
        extractor = Lift({"max_keypoints": args.max_keypoints, "backend": args.backend, "device": args.device,
                          "precision": args.precision, "weights": network_weights(args)})
    except (WeightsError, ValueError, RuntimeError) as e:
        print(f"error: cannot set up LIFT: {e}", file=sys.stderr)
        return 2
    if extractor.untrained_warning:
        print(extractor.untrained_warning, file=sys.stderr)
    if args.output.parent and not args.output.parent.exists():
        print(f"error: {args.output.parent}: output folder does not exist", file=sys.stderr)
        return 2
    weights = {k: n.sha256 for k, n in extractor.networks.items()}
    failed, counts, seconds = [], [], []
    try:
        out = open_for_writing(args.output, {f"weights_{k}_sha256": v for k, v in weights.items()})
    except OSError as e:
        print(f"error: {args.output}: cannot open for writing ({e})", file=sys.stderr)
        return 2
    with out:
        for path in tqdm(args.images, desc="extract", unit="image", file=sys.stderr):
            try:
                gray = read_image(path, args.max_image_side)
            except ImageError as e:
                tqdm.write(f"error: {e}", file=sys.stderr)
                failed.append(path)
                continue
            t = time.perf_counter()
            try:
                features = extractor(gray)
            except (ValueError, RuntimeError) as e:  # one bad image must not stop the others
                tqdm.write(f"error: {path}: extraction failed ({e})", file=sys.stderr)
                failed.append(path)
                continue
            seconds.append(time.perf_counter() - t)
            write_features(out, path, features)
            out.flush()
            counts.append(len(features))
    n = len(counts)
    mean_kp = sum(counts) / n if n else 0.0
    mean_s = sum(seconds) / n if n else 0.0
    print(f"extracted {n} image(s), {len(failed)} failed; {mean_kp:.0f} keypoints per image "
          f"(min {min(counts, default=0)}, max {max(counts, default=0)}); {mean_s:.2f} s per image "
          f"[{args.backend}, {args.device}] -> {args.output}")
    if failed:
        print(f"failed: {len(failed)} image(s): " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0
