"""``lift-localizer initial-weights``: the untrained starting points of DET, ORI and DESC (weights/initial.py)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..nets.settings import START_SIGMA_FACTOR
from . import fail, positive_float


def add(sub) -> None:
    # Where the package's weights folder is, asked of the import system: importing it imports torch.
    weights_dir = Path(importlib.util.find_spec("lift_localizer.weights").origin).resolve().parent

    p = sub.add_parser(
        "initial-weights", help="write the untrained starting weights that training starts from",
        description="Write the untrained starting weights of DET, ORI and DESC (the points training starts "
                    "from) into DIR. Deterministic: the same files (and hashes) on every run; the cards say "
                    "trained: false. The package's own folder holds the trained weights that maps and NetVLAD "
                    "are tied to by hash, so it is refused unless --overwrite-shipped says that replacing them "
                    "is meant.")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisations (ORI, DESC)")
    p.add_argument("--det-sigma", type=positive_float, default=START_SIGMA_FACTOR, metavar="F",
                   help="DET's |LoG| sigma as this × the keypoint scale (default %(default)s: the start training "
                        "uses)")
    p.add_argument("--overwrite-shipped", action="store_true",
                   help=f"allow --output to be the package's weights folder ({weights_dir}), replacing the "
                        "trained weights that ship there")
    p.set_defaults(func=run_initial_weights)


def run_initial_weights(args: argparse.Namespace) -> int:
    from ..weights.initial import ShippedWeightsError, write_initial

    try:
        paths = write_initial(args.output, args.seed, args.overwrite_shipped, args.det_sigma)
    except ShippedWeightsError as e:
        return fail(str(e))
    for p in paths:
        print(p)
    return 0
