"""Jetson Orin estimate of LIFT's network stages from their operation counts, an estimate and not a
Jetson measurement (lift_localizer/evaluation/jetson_estimate.py says how).

    python tools/jetson_estimate.py [--size 640x480] [--keypoints 1000] [--preset default]
"""
from __future__ import annotations

import argparse

from lift_localizer.evaluation import jetson_estimate as je
from lift_localizer.nets.presets import PRESETS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/jetson_estimate.py", description=je.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x480")
    p.add_argument("--keypoints", type=int, default=1000)
    p.add_argument("--preset", choices=tuple(PRESETS), default="default")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    work = je.network_work(h, w, args.keypoints, args.preset)
    glue = je.glue_work(h, w, args.keypoints, args.preset)
    print(f"LIFT networks at {w}x{h}, preset {args.preset} ({work['det']['levels']} DET levels), {args.keypoints} "
          f"keypoints; FP16; efficiency assumed (fraction of the tensor peak): "
          + ", ".join(f"{k.upper()} {v:g}" for k, v in je.EFFICIENCY.items()))
    for k, v in work.items():
        print(f"  {k.upper():5s} {v['macs'] / 1e9:7.2f} GMAC  {v['bytes'] / 1e6:8.1f} MB moved")
    for device in je.DEVICES:
        est = je.estimate(work, device)
        print(f"\n{device.name}: {device.tensor_fp16_tmacs:.1f} TMAC/s FP16 dense, {device.bandwidth_gbs:g} GB/s "
              f"({device.source})")
        for k in ("det", "ori", "desc"):
            e = est[k]
            print(f"  {k.upper():5s} {e['ms']:6.2f} ms  ({e['bound']}-bound: compute {e['compute_ms']:.2f} ms, "
                  f"memory {e['memory_ms']:.2f} ms)")
        print(f"  networks {est['networks']['ms']:.1f} ms, {1000 / est['networks']['ms']:.0f} frames/s before NMS, "
              "patches, matching and PnP")
        steps = je.estimate_glue(glue, device)
        print("  between the networks (" + ", ".join(
            f"{k} {glue[k]['kernels']:.0f} kernels, {glue[k]['bytes'] / 1e6:.0f} MB: {steps[k]['ms']:.2f} ms"
            for k in ("pack", "nms", "crops")) + f"; {je.KERNEL_US:g} µs a kernel assumed)")
        total = est["networks"]["ms"] + steps["steps"]["ms"]
        print(f"  LIFT {total:.1f} ms, {1000 / total:.0f} frames/s before matching and PnP")
        slow = je.estimate(work, device, je.PYTORCH_H100)
        print(f"  at the fractions of peak PyTorch reached on the H100 (pessimistic): networks {slow['networks']['ms']:.0f} ms ("
              + ", ".join(f"{k.upper()} {slow[k]['ms']:.1f}" for k in ("det", "ori", "desc")) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
