"""Messages <-> numpy: sensor_msgs/Image and CompressedImage without cv_bridge, and stamps.

The PyPI ``cv-bridge`` is an old ROS 1 port broken on numpy 2, so this module converts by
itself: rgb8, bgr8, rgba8, bgra8, mono8 (and mono16, 16UC1, 32FC1, 8UC1, 8UC3 as the
obvious layouts), any ``step`` (padded rows), ``is_bigendian`` for 16- and 32-bit data.
Where the distribution's real ``cv_bridge`` is importable, ``have_cv_bridge()`` says so and
the tests check both agree; the node uses these functions either way (they are faster: no
copies beyond the one conversion to RGB).

Only numpy and OpenCV are needed (no rclpy at import time; message objects are duck-typed
and created lazily).
"""

import array
import importlib

import numpy as np

try:  # OpenCV: colour conversion and JPEG/PNG decoding
    import cv2
except ImportError:  # pragma: no cover - opencv is a runtime dependency
    cv2 = None

# encoding -> (channels, numpy dtype)
ENCODINGS = {
    "rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8), "mono8": (1, np.uint8), "8UC1": (1, np.uint8),
    "8UC3": (3, np.uint8), "8UC4": (4, np.uint8), "mono16": (1, np.uint16),
    "16UC1": (1, np.uint16), "32FC1": (1, np.float32),
}
# encodings the node accepts as camera input (converted to RGB)
INPUT_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


class UnsupportedEncoding(ValueError):
    """The image's encoding (or layout) cannot be converted."""


def stamp_key(stamp):
    """A header stamp as a hashable ``(sec, nanosec)``, the key frames are known by."""
    return (int(stamp.sec), int(stamp.nanosec))


def stamp_text(stamp):
    """A stamp as ``sec.nanosec``, as people type it."""
    return f"{int(stamp.sec)}.{int(stamp.nanosec):09d}"


def have_cv_bridge():
    try:
        importlib.import_module("cv_bridge")
        return True
    except Exception:  # the PyPI one fails on import/usage with numpy 2
        return False


def image_to_array(msg):
    """The pixels of a sensor_msgs/Image as an H x W (x C) array in its own encoding
    (a view of the message data where possible; native byte order)."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise UnsupportedEncoding(
            f"unsupported image encoding {enc!r} (supported: {', '.join(INPUT_ENCODINGS)})")
    channels, dtype = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row = w * channels * itemsize
    if h == 0 or w == 0:
        raise UnsupportedEncoding(f"empty image ({w}x{h})")
    if step < row:
        raise UnsupportedEncoding(f"step {step} is smaller than a row of {w} {enc} pixels "
                                  f"({row} bytes)")
    flat = _as_bytes(msg.data)
    if flat.size < step * (h - 1) + row:
        raise UnsupportedEncoding(f"data holds {flat.size} bytes, a {w}x{h} {enc} image with "
                                  f"step {step} needs {step * (h - 1) + row}")
    rows = np.lib.stride_tricks.as_strided(flat, shape=(h, row), strides=(step, 1))
    big = bool(msg.is_bigendian)
    dt = np.dtype(dtype).newbyteorder(">" if big else "<") if itemsize > 1 else np.dtype(dtype)
    arr = rows.view(dt) if step == row else np.ascontiguousarray(rows).view(dt)
    if itemsize > 1 and dt.byteorder not in ("=", "|") and dt != np.dtype(dtype):
        arr = arr.astype(dtype)  # to native order
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def image_to_rgb(msg):
    """A sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) as a contiguous H x W x 3 uint8
    RGB array."""
    enc = msg.encoding
    if enc not in INPUT_ENCODINGS:
        raise UnsupportedEncoding(
            f"unsupported image encoding {enc!r} (supported: {', '.join(INPUT_ENCODINGS)})")
    arr = image_to_array(msg)
    if enc == "rgb8":
        return np.ascontiguousarray(arr)
    if enc == "bgr8":
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if enc == "rgba8":
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    if enc == "bgra8":
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2RGB)  # mono8


def compressed_to_rgb(msg):
    """A sensor_msgs/CompressedImage (jpeg, png, ...) as an H x W x 3 uint8 RGB array."""
    data = _as_bytes(msg.data)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UnsupportedEncoding(f"cannot decode compressed image (format {msg.format!r}, "
                                  f"{data.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def array_to_image(arr, encoding, header=None):
    """A numpy array as a sensor_msgs/Image (contiguous, little-endian, step = row)."""
    from sensor_msgs.msg import Image

    channels, dtype = ENCODINGS[encoding]
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if (arr.ndim == 2) != (channels == 1) or (channels > 1 and arr.shape[2] != channels):
        raise ValueError(f"array of shape {arr.shape} is not a {encoding} image")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.strides[0])
    msg.data = _to_array(arr)
    return msg


def array_to_compressed(rgb, fmt="jpeg", header=None, quality=90):
    from sensor_msgs.msg import CompressedImage

    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ext = ".png" if fmt == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError("encoding failed")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = _to_array(buf)
    return msg


def _as_bytes(data):
    """Message data (array.array('B') from rclpy, bytes, a list) as a uint8 array, no copy
    where the buffer protocol allows."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).ravel()


def _to_array(arr):
    """A numpy array's bytes as array.array('B'): rclpy's fast path for uint8[] fields
    (anything else is checked element by element in Python)."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out
