"""Depth to 3D in the node: depth images matched to colour frames by stamp, the colour
camera's model kept while its CameraInfo does not change, and each visible track measured
(``sam_ros.tracker.depth``).

Matching. The camera callback names each colour frame it hands to the worker (``expect``);
the nearest depth image to that frame's stamp, received before or after it, is kept for it
until the worker takes it (``take``), within ``depth_tolerance`` seconds. So a model that
takes seconds per frame still finds its frame's depth, and no more than a few depth images
are held (the last ``RECENT`` and one per colour frame waiting). A frame without depth, or
with depth that cannot be used, has no 3D; its 2D outputs are published as ever, the reason
is counted (``stats``: ``depth_matched``, ``depth_missing`` and ``depth_missing_<reason>``)
and logged, rate-limited.

Reasons: ``no_depth`` (no depth image within the tolerance: none received, the depth topic
stopped, or it lags), ``no_camera_info``, ``depth_encoding`` (neither 16UC1 / mono16 nor
32FC1), and the 3D step's own (``DepthError.reason``): ``depth_size`` (depth image of
another size than the colour camera), ``camera_size`` (camera_info of another size than the
colour image), ``intrinsics``, ``distortion`` (a model other than plumb_bob,
rational_polynomial or none). No rclpy here.
"""

import collections
import threading

from sam_ros.tracker.depth import CameraModel, DepthError, measure_objects

from .conversions import UnsupportedEncoding, image_to_array, stamp_key, stamp_text
from .session import stamp_seconds

RECENT = 4  # depth images kept whatever the colour frames
WAITING = 3  # colour frames a depth image is kept for (the one in hand, the one in the mailbox)
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class DepthInput:
    """The depth side of one activation: what the depth and camera_info subscriptions
    received, and the counters. ``warn(key, text)`` logs a warning, rate-limited per key."""

    def __init__(self, warn):
        self._warn = warn
        self._lock = threading.Lock()
        self._recent = collections.deque(maxlen=RECENT)  # (stamp s, depth message)
        # colour frame's stamp key -> (its stamp s, nearest (stamp s, depth message) or None)
        self._kept = collections.OrderedDict()
        self._info = None
        self._camera = None  # (the CameraInfo fields it was built from, CameraModel)
        self.stats = dict(depth_in=0, depth_matched=0, depth_missing=0)

    # executor threads

    def on_depth(self, msg):
        t = stamp_seconds(msg.header.stamp)
        with self._lock:
            self.stats["depth_in"] += 1
            self._recent.append((t, msg))
            for key, (wanted, best) in self._kept.items():
                if best is None or abs(t - wanted) < abs(best[0] - wanted):
                    self._kept[key] = (wanted, (t, msg))

    def on_camera_info(self, msg):
        self._info = msg

    def expect(self, stamp):
        """A colour frame of ``stamp`` is on its way to the worker: keep its depth."""
        wanted = stamp_seconds(stamp)
        with self._lock:
            self._kept[stamp_key(stamp)] = (wanted, _nearest(self._recent, wanted))
            while len(self._kept) > WAITING:
                self._kept.popitem(last=False)

    # the frame worker

    def measure(self, header, image_hw, results, tracks, tolerance, options, cloud_step=0,
                rectified=False):
        """Measure the visible ``tracks`` (ObjectTrack, their ``results`` by id) of the colour
        frame ``header`` (its image ``image_hw``) in its depth image: fills each one's 3D
        fields and returns ``{id: ObjectDepth}``, or None when the frame has no usable depth
        (counted and warned). ``options``: a ``DepthOptions``; ``cloud_step`` > 0 also
        collects each object's points for ~/points."""
        depth_msg = self._take(header.stamp, tolerance)
        if depth_msg is None:
            return None
        try:
            camera = self._camera_model(rectified)
            if (camera.height, camera.width) != tuple(image_hw):
                raise DepthError("camera_size", f"camera_info of {camera.width} x "
                                                f"{camera.height} but colour image of "
                                                f"{image_hw[1]} x {image_hw[0]}")
            depth = self._depth_array(depth_msg)
            shown = [o for o in tracks.objects if o.visible]
            measured = measure_objects(depth, camera, [results[o.id].mask for o in shown],
                                       [o.bbox for o in shown], options, cloud_step)
        except DepthError as e:
            return self._missing(e.reason, str(e))
        self.stats["depth_matched"] += 1
        for track, obj in zip(shown, measured):
            track.depth_share = float(obj.depth_share)
            if obj.available:
                track.has_3d = True
                track.position.x, track.position.y, track.position.z = map(float, obj.centre)
                track.size.x, track.size.y, track.size.z = map(float, obj.size)
        return {o.id: obj for o, obj in zip(shown, measured)}

    def _take(self, stamp, tolerance):
        """The depth message nearest the colour frame ``stamp``, if within ``tolerance`` s;
        else None, counted."""
        wanted = stamp_seconds(stamp)
        with self._lock:
            kept = self._kept.pop(stamp_key(stamp), (wanted, None))[1]
            best = _nearest(list(self._recent) + ([kept] if kept else []), wanted)
            newest = self._recent[-1][0] if self._recent else None
        if best is not None and abs(best[0] - wanted) <= tolerance:
            return best[1]
        if newest is None:
            why = "no depth image received yet"
        else:
            why = (f"the nearest depth image is {best[0] - wanted:+.3f} s away, the latest "
                   f"{newest - wanted:+.3f} s (depth_tolerance {tolerance} s)")
        return self._missing("no_depth", f"no_depth: no depth image for colour frame "
                                         f"{stamp_text(stamp)}: {why}")

    def _camera_model(self, rectified):
        """The colour camera's CameraModel, rebuilt only when its CameraInfo changes (a lens
        model costs a second to invert once)."""
        info = self._info
        if info is None:
            raise DepthError("no_camera_info", "no camera_info received yet (the colour "
                                               "camera's, on topic camera_info)")
        fields = (info.width, info.height, info.distortion_model, tuple(info.d),
                  tuple(info.k), tuple(info.p), rectified)
        if self._camera is None or self._camera[0] != fields:
            self._camera = None
            self._camera = (fields, CameraModel.from_camera_info(info, rectified=rectified))
        return self._camera[1]

    @staticmethod
    def _depth_array(msg):
        if msg.encoding not in DEPTH_ENCODINGS:
            raise DepthError("depth_encoding", f"depth image encoding {msg.encoding!r}: "
                                               f"need {', '.join(DEPTH_ENCODINGS)}")
        try:
            return image_to_array(msg)
        except UnsupportedEncoding as e:
            raise DepthError("depth_encoding", str(e)) from e

    def _missing(self, reason, text):
        """Count and warn about a frame without 3D (``text`` begins with the reason)."""
        key = f"depth_missing_{reason}"
        self.stats["depth_missing"] += 1
        self.stats[key] = self.stats.get(key, 0) + 1
        self._warn(reason, f"no 3D on this frame: {text} [{self.stats[key]} frames so far]; "
                           f"2D outputs go on")
        return None


def _nearest(entries, wanted):
    """Of ``(stamp s, msg)`` entries, the one nearest ``wanted``, or None."""
    return min(entries, key=lambda e: abs(e[0] - wanted), default=None)
