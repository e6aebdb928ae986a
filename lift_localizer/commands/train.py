"""``lift-localizer train {desc,ori,det,joint,det-stable,netvlad}``: LIFT's networks in the paper's order
(then optionally all three together), DET by TILDE's illumination-stability principle, and NetVLAD."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import fail, log, module_doc, positive_int


def add(sub) -> None:
    from ..features.extractors import EXTRACTORS, descriptor_size
    from ..nets.settings import NETVLAD_INPUT_DIM

    p = sub.add_parser("train", help="train networks (desc, ori, det, joint, det-stable, netvlad)",
                       description="Train LIFT's networks in the paper's order (desc, then ori, then det; then "
                                   "optionally joint, all three together), DET by TILDE's illumination-stability "
                                   "principle (det-stable, the shipped DET), or NetVLAD on maps (netvlad).")
    nets = p.add_subparsers(dest="network", required=True, metavar="NETWORK",
                            help="what to train; `lift-localizer train NETWORK --help` for its options")
    n = nets.add_parser(
        "netvlad", help="NetVLAD global descriptor from maps built with known poses",
        description="Train NetVLAD on the local descriptors stored in maps (build them from the mapping "
                    "halves with build-map): positives are nearby images looking the same way, negatives "
                    "far ones and other maps' images, hardest negatives re-mined every epoch; triplet ranking "
                    "and contrastive losses; then PCA-whitening. Writes OUTPUT.safetensors and its card. "
                    "Rebuild maps afterwards so they hold the new global descriptors.")
    n.add_argument("--maps", nargs="+", required=True, type=Path, metavar="MAP_DIR",
                   help="maps built with known poses (build-map), whose stored local descriptors it trains on")
    # NetVLAD's architecture aggregates NETVLAD_INPUT_DIM-D descriptors: other extractors (ORB's 256 bits) have none.
    n.add_argument("--features", choices=[f for f in EXTRACTORS if descriptor_size(f) == NETVLAD_INPUT_DIM], default="lift",
                   help="the local features NetVLAD aggregates (each map's own, or its alternate of that name)")
    n.add_argument("--output", type=Path, default=None, metavar="STEM",
                   help="weights stem (default: lift_localizer/weights/netvlad_FEATURES)")
    n.add_argument("--epochs", type=positive_int, default=30, metavar="N", help="training epochs")
    n.add_argument("--loss", choices=("triplet", "contrastive", "both"), default="both",
                   help="triplet ranking, contrastive, or their sum")
    n.add_argument("--hard-negatives", type=positive_int, default=10, metavar="N",
                   help="hardest negatives per query, re-mined every epoch")
    n.add_argument("--seed", type=int, default=0, help="random seed")
    n.add_argument("--checkpoint", type=Path, default=None, metavar="STEM", help="checkpoint stem, written every epoch")
    n.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    n.set_defaults(func=run_netvlad)
    for phase, text in LIFT_PHASES.items():
        add_lift_phase(nets, phase, text)
    add_det_stable(nets)


def add_det_stable(nets) -> None:
    from ..training.det_stable_conf import default_conf

    text = module_doc("lift_localizer.training.det_stable")
    q = nets.add_parser("det-stable", help="DET ranking illumination-stable keypoints first (TILDE's principle; "
                        "the shipped DET)", description=text)
    q.add_argument("--output", required=True, type=Path, metavar="STEM",
                   help="weights stem (e.g. lift_localizer/weights/det)")
    q.add_argument("--images", nargs="+", type=Path, default=None, metavar="PATH",
                   help="images or folders, one synthetic stack per image (default: the training photo "
                        "collections of training/splits.json under --data; none when --webcam is given)")
    q.add_argument("--webcam", nargs="+", type=Path, default=[], metavar="DIR",
                   help="fixed-camera folders, one real stack each (fine-tuning for your own cameras)")
    q.add_argument("--validation", type=Path, default=None, metavar="DIR",
                   help="fixed-camera folder the average is selected on, never trained on (default: the split's "
                        "training webcam when --images is not given)")
    q.add_argument("--no-validation", action="store_true", help="keep the last average, select nothing")
    q.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="shared data folder (default: ../shared/data)")
    q.add_argument("--init", default="det", help="DET weights to start from (default: the shipped det)")
    q.add_argument("--init-sigma", type=float, default=default_conf["init_sigma"], metavar="F",
                   help="start from |LoG| of this × the keypoint scale (default %(default)s); 0: --init as it is")
    q.add_argument("--epochs", type=positive_int, default=default_conf["epochs"], metavar="N", help="training epochs")
    q.add_argument("--lr", type=float, default=default_conf["lr"], help="learning rate × the largest initial weight")
    q.add_argument("--all-filters", action="store_true",
                   help="train all 16 GHH filters, not only the first group of 4 (the exact CPU route then runs "
                        "more distinct filters)")
    q.add_argument("--zero-mean", action="store_true",
                   help="keep the filters zero-mean and the biases at zero (scores blind to local brightness, as "
                        "|LoG|)")
    q.add_argument("--variants", type=positive_int, default=default_conf["variants"], metavar="N",
                   help="images per synthetic stack")
    q.add_argument("--seed", type=int, default=0, help="random seed")
    q.add_argument("--checkpoint", type=Path, default=None, metavar="STEM", help="checkpoint stem, written every epoch")
    q.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    q.set_defaults(func=run_det_stable)


def held_out_sets(root: Path) -> list[Path]:
    from ..training.options import SPLITS_FILE
    from ..training.splits import read_split

    split = read_split(SPLITS_FILE)
    return [(root / p).resolve() for p in split["test"] + split["excluded"]]


def run_det_stable(args: argparse.Namespace) -> int:
    from ..training.options import DATA_ROOT, DataError
    from ..training.scenes import IMAGE_SUFFIXES, list_images
    from ..training.det_stable import split_images, train_det_stable
    from ..weights import WeightsError

    if args.resume and args.checkpoint is None:
        return fail("--resume needs --checkpoint")
    if args.variants < 2:
        return fail("--variants must be at least 2 (the image and one change of light)")
    validation = args.validation
    if args.images is None and not args.webcam:
        root = args.data or DATA_ROOT
        images, split_webcam = split_images(root)
        if not images:
            return fail(f"no training collections of training/splits.json under {root}; give --images or --webcam")
        validation = validation or split_webcam
    else:
        images = []
        for p in args.images or []:
            if p.is_dir():
                images += list_images(p)
            elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                images.append(p)
            else:
                return fail(f"{p}: not an image or a folder of images")
    for p in [*args.webcam, *([validation] if validation else [])]:
        if not Path(p).is_dir():
            return fail(f"{p}: not a folder of fixed-camera images")
    held_out = held_out_sets(args.data or DATA_ROOT)
    for p in [*images, *args.webcam, *([validation] if validation else [])]:
        for t in held_out:
            if Path(p).resolve().is_relative_to(t):
                return fail(f"{p} is in {t}, a test or excluded set of training/splits.json: never trained or "
                            "selected on")
    if args.no_validation:
        validation = None
    conf = {"epochs": args.epochs, "lr": args.lr, "variants": args.variants, "seed": args.seed,
            "init_sigma": args.init_sigma or None, "first_group_only": not args.all_filters,
            "zero_mean": args.zero_mean}
    try:
        train_det_stable(images, args.output, conf, webcams=args.webcam, validation=validation, init=args.init,
                         checkpoint=args.checkpoint, resume=args.resume, log=log)
    except (DataError, ValueError, WeightsError, OSError) as e:
        return fail(str(e))
    return 0


# phase: (one line for `train --help`, the description of `train PHASE --help`)
LIFT_PHASES = {
    "desc": ("LIFT's descriptor on SfM quadruplets",
             "LIFT's descriptor on SfM quadruplets: positives pulled together, negatives pushed past a margin, "
             "hardest in-batch negatives (--no-hard-negatives to compare)."),
    "ori": ("LIFT's orientation with DESC fixed",
            "LIFT's orientation with DESC fixed: descriptors of the two views of a point, each rotated by ORI's "
            "angle, pulled together."),
    "det": ("LIFT's detector with ORI and DESC fixed",
            "LIFT's detector with ORI and DESC fixed: classification (fire on points that survived SfM, stay low "
            "on P4) plus the descriptor distance between the two views' softargmax keypoints."),
    "joint": ("DET, ORI and DESC together on LIFT's global cost",
              "DET, ORI and DESC together on LIFT's global cost, starting from --det/--ori/--desc (default: the "
              "shipped weights), usually at a small learning rate: DET's classification, the descriptor distance "
              "between the two views' softargmax keypoints (through ORI) and DESC's hinge on P3 described at its "
              "own keypoint (hardest in-batch negatives)."),
}


def add_lift_phase(nets, phase: str, text: tuple[str, str]) -> None:
    joint = phase == "joint"
    writes = ("Writes OUTPUT/det, OUTPUT/ori and OUTPUT/desc (.safetensors and a card each, phase 'joint'; "
              "use them as --det/--ori/--desc or copy them into lift_localizer/weights/)." if joint
              else "Writes OUTPUT.safetensors and its card.")
    summary, description = text
    q = nets.add_parser(phase, help=summary, description=description + " Data: `lift-localizer "
                        "training-data --output DATA.h5`. " + writes)
    q.add_argument("--data", required=True, type=Path, metavar="DATA.h5",
                   help="training data written by `lift-localizer training-data`")
    q.add_argument("--output", required=True, type=Path, metavar="DIR" if joint else "STEM",
                   help="folder for the three networks' weights" if joint
                   else "weights stem (e.g. lift_localizer/weights/" + phase + ")")
    q.add_argument("--epochs", type=int, default=1 if joint else 3, metavar="N",
                   help="epochs of the paper's loss" + (" (0 with --pretrain-epochs for the warm start only)"
                                                          if phase == "ori" else ""))
    q.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="quadruplets per step")
    q.add_argument("--lr", type=float, default=1e-4 if joint else 1e-3, help="learning rate")
    q.add_argument("--max-samples", type=positive_int, default=None, metavar="N",
                   help="use at most N training quadruplets (default: all)")
    q.add_argument("--sources", nargs="+", default=None,
                   help="train only on these sources of DATA.h5 (e.g. webcam:mexico; default: all)")
    q.add_argument("--seed", type=int, default=0, help="random seed")
    q.add_argument("--checkpoint", type=Path, default=None, metavar="STEM", help="checkpoint stem, written every epoch")
    q.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    if not joint:
        q.add_argument("--init", default=None, metavar="STEM",
                       help=f"start from these {phase.upper()} weights (fine-tuning on your own data; default: "
                            "the shipped ones)")
    if phase in ("desc", "joint"):
        q.add_argument("--no-hard-negatives", action="store_true", help="random negatives only")
    if phase == "desc":
        q.add_argument("--loss", choices=("paper", "ratio"), default="paper",
                       help="paper: LIFT's (positives pulled together, the hardest negative pushed past a margin); "
                            "ratio: the localizer's match test (each view nearer to the other than 0.8 × to the "
                            "nearest other point, both ways); use it with --teacher, which holds the scale")
        q.add_argument("--negatives", choices=("batch", "scene", "mined"), default="batch",
                       help="where the hardest in-batch negative comes from: batch (batches mix every scene), "
                            "scene (each batch from one scene, so the negative is another point of the same "
                            "place) or mined (each batch of one scene's look-alike points, by the descriptors "
                            "of the network being trained); scene and mined need a training file with point ids")
        q.add_argument("--upright", action="store_true",
                       help="train on upright patches (for a pipeline whose ORI is untrained or off)")
        q.add_argument("--architecture", choices=("full", "thin", "fast"), default=None,
                       help="train a DESC of this architecture from scratch instead of fine-tuning --init: full "
                            "(the paper's, 51 MMAC per patch), thin (16 and 32 channels, 15 MMAC) or fast (16 and 64 "
                            "channels, its first two convolutions strided, 6.3 MMAC); "
                            "use it with --teacher")
        q.add_argument("--teacher", default=None, metavar="STEM",
                       help="distil from these DESC weights (e.g. desc, the shipped one): the loss adds "
                            "the squared distance to the teacher's descriptors of the same patches")
        q.add_argument("--distill-weight", type=float, default=1.0, metavar="W",
                       help="weight of the distillation term (default %(default)s)")
    else:
        q.add_argument("--desc", default=None, metavar="STEM", help="DESC weights stem (default: the shipped desc)")
    if phase in ("det", "joint"):
        q.add_argument("--ori", default=None, metavar="STEM", help="ORI weights stem (default: the shipped ori)")
        q.add_argument("--class-weight", type=float, default=10.0, metavar="GAMMA", help="γ of γ·L_class + L_pair")
    if joint:
        q.add_argument("--det", default=None, metavar="STEM",
                       help="DET weights stem to start from (default: the shipped det)")
    if phase == "ori":
        q.add_argument("--pretrain-epochs", type=int, default=0, metavar="N",
                       help="first regress the SfM keypoints' SIFT angles (with --teacher: the teacher's) for "
                            "this many epochs (warm start), then --epochs of the paper's pair loss")
        q.add_argument("--architecture", choices=("full", "fast"), default=None,
                       help="train an ORI of this architecture instead of fine-tuning --init: full (the paper's, "
                            "7.4 MMAC per patch) or fast (its first two convolutions strided instead of pooled, "
                            "4.2 MMAC); it starts from --teacher's weights")
        q.add_argument("--teacher", default=None, metavar="STEM",
                       help="distil from these ORI weights (e.g. ori, the shipped one): the warm start regresses "
                            "the teacher's angles of the same patches")
    q.set_defaults(func=run_lift_phase, phase=phase)


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


def run_lift_phase(args: argparse.Namespace) -> int:
    from ..training.train_lift import train_phase
    from ..weights import WeightsError

    if args.resume and args.checkpoint is None:
        return fail("--resume needs --checkpoint")
    if args.epochs < 0 or (args.epochs == 0 and getattr(args, "pretrain_epochs", 0) <= 0):
        return fail("--epochs must be positive (ori: or 0 with --pretrain-epochs)")
    conf = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_samples": args.max_samples,
            "seed": args.seed, "sources": args.sources}
    if args.phase in ("desc", "joint"):
        conf["hard_negatives"] = not args.no_hard_negatives
    if args.phase == "desc":
        conf.update(upright=args.upright, architecture=args.architecture, teacher=args.teacher,
                    distill_weight=args.distill_weight, loss=args.loss, negatives=args.negatives)
    if args.phase in ("det", "joint"):
        conf["class_weight"] = args.class_weight
    if args.phase == "ori":
        if args.pretrain_epochs < 0:
            return fail("--pretrain-epochs must be ≥ 0")
        conf.update(pretrain_epochs=args.pretrain_epochs, architecture=args.architecture, teacher=args.teacher)
    try:
        train_phase(args.phase, args.data, args.output, conf, desc_weights=getattr(args, "desc", None),
                    checkpoint=args.checkpoint, resume=args.resume, log=log, ori_weights=getattr(args, "ori", None),
                    init_weights=getattr(args, "init", None), det_weights=getattr(args, "det", None))
    except (ValueError, WeightsError) as e:
        return fail(str(e))
    return 0
