"""``lift-localizer train netvlad``: train the global descriptor on posed maps."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import fail, log, positive_int


def add(sub) -> None:
    from ..features.extractors import EXTRACTORS

    p = sub.add_parser("train", help="train networks (netvlad)")
    nets = p.add_subparsers(dest="network", required=True, metavar="NETWORK")
    n = nets.add_parser(
        "netvlad", help="NetVLAD global descriptor from maps built with known poses",
        description="Train NetVLAD on the local descriptors stored in maps (build them from the mapping "
                    "halves with build-map): positives are nearby images looking the same way, negatives "
                    "far ones and other maps' images, hardest negatives re-mined every epoch; triplet ranking "
                    "and contrastive losses; then PCA-whitening. Writes OUTPUT.safetensors and its card. "
                    "Rebuild maps afterwards so they hold the new global descriptors.")
    n.add_argument("--maps", nargs="+", required=True, type=Path, metavar="MAP_DIR")
    n.add_argument("--features", choices=EXTRACTORS, default="lift")
    n.add_argument("--output", type=Path, default=None,
                   help="weights stem (default: lift_localizer/weights/netvlad_FEATURES)")
    n.add_argument("--epochs", type=positive_int, default=30)
    n.add_argument("--loss", choices=("triplet", "contrastive", "both"), default="both")
    n.add_argument("--hard-negatives", type=positive_int, default=10)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--checkpoint", type=Path, default=None, help="checkpoint stem, written every epoch")
    n.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    n.set_defaults(func=run_netvlad)


def run_netvlad(args: argparse.Namespace) -> int:
    from ..mapping.io import MapError
    from ..retrieval.retriever import model_stem
    from ..training.train_netvlad import train

    if args.resume and args.checkpoint is None:
        return fail("--resume needs --checkpoint")
    output = args.output or model_stem(args.features)
    try:
        train(args.maps, args.features, output, {"epochs": args.epochs, "loss": args.loss,
                                                 "num_hard_negatives": args.hard_negatives, "seed": args.seed},
              checkpoint=args.checkpoint, resume=args.resume, log=log)
    except (MapError, ValueError) as e:
        return fail(str(e))
    return 0
