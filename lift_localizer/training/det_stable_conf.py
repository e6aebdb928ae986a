"""DET training's options and their defaults (``det_stable.train_det_stable``), as plain data: no
torch, so that ``train det-stable``'s parser reads them (and ``lift-localizer --help`` runs) without
importing it."""
from __future__ import annotations

from ..nets.settings import START_SIGMA_FACTOR

default_conf = {
    "epochs": 3,
    "lr": 3e-4,                  # Adam, times the largest initial weight (the filters' scale)
    "ema": 0.98,                 # weight averaging; the average is what is validated and saved
    "seed": 0,
    "variants": 8,               # images per synthetic stack, the original included
    "max_side": 640,             # training images are shrunk to this longer side
    "keypoints": 1000,           # DET's keypoints per image, as inference keeps them
    "repeat_px": 2.5,            # found again: within this in (x, y, 8 log2 scale), i.e. 2.5 px or 0.3 octave
    "stable": 0.6,               # found again in at least this fraction of the other images: a positive
    "unstable": 0.2,             # in at most this fraction: a negative of the image it was found in
    "suppress_px": 3.0,          # stable points closer than this are one (the most repeated)
    "pairs": 4096,               # positive/negative pairs per image
    "temperature": 0.2,          # × the image's median positive score
    "peak_weight": 0.5,
    "peak_px": 2.0,              # level pixels
    "reg": 1.0,                  # weight of ||W - W0||² / ||W0||²
    # The analytic init: |LoG| whose sigma is this × the level's keypoint scale (nets/det.py says
    # why 1.1). None: start from --init weights as they are.
    "init_sigma": START_SIGMA_FACTOR,
    # Train only the first GHH group (4 pieces): on mexico as good as all 16 filters, and 4 distinct
    # filters keep the CPU's exact DET route cheap (nets/det_separable.py).
    "first_group_only": True,
    # Keep the filters zero-mean and the biases at zero (scores blind to local brightness, as |LoG|). Off:
    # on the validation webcam the whole gain came from the filters' means (0.614 -> 0.628 free, 0.615 kept
    # zero-mean), a learned preference by local brightness; keypoints.detect ignores flat-image plateaus.
    "zero_mean": False,
    "validate_every": 60,        # steps
    "validation_images": 11,     # of the validation webcam (spread over the set)
    "photometric": {
        "gain_field": 0.8,       # log-gain of a smooth 4×4 random field, uniform in [0, this] × N(0, 1)
        "gamma": [0.5, 2.0],     # log-uniform
        "gain": [0.25, 1.3],     # dusk and night
        "offset": 0.08,          # ± of the range
        "blur": [0.3, 1.5],      # Gaussian sigma, half of the images
        "noise": [0.0, 8.0],     # grey levels
    },
}
