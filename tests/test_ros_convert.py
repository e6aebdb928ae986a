"""Image messages → arrays without cv_bridge: every encoding, padding, byte order, and bad input."""
import types

import cv2
import numpy as np
import pytest

from lift_localizer.images import ImageError
from lift_localizer.bags.convert import (ENCODINGS, compressed_image_from_msg, image_from_msg, image_to_bgr_or_gray,
                                        make_image_fields)

rng = np.random.default_rng(0)


def msg(array, encoding, pad=0, bigendian=False, data_type=bytes):
    h, w = array.shape[:2]
    a = array.astype(array.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.reshape(h, -1).view(np.uint8)
    step = rows.shape[1] + pad
    buf = np.zeros((h, step), np.uint8)
    buf[:, : rows.shape[1]] = rows
    data = data_type(buf.tobytes()) if data_type in (bytes, bytearray) else buf.ravel()
    return types.SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=step,
                                 data=data)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "bgr8", "rgb8", "8UC3", "bgra8", "rgba8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_eight_bit_encodings_round_trip(encoding, pad):
    c = ENCODINGS[encoding][0]
    a = rng.integers(0, 256, (7, 11, c) if c > 1 else (7, 11)).astype(np.uint8)
    np.testing.assert_array_equal(image_from_msg(msg(a, encoding, pad)), a)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_byte_order(bigendian):
    a = rng.integers(0, 65536, (5, 9)).astype(np.uint16)
    out = image_from_msg(msg(a, "mono16", pad=2, bigendian=bigendian))
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_colour_conversions_give_bgr():
    bgr = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    np.testing.assert_array_equal(image_to_bgr_or_gray(msg(bgr[..., ::-1].copy(), "rgb8")), bgr)
    rgba = np.dstack([bgr[..., ::-1], np.full((6, 8), 7, np.uint8)])
    np.testing.assert_array_equal(image_to_bgr_or_gray(msg(rgba, "rgba8")), bgr)
    bgra = np.dstack([bgr, np.zeros((6, 8), np.uint8)])
    np.testing.assert_array_equal(image_to_bgr_or_gray(msg(bgra, "bgra8")), bgr)
    grey = rng.integers(0, 256, (6, 8)).astype(np.uint8)
    np.testing.assert_array_equal(image_to_bgr_or_gray(msg(grey, "mono8")), grey)


@pytest.mark.parametrize("encoding,code", [("yuv422", cv2.COLOR_YUV2BGR_UYVY), ("yuv422_yuy2", cv2.COLOR_YUV2BGR_YUYV)])
def test_yuv422_matches_opencv(encoding, code):
    packed = rng.integers(0, 256, (4, 6, 2)).astype(np.uint8)
    np.testing.assert_array_equal(image_to_bgr_or_gray(msg(packed, encoding, pad=4)), cv2.cvtColor(packed, code))


@pytest.mark.parametrize("encoding,code", [("bayer_rggb8", cv2.COLOR_BayerBG2BGR), ("bayer_bggr8", cv2.COLOR_BayerRG2BGR),
                                           ("bayer_gbrg8", cv2.COLOR_BayerGR2BGR), ("bayer_grbg8", cv2.COLOR_BayerGB2BGR)])
def test_bayer_matches_opencv(encoding, code):
    raw = rng.integers(0, 256, (8, 10)).astype(np.uint8)
    np.testing.assert_array_equal(image_to_bgr_or_gray(msg(raw, encoding)), cv2.cvtColor(raw, code))


def test_bayer_rggb_puts_red_where_rggb_says():
    raw = np.zeros((8, 8), np.uint8)
    raw[0::2, 0::2] = 200            # R at even rows / even columns in RGGB
    out = image_to_bgr_or_gray(msg(raw, "bayer_rggb8"))
    assert out[2:6, 2:6, 2].mean() > 150 and out[2:6, 2:6, 0].mean() < 50


@pytest.mark.parametrize("data_type", [bytes, bytearray, "array", "list", "numpy"])
def test_data_containers(data_type):
    import array

    a = rng.integers(0, 256, (3, 4)).astype(np.uint8)
    m = msg(a, "mono8")
    raw = bytes(m.data)
    m.data = {"array": array.array("B", raw), "list": list(raw), "numpy": np.frombuffer(raw, np.uint8),
              bytes: raw, bytearray: bytearray(raw)}[data_type]
    np.testing.assert_array_equal(image_from_msg(m), a)


def test_real_rclpy_message():
    Image = pytest.importorskip("sensor_msgs.msg").Image
    a = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    m = Image(**{**make_image_fields(a, "bgr8"), "data": a.tobytes()})
    np.testing.assert_array_equal(image_from_msg(m), a)


