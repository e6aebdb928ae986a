"""Per-stage timings of the LIFT pipeline on one image (median over repeats, after a warm-up).

    python -m lift_localizer.evaluation.timing [--image PATH] [--size 640x480] [--device cpu|cuda]
        [--max-keypoints 1000] [--repeat 3] [--threads N]

Without --image it times the demo's synthetic 640×480 view. Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform

import cv2
import numpy as np
import torch

from ..features.image import read_image
from ..features.lift import Lift
from ..synthetic import demo_views, make_texture

STAGES = ("det", "nms", "ori_patches", "ori", "desc_patches", "desc", "total")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", help="image file (default: the demo's synthetic view)")
    p.add_argument("--size", default="640x480", help="resize the image to WxH first (default 640x480)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-keypoints", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gray = read_image(args.image) if args.image else demo_views(make_texture())[0].image.astype(np.float32)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if gray.shape != (h, w):
        gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    lift = Lift({"max_keypoints": args.max_keypoints, "device": args.device})
    lift(gray)  # warm-up: allocations, kernel selection
    runs = []
    for _ in range(args.repeat):
        f = lift(gray)
        runs.append(f.timings)
    med = {k: float(np.median([r.get(k, 0.0) for r in runs])) for k in STAGES}
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"LIFT timings, {w}x{h}, {len(f)} keypoints, {len(lift.scales_for(h, w))} levels, device {args.device} "
          f"({device}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {args.repeat}")
    for k in STAGES:
        print(f"  {k:13s} {1000 * med[k]:9.1f} ms")
    print(json.dumps({"size": [w, h], "keypoints": len(f), "device": args.device, "device_name": device,
                      "median_ms": {k: round(1000 * v, 2) for k, v in med.items()}}))


if __name__ == "__main__":
    main()
