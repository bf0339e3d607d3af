"""A camera without a camera: play a video file, a folder of images or a V4L2 camera as a ROS 2
image stream (``ros2 run sam_ros play`` or ``python -m sam_ros.ros.play``; --help says how).

Frames go out as sensor_msgs/Image (rgb8, bgr8) on ``image`` or CompressedImage (jpeg, png) on
``image/compressed``, each stamped with the ROS clock when it is published, with a CameraInfo
of the same header on ``camera_info`` when a calibration (or --fov) is given. Files are played
on an absolute schedule (frame k at t0 + k / rate): a frame that is late goes out as soon as
it is ready without pushing the others back, and frames whose slots are over before the
player gets to them are skipped (not even decoded) and counted, so that the stream keeps its
rate and its timing, as a camera would.

A program can drive it too: ``open_source`` (or ``ArraySource`` for frames in memory), then a
``Player`` on one of its nodes, then ``Player.step()`` frame by frame or ``Player.run()``.
Frames are H x W x 3 uint8 RGB throughout, as everywhere in sam_ros.
"""

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sam_ros.ros.conversions import array_to_compressed, array_to_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RAW_ENCODINGS = ("rgb8", "bgr8")
COMPRESSED_FORMATS = ("jpeg", "png")
FOLDER_RATE = 10.0  # Hz: a folder of images has no frame rate of its own
CALIBRATION_ASPECT_TOLERANCE = 0.01  # relative
# A camera frame that comes up to this fraction of a period before its slot is taken for it:
# a camera as fast as the rate, with jitter, would otherwise lose every frame that is early.
LIVE_EARLY = 0.25
FASTDDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


class SourceError(Exception):
    """A source that cannot be opened or read, with a message for the user that names it."""


class CalibrationError(Exception):
    """A calibration file that cannot be used, with a message that names it and what is wrong."""


# ------------------------------------------------------------------ sources
# A source has: description (str), size ((width, height) of its frames), fps (its own frame
# rate, or None), live (a camera: frames come when they come, no rewind), read() (the next
# frame as RGB, None at its end), skip() (past the next frame without decoding it where
# possible; False at its end), rewind() (back to where it started) and close().


class CaptureSource:
    """What OpenCV's VideoCapture opens: a video file, or a camera (live). ``capture`` is
    called as cv2.VideoCapture is, with ``target`` (a path or a device index) and ``api`` (an
    API preference); ``name`` is what the user called it (default: ``target``)."""

    def __init__(self, target, *, live, start=0, capture=cv2.VideoCapture, api=cv2.CAP_ANY,
                 name=None):
        self.target, self.live, self.start = target, live, start
        self.name = target if name is None else name
        self._capture, self._api = capture, api
        self._cap = self._open()
        width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (width, height)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else None
        rate = f"{self.fps:g} fps" if self.fps else "no frame rate given"
        if live:
            self.description = f"camera {self.name} ({width}x{height}, {rate})"
        else:
            count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.description = f"video file {self.name} ({width}x{height}, {rate}, {count} frames)"

    def _open(self):
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # we say why
        try:
            cap = self._capture(self.target, self._api)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not cap.isOpened():
            raise SourceError(self._why_not_opened())
        for _ in range(self.start):
            if not cap.grab():
                cap.release()
                what = "camera" if self.live else "video file"
                raise SourceError(f"--start {self.start} is past the end of {what} {self.name}")
        return cap

    def _why_not_opened(self):
        if not self.live:
            return (f"cannot open video file {self.name}: OpenCV cannot decode it (not a video, "
                    "truncated, or a codec this OpenCV build lacks)")
        device = self.name if str(self.name).startswith("/dev/") else f"/dev/video{self.target}"
        if not os.path.exists(device):
            return f"cannot open camera {self.name}: no such device ({device} does not exist)"
        if not os.access(device, os.R_OK | os.W_OK):
            return (f"cannot open camera {self.name}: permission denied on {device} (is this "
                    "user in the 'video' group?)")
        return (f"cannot open camera {self.name}: OpenCV could not open {device} (busy, or "
                "not a video capture device)")

    def read(self):
        ok, bgr = self._cap.read()
        if not ok:
            if self.live:  # a camera has no end
                raise SourceError(f"camera {self.name} stopped delivering frames")
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def skip(self):
        return bool(self._cap.grab())

    def rewind(self):
        if self.live:
            raise SourceError(f"camera {self.target} cannot be rewound")
        self._cap.release()
        self._cap = self._open()

    def close(self):
        self._cap.release()


