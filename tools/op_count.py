"""PyTorch operations per frame, stage by stage, of the staged LIFT pipeline and of its fixed-shape
form, counted on the CPU (lift_localizer/evaluation/op_count.py says how).

    python tools/op_count.py [--preset default|fast|paper] [--size 640x480] [--max-keypoints N] [--batch-size N]
"""
from __future__ import annotations

import argparse

import numpy as np

from lift_localizer.evaluation.op_count import count_stages
from lift_localizer.features.lift import Lift
from lift_localizer.nets.presets import PRESETS, apply_preset
from lift_localizer.synthetic import demo_views, make_texture


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/op_count.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=tuple(PRESETS), default="default")
    p.add_argument("--size", default="640x480")
    p.add_argument("--max-keypoints", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1024, help="ORI/DESC patches per call (1024: CUDA's default)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    gray = demo_views(make_texture(), image_size=(h, w))[2].image.astype(np.float32)
    # The dense DET module, as on a GPU (the CPU's exact route has other operations).
    lift = Lift(apply_preset({"max_keypoints": args.max_keypoints, "backend": "torch", "det_conv": None,
                              "batch_size": args.batch_size}, args.preset))
    counts, kernels, written = (count_stages(lift, gray, what) for what in ("total", "kernels", "bytes_written"))
    print(f"PyTorch operations per frame, {w}×{h}, preset {args.preset} ({len(lift.levels_for(h, w))} levels), "
          f"{args.max_keypoints} keypoints, ORI/DESC batches of {lift.conf['batch_size']}; "
          "all operations (those that compute, not views), MB they write")
    print(f"  {'stage':20s} {'staged':>20s} {'fixed-shape':>20s}")
    for stage in counts["staged"]:
        cells = [f"{counts[k][stage]} ({kernels[k][stage]}), {written[k][stage] / 1e6:.0f} MB" for k in ("staged", "fixed-shape")]
        print(f"  {stage:20s} {cells[0]:>20s} {cells[1]:>20s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
