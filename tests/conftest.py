from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (tests that read ../shared/data skip without it)")
    return p


@pytest.fixture(scope="session")
def lift_small():
    """LIFT with the shipped weights and a keypoint budget small enough for fast tests."""
    from lift_localizer.features.lift import Lift

    return Lift({"max_keypoints": 200})


@pytest.fixture(scope="module")
def networks():
    """The shipped DET, ORI and DESC."""
    from lift_localizer.features.lift import load_networks

    return load_networks()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, networks):
    """A folder with DET, ORI and DESC exported to ONNX and their manifest (no NetVLAD)."""
    pytest.importorskip("onnx", reason="onnx is not installed (needed for the export)")
    from lift_localizer.backends.export import export_onnx

    out = tmp_path_factory.mktemp("export")
    export_onnx(out, networks, netvlad=False)
    return out


@pytest.fixture(scope="module")
def trt_ready():
    """Skips, with the reason, unless TensorRT and a usable CUDA GPU are here."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack, or NVIDIA's Python wheels)")
    from lift_localizer.backends import tensorrt_backend as trtb

    ok, why = trtb.available()
    if not ok:
        pytest.skip(why)


def gaussian_blob(shape, center, sigma, amplitude=120.0, background=80.0):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((xx - center[0]) ** 2 + (yy - center[1]) ** 2) / (2 * sigma**2))
    return (background + amplitude * g).astype(np.float32)
