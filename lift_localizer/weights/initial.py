"""Writes the untrained starting weights (the points training starts from) into a folder of your choice.

    lift-localizer initial-weights --output DIR [--seed N]

Deterministic: the same files (and hashes) on every run. The cards say ``trained: false``. The
package's own folder holds the trained weights that maps and NetVLAD are tied to by hash, so it is
refused unless ``--overwrite-shipped`` says that replacing them is meant.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..nets import desc, det, ori
from . import WEIGHTS_DIR, save_network

# The grey-level statistics the released LIFT pipeline normalises with (image: mean/std of its
# training images; patches: mean/std of its descriptor training patches).
IMAGE_MEAN, IMAGE_STD = 116.4368, 88.0831
PATCH_MEAN, PATCH_STD = 110.7539, 61.53689


class ShippedWeightsError(ValueError):
    """Writing into the package's weights folder without saying so."""


def is_shipped_folder(path: Path) -> bool:
    return Path(path).expanduser().resolve() == WEIGHTS_DIR.resolve()


def write_initial(output: Path, seed: int = 0, overwrite_shipped: bool = False,
                  det_sigma: float = det.START_SIGMA_FACTOR) -> list[Path]:
    """Write det, ori and desc starting weights into ``output``; their safetensors paths. DET is |LoG| of
    ``det_sigma`` × the keypoint scale.

    Raises ShippedWeightsError for the package's weights folder unless ``overwrite_shipped``.
    """
    if not det_sigma > 0:
        raise ValueError(f"det_sigma must be positive, not {det_sigma}")
    output = Path(output)
    if is_shipped_folder(output) and not overwrite_shipped:
        raise ShippedWeightsError(
            f"{output} holds the shipped trained weights (maps and NetVLAD refuse others); write the starting "
            "points elsewhere, or pass overwrite_shipped (--overwrite-shipped) to replace them")
    common = {"trained": False, "training": None, "data": None, "split": None,
              "quality": "not measured: untrained", "seed": seed}
    det_net = det.analytic_init(det.DET(), det_sigma)
    ori_net = ori.upright_init(ori.ORI(), seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        desc_net = desc.DESC()
    return [
        save_network("det", det_net, output / "det", {
            **common, "initialisation": f"analytic |Laplacian-of-Gaussian| blob detector, sigma "
                                        f"{det_sigma} x the keypoint scale, not learned",
            "init_sigma": det_sigma,
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
