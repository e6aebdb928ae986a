"""Whether a PnP pose may be published: the evidence for it, and the tests it must pass.

A missing pose costs a consumer a little drift; a wrong pose published as confident teleports it.
So a pose is accepted only on evidence that tells right from wrong on real data
(``docs/acceptance.md`` says how each test and bound was chosen):

- enough PnP inliers, and enough of the matches;
- inliers spread over the part of the image that has keypoints, not one cluster (a wrong pose is
  typically supported by one patch that happens to fit);
- no rival: a second RANSAC on the first one's outliers must not find a pose nearly as well
  supported (repeated structure, a symmetric object, another place that looks alike);
- a bounded position uncertainty relative to the scene's depth, when asked for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .absolute_pose import PoseEstimate, estimate_pose
from ..reasons import Failure, Reason

# Grid over the image for ``coverage``: cells a side.
COVERAGE_GRID = 8


@dataclass
class PoseEvidence:
    """What supports one pose. Fractions in [0, 1]; ``rival_inliers`` is 0 where no rival was found
    and None where none was looked for (a pose the inlier tests refuse)."""

    inliers: int
    matches: int
    distinct_keypoints: int     # query keypoints among the inliers (a keypoint may match two map points)
    coverage: float             # grid cells with inliers / grid cells with query keypoints
    rival_inliers: int | None   # inliers of the best pose among this pose's outliers
    rmse_px: float
    depth: float                # median depth of the inliers' 3D points in the camera, map units
    position_std: float         # √trace of the position covariance, map units
    rotation_std_deg: float     # √trace of the rotation covariance

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0

    @property
    def rival_ratio(self) -> float:
        return self.rival_inliers / self.inliers if self.inliers and self.rival_inliers else 0.0

    @property
    def relative_position_std(self) -> float:
        return self.position_std / self.depth if self.depth > 0 else float("inf")


def coverage(keypoints: np.ndarray, inlier_keypoints: np.ndarray, image_size: tuple[int, int],
             cells: int = COVERAGE_GRID) -> float:
    """Fraction of the ``cells``×``cells`` grid cells holding keypoints that also hold inliers.

    Args:
        keypoints: (N, 2) all the query's keypoints (x, y); inlier_keypoints: (M, 2) the inliers';
        image_size: (width, height).
    Counting only cells with keypoints keeps a black background or a blank wall from counting
    against a pose: what matters is whether the inliers cover the textured part of the image.
    """
    def occupied(xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        col = np.clip((xy[:, 0] + 0.5) * cells // image_size[0], 0, cells - 1).astype(int)
        row = np.clip((xy[:, 1] + 0.5) * cells // image_size[1], 0, cells - 1).astype(int)
        grid = np.zeros((cells, cells), bool)
        grid[row, col] = True
        return grid

    have = occupied(keypoints)
    return float((occupied(inlier_keypoints) & have).sum() / have.sum()) if have.any() else 0.0


def pose_evidence(est: PoseEstimate, xy: np.ndarray, xyz: np.ndarray, keypoints: np.ndarray,
                  match_keypoints: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                  threshold_px: float, solver: str, seed: int = 0, min_rival: int = 4,
                  find_rival: bool = True) -> PoseEvidence:
    """The evidence for ``est``, a pose from the correspondences ``xy`` (M, 2, undistorted) ↔ ``xyz``
    (M, 3) made of the query keypoints ``keypoints[match_keypoints]`` (distorted, as extracted).

    The rival pose is searched for among the outliers only when ``find_rival`` and at least
    ``min_rival`` of them exist: a second RANSAC over mostly outliers runs to its iteration limit,
    which a pose refused anyway need not pay for.
    """
    inl = est.inliers
    outliers = np.flatnonzero(~inl)
    rival = None
    if find_rival:
        rival = 0
        if len(outliers) >= max(min_rival, 4):
            other = estimate_pose(xy[outliers], xyz[outliers], K, image_size, threshold_px, solver, seed)
            rival = other.num_inliers if other is not None else 0
    R_cw = est.T_map_camera[:3, :3].T
    depth = (xyz[inl] - est.T_map_camera[:3, 3]) @ R_cw[2]
    cov = est.covariance
    return PoseEvidence(
        inliers=est.num_inliers, matches=len(xy),
        distinct_keypoints=int(len(np.unique(match_keypoints[inl]))),
        coverage=coverage(keypoints, keypoints[match_keypoints[inl]], image_size),
        rival_inliers=rival, rmse_px=est.rmse_px,
        depth=float(np.median(depth)) if len(depth) else 0.0,
        position_std=float(np.sqrt(max(np.trace(cov[:3, :3]), 0.0))),
        rotation_std_deg=float(np.degrees(np.sqrt(max(np.trace(cov[3:, 3:]), 0.0)))))


# Refusal reasons (the numbers are the Failure's detail).
TOO_FEW_INLIERS = Reason.TOO_FEW_INLIERS
LOW_INLIER_RATIO = Reason.LOW_INLIER_RATIO
CLUSTERED = Reason.CLUSTERED
RIVAL = Reason.RIVAL
UNCERTAIN = Reason.UNCERTAIN


def inlier_refusal(inliers: int, matches: int, conf: dict) -> Failure | None:
    """The first two tests, which need no more than PnP's counts: None when both pass."""
    if inliers < conf["min_inliers"]:
        return Failure(TOO_FEW_INLIERS, f"{inliers} < {conf['min_inliers']}")
    if (inliers / matches if matches else 0.0) < conf["min_inlier_ratio"]:
        return Failure(LOW_INLIER_RATIO, f"{inliers}/{matches} < {conf['min_inlier_ratio']}")
    return None


def refusal(ev: PoseEvidence, conf: dict) -> Failure | None:
    """None when ``ev`` passes every test ``conf`` asks for (a test whose bound is None is not
    made), else the first failed test's reason with its numbers."""
    c = conf
    first = inlier_refusal(ev.inliers, ev.matches, c)
    if first:
        return first
    if c.get("min_coverage") is not None and ev.coverage < c["min_coverage"]:
        return Failure(CLUSTERED, f"{ev.coverage:.2f} < {c['min_coverage']}")
    if c.get("max_rival_ratio") is not None and ev.rival_ratio > c["max_rival_ratio"]:
        return Failure(RIVAL, f"{ev.rival_inliers} against {ev.inliers} inliers, > {c['max_rival_ratio']}")
    if c.get("max_position_std") is not None and not ev.position_std <= c["max_position_std"]:
        return Failure(UNCERTAIN, f"position std {ev.position_std:.3g} > {c['max_position_std']}")
    if c.get("max_relative_position_std") is not None and not ev.relative_position_std <= c["max_relative_position_std"]:
        return Failure(UNCERTAIN, f"position std {ev.relative_position_std:.3g} of the depth "
                                  f"> {c['max_relative_position_std']}")
    return None