def test_errors_name_the_problem():
    a = np.zeros((4, 4), np.uint8)
    with pytest.raises(ImageError, match="unsupported image encoding '32FC1'"):
        image_from_msg(msg(a, "32FC1"))
    m = msg(a, "mono8")
    m.height = 0
    with pytest.raises(ImageError, match="empty"):
        image_from_msg(m)
    m = msg(a, "mono8")
    m.step = 3
    with pytest.raises(ImageError, match="step 3"):
        image_from_msg(m)
    m = msg(a, "mono8")
    m.data = m.data[:-1]
    with pytest.raises(ImageError, match="15 bytes"):
        image_from_msg(m)
    m = msg(np.zeros((4, 4, 3), np.uint8), "bgr8")
    m.encoding = "bgr8"
    m.width = 5
    with pytest.raises(ImageError):
        image_from_msg(m)


def test_compressed_round_trip_and_errors():
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (32, 48, 3)).astype(np.uint8), (0, 0), 2)
    ok, png = cv2.imencode(".png", bgr)
    out = compressed_image_from_msg(types.SimpleNamespace(format="png", data=png.tobytes()))
    np.testing.assert_array_equal(out, bgr)
    ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 98])
    out = compressed_image_from_msg(types.SimpleNamespace(format="bgr8; jpeg compressed bgr8", data=jpg.ravel()))
    assert out.shape == bgr.shape and np.abs(out.astype(int) - bgr).mean() < 3
    with pytest.raises(ImageError, match="empty"):
        compressed_image_from_msg(types.SimpleNamespace(format="jpeg", data=b""))
    with pytest.raises(ImageError, match="could not be decoded"):
        compressed_image_from_msg(types.SimpleNamespace(format="jpeg", data=jpg.tobytes()[:40]))


def test_same_as_cv_bridge():
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge is not on PyPI; runs on a full ROS 2 install")
    Image = pytest.importorskip("sensor_msgs.msg").Image
    bridge = cv_bridge.CvBridge()
    for encoding, (c, dtype) in ENCODINGS.items():
        if encoding in ("uyvy", "yuyv"):
            continue
        a = rng.integers(0, 256, (6, 8, c) if c > 1 else (6, 8)).astype(dtype)
        m = Image(**{**make_image_fields(a, encoding)})
        np.testing.assert_array_equal(image_from_msg(m), bridge.imgmsg_to_cv2(m, "passthrough"))
    # The node's entry point gives the same grey/BGR arrays whichever converter it uses.
    from lift_localizer.bags.convert import decode_image, image_to_bgr_or_gray

    for encoding, (c, dtype) in ENCODINGS.items():
        a = rng.integers(0, 256, (6, 8, c) if c > 1 else (6, 8)).astype(dtype)
        m = Image(**{**make_image_fields(a, encoding)})
        np.testing.assert_array_equal(decode_image(m), image_to_bgr_or_gray(m))


def test_decode_image_refuses_what_it_cannot_read():
    from lift_localizer.bags.convert import decode_image

    a = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    with pytest.raises(ImageError, match="unsupported image encoding"):
        decode_image(types.SimpleNamespace(**{**make_image_fields(a, "bgr8"), "encoding": "32FC1"}))
    with pytest.raises(ImageError, match="could not be decoded"):
        decode_image(types.SimpleNamespace(format="jpeg", data=b"not a jpeg"), compressed=True)
    np.testing.assert_array_equal(decode_image(types.SimpleNamespace(**make_image_fields(a, "rgb8"))), a[:, :, ::-1])


def png_claiming(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG of ``width`` × ``height`` zeros, compressed as it streams (a few hundred kB for
    20000²); with ``rows``, its pixel data stops after that many rows (the header still claims all)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height if rows is None else rows):
        parts.append(z.compress(row))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def test_an_oversized_image_is_refused_from_its_header_before_decoding(monkeypatch):
    from lift_localizer.bags.convert import decode_image

    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))
    bomb = png_claiming(20000, 20000, rows=64)
    with pytest.raises(ImageError, match="400000000 pixels"):
        decode_image(types.SimpleNamespace(format="png", data=bomb), compressed=True)
    bomb = png_claiming(9000, 100, rows=8)
    with pytest.raises(ImageError, match="9000×100, larger than 8192"):
        decode_image(types.SimpleNamespace(format="png", data=bomb), compressed=True)
    assert not decoded, "the pixels were decoded before the size was checked"
    # A raw image is refused from its width and height, before any conversion.
    m = types.SimpleNamespace(height=9000, width=10, encoding="mono8", is_bigendian=0, step=10, data=b"\0" * 90000)
    with pytest.raises(ImageError, match="larger than 8192"):
        decode_image(m)
    # Below the bound it decodes; the bound is the caller's.
    small = png_claiming(300, 200)
    assert decode_image(types.SimpleNamespace(format="png", data=small), compressed=True).shape == (200, 300)
    with pytest.raises(ImageError, match="300×200, larger than 256"):
        decode_image(types.SimpleNamespace(format="png", data=small), compressed=True, max_side=256)
    assert len(decoded) == 1
