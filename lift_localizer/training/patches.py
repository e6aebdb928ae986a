"""Training patches cut exactly as inference cuts its patches, and the rendering of quadruplets."""
from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from ..features.patches import PatchSampler
from ..nets.scale_space import SUPPORT_PER_SCALE
from .homographies import Warp, warp_image
from .quadruplets import Quads
from .scenes import Scene

PATCH_SIZE = 128
INFERENCE_PATCH = 64           # PatchSampler size at inference (Lift conf patch_size)
SUPPORT_MULTIPLE = 2.0         # the stored patch covers this × the descriptor support


def support(sigma) -> np.ndarray:
    """Descriptor support (full width, pixels) of keypoints of scale sigma (= OpenCV size / 2)."""
    return SUPPORT_PER_SCALE * np.asarray(sigma, np.float64)


def crop(gray: np.ndarray, xy: np.ndarray, sigma: np.ndarray, sampler: PatchSampler | None = None) -> np.ndarray:
    """(N, 128, 128) uint8 upright patches of 2 × the support, cut exactly as inference cuts its patches.

    The sampler's octaves are those of PatchSampler(image, 64) at inference; with 128 pixels over twice
    the support the pixel spacing, the octave chosen and the sample positions of the central 64×64
    are those of the inference patch.
    """
    if len(xy) == 0:
        return np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.uint8)
    if sampler is None:
        sampler = inference_sampler(gray)
    with torch.no_grad():
        p = sampler(torch.as_tensor(np.asarray(xy, np.float32)).reshape(-1, 2),
                    torch.as_tensor(SUPPORT_MULTIPLE * support(sigma), dtype=torch.float32).reshape(-1))
    return p[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def inference_sampler(gray: np.ndarray) -> PatchSampler:
    sampler = PatchSampler(torch.from_numpy(np.ascontiguousarray(gray, np.float32))[None, None], INFERENCE_PATCH)
    sampler.size = PATCH_SIZE
    return sampler


def render(scene: Scene, quads: Quads, warps: list[Warp] = (), desc: str = "crop") -> np.ndarray:
    """(N, 4, 128, 128) uint8 patches of ``quads``, each image (or warp) loaded once."""
    out = np.zeros((len(quads), 4, PATCH_SIZE, PATCH_SIZE), np.uint8)
    flat = quads.image.reshape(-1)
    keys = np.unique(flat)
    for key in tqdm(keys, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False):
        key = int(key)
        gray = scene.gray(key) if key < len(scene) else warp_image(scene.gray(warps[key - len(scene)].base),
                                                                   warps[key - len(scene)])
        sel = np.flatnonzero(flat == key)
        patches = crop(gray, quads.xy.reshape(-1, 2)[sel], quads.sigma.reshape(-1)[sel])
        out.reshape(-1, PATCH_SIZE, PATCH_SIZE)[sel] = patches
    return out
