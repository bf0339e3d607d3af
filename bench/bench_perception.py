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
"""

import os
import statistics
import time
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
from sam_ros.tracker.depth import CameraModel, measure_objects

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
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