class ImageFolder:
    """The .jpg/.png images of a folder in the order of their names (zero-padded numbers sort
    as they count), or a single image."""

    live = False
    fps = None

    def __init__(self, path, *, start=0):
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise SourceError(f"no .jpg or .png images in folder {path}")
            if start >= len(files):
                raise SourceError(f"--start {start} is past the end of folder {path} "
                                  f"({len(files)} images)")
        else:
            files = [path]
            if start:
                raise SourceError(f"--start {start} is past the end of image {path}")
        self.files, self.start, self.position = files, start, start
        height, width = self._load(files[start]).shape[:2]
        self.size = (width, height)
        self.description = (f"folder {path} ({len(files)} images, {width}x{height})"
                            if path.is_dir() else f"image {path} ({width}x{height})")

    @staticmethod
    def _load(file):
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SourceError(f"cannot read image {file}")
        return bgr

    def read(self):
        if self.position >= len(self.files):
            return None
        bgr = self._load(self.files[self.position])
        self.position += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def skip(self):
        if self.position >= len(self.files):
            return False
        self.position += 1
        return True

    def rewind(self):
        self.position = self.start

    def close(self):
        pass


class ArraySource:
    """Frames in memory (a sequence of H x W x 3 uint8 RGB arrays, or a T x H x W x 3 array),
    for programs and tests."""

    live = False
    start = 0

    def __init__(self, frames, *, fps=None, name="frames in memory"):
        if len(frames) == 0:
            raise SourceError(f"{name}: no frames")
        self.frames, self.fps, self.position = frames, fps, 0
        height, width = np.asarray(frames[0]).shape[:2]
        self.size = (width, height)
        self.description = f"{name} ({len(frames)} frames, {width}x{height})"

    def read(self):
        if self.position >= len(self.frames):
            return None
        self.position += 1
        return np.asarray(self.frames[self.position - 1])

    def skip(self):
        if self.position >= len(self.frames):
            return False
        self.position += 1
        return True

    def rewind(self):
        self.position = 0

    def close(self):
        pass


def camera_target(spec):
    """What to give VideoCapture for a camera named by ``spec`` (a device index, "0", or a
    path under /dev/, e.g. a /dev/v4l/by-id/ link): the index N of a /dev/videoN, else the
    path; None when ``spec`` does not name a camera."""
    if isinstance(spec, int) or spec.isdigit():
        return int(spec)
    if not spec.startswith("/dev/"):
        return None
    device = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(spec))
    return int(device.group(1)) if device else spec


def open_source(spec, *, start=0, capture=cv2.VideoCapture):
    """The source that ``spec`` names: a camera (device index or /dev/videoN), a folder of
    images, an image, or a video file. ``capture`` opens cameras and videos (cv2.VideoCapture;
    a stand-in in tests). Raises SourceError, naming ``spec``, when it cannot be opened."""
    if start < 0:
        raise SourceError(f"--start must be >= 0 (got {start})")
    device = camera_target(spec)
    if device is not None:
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        return CaptureSource(device, live=True, start=start, capture=capture, api=api, name=spec)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"cannot open {spec}: no such file or directory")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolder(path, start=start)
    if not os.access(path, os.R_OK):
        raise SourceError(f"cannot open video file {spec}: permission denied")
    return CaptureSource(str(path), live=False, start=start, capture=capture)


# ------------------------------------------------------------------ camera info

def _matrix(data, key, rows, cols, path):
    """The row-major numbers of calibration entry ``key`` ({rows, cols, data}), checked."""
    entry = data.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), list):
        raise CalibrationError(f"calibration {path}: '{key}' is missing or has no 'data' list")
    values = entry["data"]
    if cols is None:  # distortion: any number of coefficients
        cols = len(values)
    shape = (entry.get("rows", rows), entry.get("cols", cols))
    if shape != (rows, cols) or len(values) != rows * cols:
        raise CalibrationError(f"calibration {path}: '{key}' must be {rows}x{cols}, got rows "
                               f"{entry.get('rows')}, cols {entry.get('cols')} and "
                               f"{len(values)} numbers")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise CalibrationError(f"calibration {path}: '{key}' holds a value that is not a number")


