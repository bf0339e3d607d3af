"""Per-frame cost of the node's perception steps on synthetic frames: the 3D step
(``tracker.depth.measure_objects``: each tracked mask read in an aligned depth image) and
the detector matching (``tracker.association``: a frame observed into the track table,
expiry, and one message of detections matched), at 640 x 480 and 1280 x 720 with 1 and 10
tracks.

    .venv/bin/python bench/bench_perception.py

Objects are ellipses whose half-axes are an eighth and a tenth of the image height (about
20,000 px each at 720p, 9,000 at 480p; placed at random, they may overlap), each at its own
depth in front of a wall, with 5 % of the depth pixels missing (zeros) and 1 % speckle.
The 3D step is timed with the masks' boxes given (the node has them from
ObjectTrack), without them, on a 32FC1 image instead of 16UC1, and with a point cloud every
4 px; matching with one detection per track (boxes jittered by 3 px), and with 200 more
boxes from a flooding detector (``max_objects`` 16: the tracks fill up to it, the rest are
refused). Milliseconds per frame, median of 50 (after 3 warm-up runs); for the first, also
the thread's CPU time, which waiting for a core on a busy machine does not inflate.

With the built workspace sourced (``source tools/ros_env.sh; python bench/bench_perception.py``)
it also times the same frames the way the node's frame worker meets them (``sam_ros.ros``,
messages and all): the 3D step (``DepthInput.measure``: the depth message matched by stamp
and read, the cached camera model, every visible track measured inside its box and its
ObjectTrack filled), the matching (``TrackKeeper.update``: a Detection2DArray of one
detection per track read, the table synced with the session and observed, expiry, the
association, under the session's lock), and building the Detection2DArray and
Detection3DArray of the frame. The tracker behind the session is a stand-in that holds the
frame's results (no model runs: the matched tracks need no prompt).
"""

import importlib
import os
import statistics
import time
import types
from functools import partial

import cv2
import numpy as np

from common import timed
from sam_ros.masks import mask_stats
from sam_ros.tracker.association import (
    AssociationOptions,
    Detection,
    TrackTable,
    associate,
    expired,
)
from sam_ros.tracker.depth import CameraModel, DepthOptions, measure_objects

SIZES = ((640, 480), (1280, 720))
TRACKS = (1, 10)
REPEATS = 50


def scene(width, height, count, rng):
    """uint16 depth (mm), the objects' masks and their boxes."""
    depth = np.full((height, width), 3000, np.uint16)
    masks, boxes = [], []
    for i in range(count):
        centre = (int(width * (0.1 + 0.8 * rng.random())),
                  int(height * (0.15 + 0.7 * rng.random())))
        axes = (height // 8, height // 10)
        mask = cv2.ellipse(np.zeros((height, width), np.uint8), centre, axes, 0, 0, 360, 1, -1)
        mask = mask.astype(bool)
        depth[mask] = 1000 + 150 * i
        masks.append(mask)
        boxes.append(mask_stats(mask)[1])
    depth[rng.random(depth.shape) < 0.05] = 0
    speckle = rng.random(depth.shape) < 0.01
    depth[speckle] = rng.integers(200, 8000, int(speckle.sum()))
    return depth, masks, boxes


def camera(width, height):
    focal = 0.9 * width
    return CameraModel.from_matrix([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]],
                                   width, height)


