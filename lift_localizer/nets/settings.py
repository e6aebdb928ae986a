"""Network settings that parsers ask about, as plain data: no torch, so that the command line offers
its choices and defaults (and ``lift-localizer --help`` runs) without importing it."""
from __future__ import annotations

# The local descriptors' size the shipped NetVLAD architecture aggregates (LIFT's DESC and RootSIFT).
NETVLAD_INPUT_DIM = 128

# The untrained start (weights/initial.py) and DET training's default start (training/det_stable.py):
# |LoG| of this × the keypoint scale. Chosen on the validation webcam (mexico) by matching precision
# (tools/det_start_sigma.py): 1.0 and 1.1 tie (0.578), 1.1 repeats more (0.634 against 0.616), 1.2 and
# more lower precision.
START_SIGMA_FACTOR = 1.1

SUPPORT_PER_SCALE = 12.0  # descriptor support (full width) in pixels per unit of scale (scale_space.py)