def load_camera_info(path):
    """A sensor_msgs/CameraInfo (no header yet) from a calibration YAML as camera_calibration
    writes and camera_info_manager reads it."""
    import yaml
    from sensor_msgs.msg import CameraInfo

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise CalibrationError(f"cannot read calibration {path}: {e.strerror}")
    except yaml.YAMLError as e:
        raise CalibrationError(f"calibration {path} is not valid YAML: {e}")
    if not isinstance(data, dict):
        raise CalibrationError(f"calibration {path} is not a camera calibration (a YAML mapping)")
    info = CameraInfo()
    for key in ("image_width", "image_height"):
        if not isinstance(data.get(key), int) or data[key] <= 0:
            raise CalibrationError(f"calibration {path}: '{key}' must be a positive integer")
    if not isinstance(data.get("distortion_model"), str):
        raise CalibrationError(f"calibration {path}: 'distortion_model' is missing")
    info.width, info.height = data["image_width"], data["image_height"]
    info.distortion_model = data["distortion_model"]
    info.d = _matrix(data, "distortion_coefficients", 1, None, path)
    info.k = _matrix(data, "camera_matrix", 3, 3, path)
    info.r = _matrix(data, "rectification_matrix", 3, 3, path)
    info.p = _matrix(data, "projection_matrix", 3, 4, path)
    return info


def scale_camera_info(info, width, height):
    """``info`` for its images resized to width x height (D and R do not change).

    Pixel centres are at integer coordinates, as in OpenCV's resize: a point at x in the
    calibrated image is at (x + 0.5) * sx - 0.5 in the resized one, so K and P are multiplied
    on the left by that map. (image_proc's resize scales cx by sx alone, half a pixel step off.)
    """
    from sensor_msgs.msg import CameraInfo

    sx, sy = width / info.width, height / info.height
    pixel_map = np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])
    out = CameraInfo()
    out.width, out.height = width, height
    out.distortion_model, out.d, out.r = info.distortion_model, list(info.d), list(info.r)
    out.k = (pixel_map @ np.reshape(info.k, (3, 3))).ravel().tolist()
    out.p = (pixel_map @ np.reshape(info.p, (3, 4))).ravel().tolist()
    return out


def pinhole_camera_info(width, height, hfov_deg):
    """An ideal pinhole camera (square pixels, centred, no distortion) whose width x height
    image spans ``hfov_deg`` degrees horizontally, edge to edge."""
    from sensor_msgs.msg import CameraInfo

    if not 0 < hfov_deg < 180:
        raise CalibrationError(f"--fov must be between 0 and 180 degrees (got {hfov_deg:g})")
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    info = CameraInfo()
    info.width, info.height = width, height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def fit_calibration(info, source_size, size, path):
    """The calibration ``info`` scaled to the published size; its aspect must be the source's
    (a calibration of another sensor mode or a crop cannot be scaled)."""
    (sw, sh), (cw, ch) = source_size, (info.width, info.height)
    if abs((cw / ch) / (sw / sh) - 1) > CALIBRATION_ASPECT_TOLERANCE:
        raise CalibrationError(f"calibration {path} is for {cw}x{ch} images, the source's are "
                               f"{sw}x{sh}: another aspect ratio, so it cannot be scaled to them")
    return scale_camera_info(info, *size)


# ------------------------------------------------------------------ player

def output_size(size, width=None, height=None, scale=None):
    """The published size for a source of ``size``: width and height as given, one of them
    with the other keeping the aspect ratio, or scaled; by default the source's own."""
    w, h = size
    if scale is not None:
        return max(1, round(w * scale)), max(1, round(h * scale))
    if width and height:
        return width, height
    if width:
        return width, max(1, round(h * width / w))
    if height:
        return max(1, round(w * height / h)), height
    return w, h


def reliable_qos(depth=10):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class Frame:
    """A published frame: its position in the source, the pixels as published, the header."""
    index: int
    rgb: np.ndarray
    header: object  # std_msgs/Header


