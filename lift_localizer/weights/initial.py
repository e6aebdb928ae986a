"""Writes the untrained starting weights that ship until the training issue replaces them.

    python -m lift_localizer.weights.initial [--output DIR]

Deterministic: the same files (and hashes) on every run. The cards say ``trained: false``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..features import desc, det, ori
from . import WEIGHTS_DIR, save_network

# The grey-level statistics the released LIFT pipeline normalises with (image: mean/std of its
# training images; patches: mean/std of its descriptor training patches).
IMAGE_MEAN, IMAGE_STD = 116.4368, 88.0831
PATCH_MEAN, PATCH_STD = 110.7539, 61.53689


def write_initial(output: Path = WEIGHTS_DIR, seed: int = 0) -> list[Path]:
    common = {"trained": False, "training": None, "data": None, "split": None,
              "quality": "not measured: untrained", "seed": seed}
    det_net = det.analytic_init(det.DET())
    ori_net = ori.upright_init(ori.ORI(), seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        desc_net = desc.DESC()
    return [
        save_network("det", det_net, output / "det", {
            **common, "initialisation": "analytic |Laplacian-of-Gaussian| blob detector, not learned",
            "input": {"mean": IMAGE_MEAN, "std": IMAGE_STD},
            # |LoG| of a flat image is 0 up to rounding; real structure scores 1e-2 and more.
            "score_threshold": 1e-3}),
        save_network("ori", ori_net, output / "ori", {
            **common, "initialisation": "random hidden layers, output fixed at angle 0 (upright)",
            "input": {"mean": PATCH_MEAN, "std": PATCH_STD}}),
        save_network("desc", desc_net, output / "desc", {
            **common, "initialisation": f"random (PyTorch default initialisation, seed {seed})",
            "input": {"mean": PATCH_MEAN, "std": PATCH_STD}}),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=WEIGHTS_DIR, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for p in write_initial(args.output, args.seed):
        print(p)


if __name__ == "__main__":
    main()
