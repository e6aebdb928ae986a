"""The demo: LIFT on views of a textured plane rendered from known cameras, beside OpenCV SIFT.

    lift-localizer demo [--output out/demo] [--max-keypoints 500]

Prints per-view keypoints and stage timings, then for each view against the frontal one the
repeatability and the mutual-nearest-neighbour matching precision under the exact homography.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from .evaluation.features import score_pair
from .features.io import open_for_writing, write_features
from .features.lift import Features, Lift
from .features.sift import sift_keypoints
from .synthetic import demo_views, make_texture, transfer


def run(args: argparse.Namespace) -> int:
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    texture = make_texture()
    views = demo_views(texture)
    extractor = Lift({"max_keypoints": args.max_keypoints})
    if extractor.untrained_warning:
        print(extractor.untrained_warning, file=sys.stderr)
    print(f"demo: {len(views)} views of a textured plane, {views[0].image.shape[1]}x{views[0].image.shape[0]}, "
          f"up to {args.max_keypoints} keypoints, images and features in {out}")
    lift: list[Features] = []
    with open_for_writing(out / "features.h5") as h5:
        for k, view in enumerate(views):
            name = f"view_{k}.png"
            cv2.imwrite(str(out / name), view.image)
            f = extractor(view.image.astype(np.float32))
            write_features(h5, name, f)
            lift.append(f)
            t = f.timings
            print(f"  {name}: {len(f):4d} keypoints  DET {t['det']:.2f} s  NMS {t['nms']:.2f} s  "
                  f"ORI {t.get('ori', 0):.2f} s  DESC {t.get('desc', 0):.2f} s  total {t['total']:.2f} s")
    sift = [sift_keypoints(v.image.astype(np.float32), args.max_keypoints) for v in views]
    size = views[0].image.shape
    print("view pairs (0, k), 3 px threshold under the true homography:")
    for k in range(1, len(views)):
        h01 = views[k].H @ np.linalg.inv(views[0].H)
        h10 = np.linalg.inv(h01)
        t01, t10 = (lambda p, H=h01: transfer(H, p)), (lambda p, H=h10: transfer(H, p))
        a = score_pair(lift[0].keypoints, lift[0].descriptors, size, lift[k].keypoints, lift[k].descriptors,
                       size, t01, t10)
        b = score_pair(sift[0][0], sift[0][3], size, sift[k][0], sift[k][3], size, t01, t10)
        print(f"  (0,{k}) LIFT {a.row()}")
        print(f"        SIFT {b.row()}")
    return 0