@dataclass
class PlayStats:
    published: int = 0
    skipped: int = 0  # frames (or, from a camera, rate slots) the player could not keep up with
    passes: int = 1
    first: float = None  # clock time of the first publication
    last: float = None

    def rate(self):
        span = (self.last or 0) - (self.first or 0)
        return (self.published - 1) / span if self.published > 1 and span > 0 else None


class Player:
    """Publishes a source's frames on ``node``: Image (``encoding`` rgb8 or bgr8) on
    ``image_topic`` or CompressedImage (jpeg or png) on ``image_topic``/compressed, resized
    to ``size`` (width, height) when given, with ``camera_info`` (a CameraInfo of the
    published size) on ``info_topic`` under the same header. ``frames`` limits each pass over
    the source; ``loop`` starts it again at its end.

    ``step()`` publishes the next frame now; ``run()`` publishes the rest at a rate.
    ``on_publish(index, header)``, if given, is called as each frame goes out (a program that
    measures what comes back for each frame)."""

    def __init__(self, node, source, *, encoding="rgb8", size=None, frame_id="camera",
                 camera_info=None, frames=None, loop=False, qos=None, image_topic="image",
                 info_topic="camera_info", jpeg_quality=90, on_publish=None):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        if encoding not in RAW_ENCODINGS + COMPRESSED_FORMATS:
            raise ValueError(f"encoding must be one of "
                             f"{', '.join(RAW_ENCODINGS + COMPRESSED_FORMATS)} (got {encoding!r})")
        if frames is not None and frames < 1:
            raise ValueError(f"frames must be >= 1 (got {frames})")
        if loop and source.live:
            raise ValueError(f"{source.description} is live: it cannot loop")
        self.node, self.source, self.encoding = node, source, encoding
        self.size = tuple(size) if size else tuple(source.size)
        if camera_info is not None and (camera_info.width, camera_info.height) != self.size:
            raise ValueError(f"camera_info is for {camera_info.width}x{camera_info.height}, "
                             f"the published frames are {self.size[0]}x{self.size[1]}")
        self.frame_id, self.camera_info, self.frames, self.loop = (
            frame_id, camera_info, frames, loop)
        self.jpeg_quality, self.on_publish = jpeg_quality, on_publish
        qos = qos or qos_profile_sensor_data
        if encoding in RAW_ENCODINGS:
            self.image_pub = node.create_publisher(Image, image_topic, qos)
        else:
            self.image_pub = node.create_publisher(CompressedImage, f"{image_topic}/compressed",
                                                   qos)
        self.info_pub = (node.create_publisher(CameraInfo, info_topic, qos)
                         if camera_info is not None else None)
        self.stats = PlayStats()
        self._taken = 0  # frames taken from the source in this pass
        self._warned_size = False

    # -- frames

    @property
    def index(self):
        """The position in the source of the last frame taken."""
        return self.source.start + self._taken - 1

    def _take(self, decode=True):
        """The next frame of this pass (decoded, or True when only skipped past), wrapping
        around when looping; None at the end (or when a pass yields nothing)."""
        for _ in range(2):
            if self.frames is None or self._taken < self.frames:
                got = self.source.read() if decode else self.source.skip()
                if got is not None and got is not False:
                    self._taken += 1
                    return got
            if not self.loop or self._taken == 0:
                return None
            self.source.rewind()
            self._taken = 0
            self.stats.passes += 1
        return None

    def _fit(self, rgb):
        """The frame at the published size."""
        height, width = rgb.shape[:2]
        if (width, height) == self.size:
            return rgb
        if (width, height) != tuple(self.source.size) and not self._warned_size:
            self._warned_size = True
            self.node.get_logger().warning(
                f"frame {self.index} is {width}x{height}, not {self.source.size[0]}x"
                f"{self.source.size[1]} as the first: resized to {self.size[0]}x{self.size[1]}")
        shrink = width * height > self.size[0] * self.size[1]
        return cv2.resize(rgb, self.size,
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def _message(self, rgb):
        if self.encoding == "rgb8":
            return array_to_image(rgb, "rgb8")
        if self.encoding == "bgr8":
            return array_to_image(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "bgr8")
        return array_to_compressed(rgb, self.encoding, quality=self.jpeg_quality)

    def publish(self, msg, now=None):
        """Stamp ``msg`` (and the camera info) with the ROS clock now and publish them; the
        header. ``now`` is the schedule's clock reading, for the statistics."""
        from std_msgs.msg import Header

        header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id=self.frame_id)
        msg.header = header
        if self.on_publish is not None:
            self.on_publish(self.index, header)
        self.image_pub.publish(msg)
        if self.info_pub is not None:
            self.camera_info.header = header
            self.info_pub.publish(self.camera_info)
        now = time.monotonic() if now is None else now
        self.stats.first = now if self.stats.first is None else self.stats.first
        self.stats.last = now
        self.stats.published += 1
        return header

    def step(self):
        """Publish the next frame now: a Frame, or None at the end of the source."""
        rgb = self._take()
        if rgb is None:
            return None
        rgb = self._fit(rgb)
        return Frame(self.index, rgb, self.publish(self._message(rgb)))

    def wait_for_subscriber(self, stop=None, timeout=None):
        """Wait until the image publisher is matched with a subscriber (so that the first
        frames are not sent to no one); False when stopped or timed out first."""
        stop = stop or threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.image_pub.get_subscription_count() == 0:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if stop.wait(0.05):
                return False
        return True

    # -- paced playback

    def run(self, rate=None, stop=None, clock=time.monotonic):
        """Publish the rest of the source, until its end or ``stop`` (an Event) is set.

        Without a rate, each frame as soon as it is read. With one, a file's frame k goes out
        at t0 + k / rate on ``clock`` (t0: when the first is ready), or as soon as it is ready
        when late; frames whose slots are over before they are read are skipped. A camera's
        frames are read as it delivers them, and the first of each slot (or up to LIVE_EARLY of
        a period before it) is published; slots that get none are counted as skipped. Returns
        the PlayStats."""
        stop = stop or threading.Event()
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 (got {rate})")
        if rate is None:
            while not stop.is_set() and self.step() is not None:
                pass
        elif self.source.live:
            self._run_live(1.0 / rate, stop, clock)
        else:
            self._run_scheduled(1.0 / rate, stop, clock)
        return self.stats

    def _fell_behind(self, count):
        self.stats.skipped += count
        self.node.get_logger().warning(
            f"could not keep up: {self.stats.skipped} frames skipped so far",
            throttle_duration_sec=5.0)

    def _run_scheduled(self, period, stop, clock):
        t0, slot = None, 0  # slot: the next one to fill
        while not stop.is_set():
            if t0 is not None:
                behind = math.floor((clock() - t0) / period) - slot
                for _ in range(behind):  # frames whose slots are over: not even decoded
                    if self._take(decode=False) is None:
                        return
                    self._fell_behind(1)
                    slot += 1
            rgb = self._take()
            if rgb is None:
                return
            msg = self._message(self._fit(rgb))
            now = clock()
            t0 = now if t0 is None else t0
            due = t0 + slot * period
            slot += 1
            if now < due and stop.wait(due - now):
                return
            self.publish(msg, clock())

    def _run_live(self, period, stop, clock):
        t0, slot = None, 0
        while not stop.is_set():
            rgb = self._take()
            if rgb is None:
                return
            now = clock()
            t0 = now if t0 is None else t0
            current = math.floor((now - t0) / period + LIVE_EARLY)
            if current < slot:  # the camera is faster than the rate: not this one
                continue
            if current > slot:
                self._fell_behind(current - slot)
            slot = current + 1
            self.publish(self._message(self._fit(rgb)), now)

    def close(self):
        """Wait (briefly) for reliable subscribers to acknowledge, release the publishers
        and the source."""
        from rclpy.duration import Duration

        for pub in (self.image_pub, self.info_pub):
            if pub is not None:
                pub.wait_for_all_acked(Duration(seconds=1))
                self.node.destroy_publisher(pub)
        self.source.close()