def matching(boxes, rng, flood=0):
    """A table of one track per box, and the matching of one frame: observe, expire,
    associate."""
    table = TrackTable()
    options = AssociationOptions(max_objects=16)
    for i, box in enumerate(boxes):
        table.add(i + 1, box, 0.0, "cup")
    detections = [Detection(tuple(np.add(box, rng.uniform(-3, 3, 4))), "cup", 0.9)
                  for box in boxes]
    for i in range(flood):
        x, y = 40 * (i % 20), 40 * (i // 20)
        detections.append(Detection((x, y, x + 30, y + 30), "cup", 0.8))
    seen = {i + 1: box for i, box in enumerate(boxes)}

    def frame():
        table.observe(1.0, seen)
        expired(table.tracks, 1.0, 10.0)
        return associate(table.tracks, detections, 1.0, options)
    return frame


def cpu_time(fn, repeats):
    """Median CPU time of this thread in ``fn()``: what the step costs when the machine is
    busy with other work (wall time then includes waiting for a core)."""
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


class StillTracker:
    """What the node's TrackKeeper asks of a tracker, for objects that stay put."""

    def __init__(self, results, header):
        self.results = results
        self.ring_frames, self.ring_stamps = [0], [header]  # one frame held

    @property
    def object_ids(self):
        return list(self.results)

    def result(self, obj_id, frame=None):
        return self.results[obj_id]


def node_frame(width, height, count, rng):
    """The node's per-frame perception work on one synthetic frame: three callables (3D step,
    matching, vision messages), each as the frame worker runs it."""
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2D, Detection2DArray

    from sam_ros.ros import conversions, vision
    from sam_ros.ros.depth3d import DepthInput
    from sam_ros.ros.detector import TrackKeeper, detection_options
    from sam_ros.ros.outputs import track_message
    from sam_ros.ros.session import Session
    from sam_ros.tracker import TrackResult

    depth, masks, boxes = scene(width, height, count, rng)
    header = Header(frame_id="camera")
    header.stamp.sec = 1000
    results = {i + 1: TrackResult(i + 1, 0, header, mask, None, 5.0, True, 0.9)
               for i, mask in enumerate(masks)}
    labels = {obj_id: "cup" for obj_id in results}
    tracks = track_message(header, results, labels)
    cam = camera(width, height)
    info = types.SimpleNamespace(width=width, height=height, distortion_model="plumb_bob",
                                 d=[0.0] * 5, k=[cam.fx, 0, cam.cx, 0, cam.fy, cam.cy, 0, 0, 1],
                                 p=[cam.fx, 0, cam.cx, 0, 0, cam.fy, cam.cy, 0, 0, 0, 1, 0])
    inputs = DepthInput(lambda key, text: None)
    inputs.on_camera_info(info)
    inputs.on_depth(conversions.array_to_image(depth, "16UC1", header))
    options = DepthOptions()

    def three_d():
        inputs.expect(header.stamp)
        return inputs.measure(header, (height, width), results, tracks, 0.02, options)

    session = Session(StillTracker(results, header))
    session.labels.update(labels)
    keeper = TrackKeeper(lambda key, text: None)
    detections = []
    for box in boxes:
        x0, y0, x1, y1 = np.add(box, rng.uniform(-3, 3, 4))
        det = Detection2D()
        det.bbox.center.position.x, det.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
        det.bbox.size_x, det.bbox.size_y = x1 - x0, y1 - y0
        detections.append(det)
    message = Detection2DArray(header=header, detections=detections)
    match_options = detection_options(0.5, "", 16)

    def matching_step():
        keeper.on_detections(message)
        return keeper.update(session, header, results, tracks, match_options, 10.0)

    def messages():
        return vision.detections_2d(tracks), vision.detections_3d(tracks)
    return three_d, matching_step, messages


def node_level(rng):
    try:  # sam_ros.msg is generated: only in the built workspace
        for module in ("sam_ros.msg", "vision_msgs.msg"):
            importlib.import_module(module)
    except ImportError as e:
        print(f"\n(node level skipped: {e}; source tools/ros_env.sh first)")
        return
    print("\nIn the node's frame worker (sam_ros.ros; detections with no class, one per track):")
    print("| frame | tracks | 3D step | (its CPU time) | matching | (its CPU time) "
          "| vision msgs | all three |")
    print("|---|---|---|---|---|---|---|---|")
    for width, height in SIZES:
        for count in TRACKS:
            three_d, matching_step, messages = node_frame(width, height, count, rng)
            assert three_d() is not None and matching_step() is None
            ms = [timed(three_d, REPEATS, warmup=3)[0], cpu_time(three_d, REPEATS),
                  timed(matching_step, REPEATS, warmup=3)[0], cpu_time(matching_step, REPEATS),
                  timed(messages, REPEATS, warmup=3)[0]]
            ms.append(ms[0] + ms[2] + ms[4])
            print(f"| {width} x {height} | {count} | "
                  + " | ".join(f"{t * 1e3:.2f}" for t in ms) + " |")


def main():
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall times "
          f"include waiting for a core when it is above that)")
    print("| frame | tracks | 3D, boxes given | (its CPU time) | 3D, boxes found | 3D, 32FC1 "
          "| 3D + cloud 4 px | matching | matching, 200 boxes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for width, height in SIZES:
        cam = camera(width, height)
        for count in TRACKS:
            depth, masks, boxes = scene(width, height, count, rng)
            metres = np.where(depth > 0, depth / 1000.0, np.nan).astype(np.float32)
            given = partial(measure_objects, depth, cam, masks, boxes)
            ms = [timed(fn, REPEATS, warmup=3)[0] * 1e3 for fn in (
                given,
                partial(measure_objects, depth, cam, masks),
                partial(measure_objects, metres, cam, masks, boxes),
                partial(measure_objects, depth, cam, masks, boxes, cloud_step=4),
                matching(boxes, rng),
                matching(boxes, rng, flood=200))]
            ms.insert(1, cpu_time(given, REPEATS) * 1e3)
            print(f"| {width} x {height} | {count} | " + " | ".join(f"{t:.2f}" for t in ms)
                  + " |")
    node_level(rng)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
