"""Posed image folders → Frames: COLMAP models, TUM trajectories, KITTI odometry, NeRF transforms.json.

Every importer returns T_map_camera of the OpenCV optical frame (x right, y down, z forward) and
loads images lazily; a missing or unreadable image becomes an error on that frame alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..images import ImageError
from ..geometry.camera import Camera
from ..geometry.pose import T_from_tq, invert
from .frames import Frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG", ".tif", ".tiff", ".bmp")
# NeRF / OpenGL camera axes are x right, y up, z backward: flip y and z to get the optical frame.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


class ImportFormatError(ValueError):
    """A folder or file that is not in the format it was taken for; the message says what is missing."""


def _loader(path: Path):
    def load() -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ImageError(f"{path}: missing or not an image OpenCV can decode")
        return image
    return load


def _frame(name: str, path: Path, camera: Camera | None, T: np.ndarray | None, stamp_ns: int | None = None) -> Frame:
    error = None if path.is_file() else f"image file {path} is missing"
    return Frame(name, camera, T, stamp_ns, error, _loader(path))


def _image_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImportFormatError(f"{path}: cannot read the image to learn the camera's size")
    return image.shape[1], image.shape[0]


def load_colmap(model_dir: str | Path, image_dir: str | Path) -> list[Frame]:
    """A COLMAP model (binary or text) read with pycolmap; cam_from_world inverted to T_map_camera."""
    import pycolmap

    model_dir, image_dir = Path(model_dir), Path(image_dir)
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:
        raise ImportFormatError(f"{model_dir}: not a readable COLMAP model ({e})") from None
    cameras = {cid: _colmap_camera(c) for cid, c in rec.cameras.items()}
    frames = []
    for image in sorted(rec.images.values(), key=lambda im: im.name):
        T = invert(image.cam_from_world().matrix()) if image.has_pose else None
        frames.append(_frame(image.name, image_dir / image.name, cameras[image.camera_id], T))
    return frames


def _colmap_camera(c) -> Camera:
    p = np.asarray(c.params, np.float64)
    name = c.model.name
    if name == "SIMPLE_PINHOLE":
        f, cx, cy = p
        K, dist = [[f, 0, cx], [0, f, cy], [0, 0, 1]], []
    elif name in ("SIMPLE_RADIAL", "RADIAL"):
        f, cx, cy = p[:3]
        K, dist = [[f, 0, cx], [0, f, cy], [0, 0, 1]], [p[3], p[4] if name == "RADIAL" else 0.0, 0.0, 0.0]
    elif name in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
        fx, fy, cx, cy = p[:4]
        K, dist = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], p[4:]
    else:
        raise ImportFormatError(f"COLMAP camera model {name} is not supported (use PINHOLE, SIMPLE_RADIAL, "
                                f"RADIAL, OPENCV or FULL_OPENCV)")
    return Camera(int(c.width), int(c.height), np.array(K), np.array(dist))


def load_tum(trajectory: str | Path, image_dir: str | Path, intrinsics: tuple[float, float, float, float],
             max_dt: float = 0.02) -> list[Frame]:
    """TUM RGB-D: lines ``t tx ty tz qx qy qz qw`` (optical centre in the world) and images named
    ``<t>.png``; each image takes the trajectory pose nearest in time within ``max_dt`` seconds."""
    trajectory, image_dir = Path(trajectory), Path(image_dir)
    try:
        rows = [line.split() for line in trajectory.read_text().splitlines() if line.strip() and not line.startswith("#")]
        traj = np.array(rows, np.float64)
    except (OSError, ValueError) as e:
        raise ImportFormatError(f"{trajectory}: not a TUM trajectory ({e})") from None
    if traj.ndim != 2 or traj.shape[1] != 8:
        raise ImportFormatError(f"{trajectory}: expected 8 numbers per line (t tx ty tz qx qy qz qw)")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix in IMAGE_SUFFIXES)
    if not paths:
        raise ImportFormatError(f"{image_dir}: no images")
    w, h = _image_size(paths[0])
    fx, fy, cx, cy = intrinsics
    camera = Camera(w, h, np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]))
    frames = []
    for p in paths:
        try:
            t = float(p.stem)
        except ValueError:
            raise ImportFormatError(f"{p}: TUM images are named by their timestamp") from None
        k = int(np.argmin(np.abs(traj[:, 0] - t)))
        T = T_from_tq(traj[k, 1:4], traj[k, 4:8]) if abs(traj[k, 0] - t) <= max_dt else None
        frames.append(_frame(p.name, p, camera, T, int(round(t * 1e9))))
    return frames


def load_kitti(poses_txt: str | Path, calib_txt: str | Path, image_dir: str | Path) -> list[Frame]:
    """KITTI odometry: poses.txt rows are 3×4 T_world_cam (row-major), one per frame; calib.txt's P0
    gives K. An image NNNNNN.png takes the pose on line NNNNNN."""
    poses_txt, calib_txt, image_dir = Path(poses_txt), Path(calib_txt), Path(image_dir)
    try:
        P = np.loadtxt(poses_txt, ndmin=2)
        calib = {}
        for i, line in enumerate(x for x in calib_txt.read_text().splitlines() if x.strip()):
            # "P0: 12 numbers" as KITTI ships it, or bare rows P0, P1, … in order.
            key, values = line.split(":", 1) if ":" in line else (f"P{i}", line)
            calib[key.strip()] = np.array(values.split(), np.float64)
    except (OSError, ValueError) as e:
        raise ImportFormatError(f"{poses_txt} / {calib_txt}: not KITTI poses and calibration ({e})") from None
    if P.shape[1] != 12 or "P0" not in calib or calib["P0"].size != 12:
        raise ImportFormatError(f"{poses_txt}: need 12 numbers per line, and P0 with 12 numbers in {calib_txt}")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix in IMAGE_SUFFIXES)
    if not paths:
        raise ImportFormatError(f"{image_dir}: no images")
    w, h = _image_size(paths[0])
    camera = Camera(w, h, calib["P0"].reshape(3, 4)[:, :3])
    frames = []
    for p in paths:
        try:
            k = int(p.stem)
        except ValueError:
            raise ImportFormatError(f"{p}: KITTI images are named by their frame number") from None
        T = np.vstack([P[k].reshape(3, 4), [0, 0, 0, 1]]) if k < len(P) else None
        frames.append(_frame(p.name, p, camera, T))
    return frames


def load_nerf(transforms_json: str | Path) -> list[Frame]:
    """NeRF transforms.json: camera-to-world matrices in OpenGL axes, intrinsics fl_x fl_y cx cy
    (or camera_angle_x) and optional k1 k2 p1 p2, at the top level or per frame."""
    path = Path(transforms_json)
    try:
        meta = json.loads(path.read_text())
        entries = meta["frames"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ImportFormatError(f"{path}: not a NeRF transforms.json ({e})") from None
    frames = []
    for entry in entries:
        m = {**meta, **entry}
        p = (path.parent / entry["file_path"]).resolve()
        if not p.suffix:
            p = next((p.with_suffix(s) for s in IMAGE_SUFFIXES if p.with_suffix(s).exists()), p.with_suffix(".png"))
        if "w" in m and "h" in m:
            w, h = int(m["w"]), int(m["h"])
        elif p.is_file():
            w, h = _image_size(p)
        else:
            frames.append(Frame(entry["file_path"], None, None, None, f"image file {p} is missing and the "
                                "json gives no w, h"))
            continue
        fx = float(m.get("fl_x", 0.5 * w / np.tan(0.5 * float(m.get("camera_angle_x", np.nan)))))
        fy = float(m.get("fl_y", fx))
        K = np.array([[fx, 0, float(m.get("cx", w / 2))], [0, fy, float(m.get("cy", h / 2))], [0, 0, 1]])
        dist = np.array([float(m.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2")])
        T = np.asarray(entry["transform_matrix"], np.float64) @ GL_TO_CV
        name = str(Path(entry["file_path"]).name) if p.suffix else entry["file_path"]
        frames.append(_frame(p.name if name else name, p, Camera(w, h, K, dist), T))
    return frames


def load_posed_folder(path: str | Path, fmt: str = "auto",
                      intrinsics: tuple[float, float, float, float] | None = None) -> list[Frame]:
    """Frames of a posed image folder in any supported format (detected with ``fmt='auto'``)."""
    path = Path(path)
    if not path.exists():
        raise ImportFormatError(f"{path}: no such folder or file")
    if fmt == "auto":
        if path.name.endswith(".json") or (path / "transforms.json").exists():
            fmt = "nerf"
        elif any((d / n).exists() for d in (path, path / "sparse", path / "sparse" / "0")
                 for n in ("cameras.bin", "cameras.txt")):
            fmt = "colmap"
        elif (path / "poses.txt").exists() and (path / "calib.txt").exists():
            fmt = "kitti"
        elif (path / "groundtruth.txt").exists():
            fmt = "tum"
        else:
            raise ImportFormatError(f"{path}: no transforms.json, COLMAP model, KITTI poses.txt + calib.txt "
                                    f"or TUM groundtruth.txt found")
    if fmt == "nerf":
        return load_nerf(path if path.is_file() else path / "transforms.json")
    if fmt == "colmap":
        model = next(d for d in (path, path / "sparse" / "0", path / "sparse")
                     if (d / "cameras.bin").exists() or (d / "cameras.txt").exists())
        image_dir = path / "images" if (path / "images").is_dir() else path
        return load_colmap(model, image_dir)
    if fmt == "kitti":
        image_dir = next((path / d for d in ("image_0", "image_l", "images") if (path / d).is_dir()), path)
        return load_kitti(path / "poses.txt", path / "calib.txt", image_dir)
    if fmt == "tum":
        if intrinsics is None:
            raise ImportFormatError("TUM trajectories carry no intrinsics: give --intrinsics FX,FY,CX,CY")
        image_dir = path / "rgb" if (path / "rgb").is_dir() else path
        return load_tum(path / "groundtruth.txt", image_dir, intrinsics)
    raise ImportFormatError(f"unknown format {fmt!r}")