# ------------------------------------------------------------------ command line

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="play", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Publish a video file, a folder of images or a V4L2 camera as a ROS 2 camera:
sensor_msgs/Image on 'image' (or CompressedImage on 'image/compressed'),
stamped with the ROS clock when published, and sensor_msgs/CameraInfo with the
same header on 'camera_info' when given --calibration or --fov.
Remap the topics after --ros-args, e.g.
  play clip.mp4 --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info
(compressed: -r image/compressed:=/camera/image_raw/compressed).""",
        epilog="""\
Large raw frames: the player uses sam_ros's Fast DDS profile for large images
(share/sam_ros/config/fastdds_large_images.xml) unless FASTDDS_DEFAULT_PROFILES_FILE
names another; without it most best-effort frames over 512 KiB are lost.
Exit status: 0 at the end of the source or on Ctrl-C; 2 when the source or the
calibration cannot be used.""")
    ap.add_argument("source", help="a video file; a folder of .jpg/.png images (played in the "
                    "order of their names) or one image; a camera: a device index (0), "
                    "/dev/videoN or a link to one (/dev/v4l/by-id/...)")
    ap.add_argument("--rate", type=float, help="frames per second (default: a video's own "
                    f"rate; {FOLDER_RATE:g} for images; as fast as it delivers for a camera)")
    ap.add_argument("--encoding", choices=RAW_ENCODINGS + COMPRESSED_FORMATS, default="rgb8",
                    help="rgb8 or bgr8: Image on 'image'; jpeg or png: CompressedImage on "
                         "'image/compressed' (default rgb8)")
    ap.add_argument("--jpeg-quality", type=int, default=90, metavar="Q", help="0-100 (default 90)")
    ap.add_argument("--width", type=int, help="published width (alone: the height keeps the "
                    "aspect ratio)")
    ap.add_argument("--height", type=int, help="published height (alone: the width keeps the "
                    "aspect ratio)")
    ap.add_argument("--scale", type=float, help="published size as a factor of the source's")
    ap.add_argument("--loop", action="store_true", help="start again at the end (not cameras)")
    ap.add_argument("--start", type=int, default=0, metavar="N",
                    help="begin at frame N of the source, counting from 0 (default 0)")
    ap.add_argument("--frames", type=int, metavar="N",
                    help="play N frames from --start (a camera: read N frames), then stop or "
                         "loop")
    ap.add_argument("--frame-id", default="camera", help="header.frame_id (default 'camera')")
    info = ap.add_mutually_exclusive_group()
    info.add_argument("--calibration", metavar="YAML", help="publish this camera calibration "
                      "(camera_calibration / camera_info_manager format), scaled to the "
                      "published size")
    info.add_argument("--fov", type=float, metavar="DEG", help="publish an ideal pinhole "
                      "CameraInfo with this horizontal field of view")
    ap.add_argument("--reliable", action="store_true", help="reliable QoS (for recording); "
                    "default: sensor data QoS (best effort)")
    ap.add_argument("--wait", action="store_true",
                    help="start only once the image topic has a subscriber")
    args = ap.parse_args(argv)
    if args.scale is not None and (args.width or args.height):
        ap.error("--scale and --width/--height exclude each other")
    for name in ("width", "height", "scale", "rate", "frames"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            ap.error(f"--{name} must be > 0 (got {value:g})")
    if args.start < 0:
        ap.error(f"--start must be >= 0 (got {args.start})")
    if not 0 <= args.jpeg_quality <= 100:
        ap.error(f"--jpeg-quality must be 0-100 (got {args.jpeg_quality})")
    return args


def default_rate(source):
    """Frames per second without --rate: a video's own, FOLDER_RATE for images, None (as it
    delivers) for a camera."""
    if source.live:
        return None
    if isinstance(source, ImageFolder):
        return FOLDER_RATE
    if source.fps is None:
        raise SourceError(f"{source.description}: give --rate")
    return source.fps


def prepare(args):
    """The source, the published size, the rate and the CameraInfo (or None) that ``args``
    ask for. Raises SourceError or CalibrationError."""
    source = open_source(args.source, start=args.start)
    try:
        if args.loop and source.live:
            raise SourceError(f"--loop: {source.description} cannot loop")
        size = output_size(source.size, args.width, args.height, args.scale)
        rate = args.rate or default_rate(source)
        info = None
        if args.calibration:
            info = fit_calibration(load_camera_info(args.calibration), source.size, size,
                                   args.calibration)
        elif args.fov is not None:
            info = pinhole_camera_info(*size, args.fov)
    except (SourceError, CalibrationError):
        source.close()
        raise
    return source, size, rate, info


def main(argv=None):
    """The command line (ROS arguments after --ros-args); the exit status."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(remove_ros_args(["play", *argv])[1:])
    try:
        source, size, rate, info = prepare(args)
    except (SourceError, CalibrationError) as e:
        print(f"play: {e}", file=sys.stderr)
        return 2

    # a context of its own: main() can run in a process that uses rclpy for other things
    context = rclpy.Context()
    with large_frames_profile() as profile:
        rclpy.init(args=["play", *argv], context=context,
                   signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("play", context=context)
    executor = SingleThreadedExecutor(context=context)  # parameters, use_sim_time's /clock
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    player = Player(node, source, encoding=args.encoding, size=size, frame_id=args.frame_id,
                    camera_info=info, frames=args.frames, loop=args.loop,
                    qos=reliable_qos() if args.reliable else None,
                    jpeg_quality=args.jpeg_quality)
    log = node.get_logger()
    try:
        pace = f"{rate:g} Hz" if rate else "as fast as it delivers"
        log.info(f"{source.description} -> {player.image_pub.topic_name} ({args.encoding} "
                 f"{size[0]}x{size[1]}) at {pace}{', looping' if args.loop else ''}, frame_id "
                 f"'{args.frame_id}', {'reliable' if args.reliable else 'best effort'}"
                 + (f"; {player.info_pub.topic_name} from "
                    f"{args.calibration or f'--fov {args.fov:g}'}" if info else ""))
        if profile:
            log.info(f"Fast DDS profile {profile} (large frames through shared memory; set "
                     f"{FASTDDS_PROFILE_VARIABLE} to use another)")
        if args.wait:
            log.info(f"waiting for a subscriber to {player.image_pub.topic_name}")
            player.wait_for_subscriber(stop)
        try:
            stats = player.run(rate, stop)
        except SourceError as e:
            print(f"play: {e}", file=sys.stderr)
            return 2
        achieved = stats.rate()
        log.info(f"{'stopped' if stop.is_set() else 'end of source'}: published "
                 f"{stats.published} frames"
                 + (f" at {achieved:.2f} Hz" if achieved else "")
                 + (f" in {stats.passes} passes" if stats.passes > 1 else "")
                 + (f"; {stats.skipped} skipped: could not keep up" if stats.skipped else ""))
        return 0
    finally:
        player.close()
        restore()
        executor.shutdown()
        spinner.join()
        node.destroy_node()
        context.try_shutdown()


@contextlib.contextmanager
def large_frames_profile():
    """Within: FASTDDS_DEFAULT_PROFILES_FILE names sam_ros's Fast DDS profile for large
    images, unless a profile is already set (then, or where sam_ros is not installed, nothing
    changes). The player writes the frames, and the writer's shared-memory segment decides
    whether a large best-effort frame arrives (1 of 30 720p frames did without it, 30 with).
    Yields the profile it set, or None."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    if any(os.environ.get(v) for v in (FASTDDS_PROFILE_VARIABLE, "FASTRTPS_DEFAULT_PROFILES_FILE")):
        yield None
        return
    try:
        profile = os.path.join(get_package_share_directory("sam_ros"), "config",
                               "fastdds_large_images.xml")
    except PackageNotFoundError:
        profile = None
    if profile is None or not os.path.isfile(profile):
        yield None
        return
    os.environ[FASTDDS_PROFILE_VARIABLE] = profile  # read when the participant is created
    try:
        yield profile
    finally:
        del os.environ[FASTDDS_PROFILE_VARIABLE]


def _stop_on_signals(stop):
    """Ctrl-C (and SIGTERM, as from ros2 launch) set ``stop``; a second Ctrl-C interrupts.
    Only the main thread can install handlers; elsewhere nothing changes. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in previous:
        signal.signal(sig, handler)

    def restore():
        for sig, old in previous.items():
            signal.signal(sig, old)
    return restore


if __name__ == "__main__":
    sys.exit(main())
