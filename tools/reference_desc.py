"""DESC against the descriptor network released with LIFT, on the Webcam scenes
(lift_localizer/evaluation/reference_desc.py says how).

    python tools/reference_desc.py [--data ../shared/data] [--images-per-scene 10] [--keypoints 1000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lift_localizer.evaluation import reference_desc as rd
from lift_localizer.nets.desc import load_reference
from lift_localizer.training.options import DATA_ROOT


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python tools/reference_desc.py", description=rd.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA_ROOT, help="the shared data folder (default %(default)s)")
    p.add_argument("--images-per-scene", type=int, default=10)
    p.add_argument("--keypoints", type=int, default=1000)
    args = p.parse_args(argv)
    net, mean, std = load_reference(args.data / rd.REFERENCE)
    webcam = args.data / "raw" / "webcam"
    same: dict[str, list[float]] = {}
    detected: dict[str, list[int]] = {}
    for scene in sorted(d.name for d in webcam.iterdir() if d.is_dir()):
        images = rd.scene_images(webcam, scene, args.images_per_scene)
        for k, v in rd.same_keypoint_accuracy(images, net, mean, std, args.keypoints // 2).items():
            same.setdefault(k, []).append(v)
        for k, (c, m, n) in rd.detected_keypoint_matching(images, net, mean, std, args.keypoints).items():
            t = detected.setdefault(k, [0, 0, 0])
            t[0] += c
            t[1] += m
            t[2] += n
        print(f"{scene}: {len(images)} images", flush=True)
    print(f"same keypoints ({args.keypoints // 2} per scene), nearest-neighbour accuracy, mean over scenes:")
    for k, v in same.items():
        print(f"  {k:15s} {np.mean(v):.3f}")
    print(f"detected SIFT keypoints ({args.keypoints} per image), mutual NN, correct within 5 px:")
    for k, (c, m, n) in detected.items():
        print(f"  {k:15s} precision {c / max(m, 1):.3f}  correct per pair {c / max(n, 1):6.1f}  ({n} pairs)")


if __name__ == "__main__":
    main()
