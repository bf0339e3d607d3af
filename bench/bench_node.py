"""Node overhead per frame and end-to-end latency, over real rclpy / DDS.

    bash tools/setup_ros.sh && source tools/ros_env.sh
    python bench/bench_node.py                     # 640x480 and 1280x720, 3 objects
    python bench/bench_node.py --frames 50 --objects 5

1. Overhead: the node runs with the tracker replaced by a stub that returns precomputed
   masks instantly, so everything the node does per frame except the model is timed:
   conversion of the incoming bgr8 image to RGB, tracks (bbox, centroid, area), the mono16
   label image and the overlay with their messages, publishing. Timed inside the worker
   (the frame worker's ``process``), with a subscriber on each output (so masks and overlay
   are really built),
   and without subscribers to masks/overlay (tracks only). Also per part, in process.
   End-to-end latency with the stub = publish -> tracks received by another node in this
   process (DDS transport, deserialisation, the callback and the worker hand-off included).
2. End-to-end latency with the real model: a tiny random SAM 2.1 at --image-size (default
   256) on --device, camera at a rate the model keeps up with.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import rclpy
import torch
from builtin_interfaces.msg import Time
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from common import sample_frame
from sam_ros.drawing import overlay_image
from sam_ros.masks import mask_stats
from sam_ros.model import SAM2, get_config, save_checkpoint
from sam_ros.msg import ObjectTrack, ObjectTrackArray
from sam_ros.ros import conversions
from sam_ros.ros.node import SamRosNode
from sam_ros.srv import Segment
from sam_ros.tracker import TrackResult, label_image

SUBSCRIBER = """
import rclpy
from sensor_msgs.msg import Image
rclpy.init()
n = rclpy.create_node("bench_outputs")
for t in ("/sam_ros/masks", "/sam_ros/overlay"):
    n.create_subscription(Image, t, lambda m: None, 10)
try:
    rclpy.spin(n)
except BaseException:
    pass
"""


class StubTracker:
    """Answers step() instantly with fixed masks (the node's overhead without the model)."""

    ring_size = 8

    def __init__(self, h, w, objects):
        self.results = {}
        for i in range(1, objects + 1):
            mask = np.zeros((h, w), bool)
            y0, x0 = (h * i) // (objects + 2), (w * i) // (objects + 2)
            mask[y0:y0 + h // 4, x0:x0 + w // 4] = True
            self.results[i] = TrackResult(i, 0, None, mask, mask.astype(np.float32), 2.0, True, 0.9)
        self.latest_frame = -1
        self.object_ids = list(self.results)

    def step(self, image, stamp=None):
        self.latest_frame += 1
        return self.results


def median_ms(xs):
    return statistics.median(xs) * 1e3 if xs else float("nan")


class Bench:
    def __init__(self, checkpoint, image_size, device):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = SamRosNode(context=self.ctx, parameter_overrides=[
            Parameter("checkpoint", value=checkpoint), Parameter("image_size", value=image_size),
            Parameter("device", value=device)])
        self.cli = rclpy.create_node("bench_client", context=self.ctx)
        self.ex = MultiThreadedExecutor(num_threads=4, context=self.ctx)
        self.ex.add_node(self.node)
        self.ex.add_node(self.cli)
        threading.Thread(target=self.ex.spin, daemon=True).start()
        self.pub = self.cli.create_publisher(Image, "image", qos_profile_sensor_data)
        self.sent, self.latency = {}, []
        self.cli.create_subscription(ObjectTrackArray, "/sam_ros/tracks", self._on_tracks, 50)
        self.extra_subs = []
        self.process_times = []
        worker = self.node.worker
        untimed = worker.process

        def timed(msg, received):
            t = time.perf_counter()
            untimed(msg, received)
            self.process_times.append(time.perf_counter() - t)
        worker.process = timed
        self.node.trigger_configure()
        assert self.node.session is not None, "configure failed"
        self.node.trigger_activate()
        self.seq = 0

    def _on_tracks(self, msg):
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if key in self.sent:
            self.latency.append(time.perf_counter() - self.sent[key])

    def subscribe_outputs(self, on):
        """Subscribers to ~/masks and ~/overlay in another process (as rviz would be), so
        that their deserialisation does not compete with the node for this process's GIL."""
        import subprocess
        for proc in self.extra_subs:
            proc.terminate()
            proc.wait(timeout=10)
        self.extra_subs = []
        if on:
            self.extra_subs = [subprocess.Popen([sys.executable, "-P", "-c", SUBSCRIBER])]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                    self.node.outputs.masks.get_subscription_count()
                    and self.node.outputs.overlay.get_subscription_count()):
                time.sleep(0.1)
        time.sleep(1.0)  # discovery

    def run(self, bgr, n, hz):
        self.latency.clear()
        self.process_times.clear()
        for _ in range(n):
            self.seq += 1
            msg = conversions.array_to_image(bgr, "bgr8",
                                           Header(stamp=Time(sec=self.seq), frame_id="cam"))
            self.sent[(self.seq, 0)] = time.perf_counter()
            self.pub.publish(msg)
            time.sleep(1.0 / hz)
        time.sleep(1.0)
        return median_ms(self.process_times), median_ms(self.latency), len(self.latency)

    def close(self):
        self.subscribe_outputs(False)
        self.node.trigger_deactivate()
        self.ex.shutdown(timeout_sec=5)
        rclpy.shutdown(context=self.ctx)


def parts(bgr, objects, repeats=30):
    """Per-part timings in process (ms, median)."""
    h, w = bgr.shape[:2]
    stub = StubTracker(h, w, objects)
    msg = conversions.array_to_image(bgr, "bgr8", Header(frame_id="cam"))
    rgb = conversions.image_to_rgb(msg)
    tracks = []
    for i, r in stub.results.items():
        area, bbox, c = mask_stats(r.mask)
        tracks.append(ObjectTrack(id=i, visible=True, bbox=bbox, centroid=list(c), area=area))
    labels = label_image((h, w), stub.results)

    out = {}
    for name, fn in [("convert bgr8->rgb", lambda: conversions.image_to_rgb(msg)),
                     (f"tracks ({objects} objects)",
                      lambda: [mask_stats(r.mask) for r in stub.results.values()]),
                     ("label image + msg", lambda: conversions.array_to_image(
                         label_image((h, w), stub.results), "mono16")),
                     ("overlay + msg", lambda: conversions.array_to_image(
                         overlay_image(rgb, labels, tracks), "rgb8"))]:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = median_ms(times)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--hz", type=float, default=15.0, help="camera rate of the stub runs")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-frames", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    ckpt = os.path.join(tmp, "tiny.pt")
    save_checkpoint(SAM2(get_config("sam2.1_hiera_t")), ckpt)
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"rmw {os.environ.get('RMW_IMPLEMENTATION', 'default (fastrtps)')}")
    b = Bench(ckpt, args.image_size, args.device)
    session = b.node.session
    try:
        real_tracker = session.tracker
        for w, h in ((640, 480), (1280, 720)):
            bgr = sample_frame(h, w)
            print(f"\n{w}x{h} bgr8, {args.objects} objects, stub model:")
            for name, ms in parts(bgr, args.objects).items():
                print(f"  {name:28s} {ms:7.2f} ms")
            with session.lock:
                session.tracker = StubTracker(h, w, args.objects)
            for outputs in (False, True):
                b.subscribe_outputs(outputs)
                proc, lat, n = b.run(bgr, args.frames, args.hz)
                what = "+ masks + overlay, subscribed" if outputs else "tracks only"
                print(f"  node overhead per frame ({what:24s}) {proc:7.2f} ms  "
                      f"| publish -> tracks {lat:7.2f} ms (median of {n})")
        b.subscribe_outputs(False)
        with session.lock:
            session.tracker = real_tracker
        for w, h in ((640, 480), (1280, 720)):
            bgr = sample_frame(h, w)
            b.run(bgr, 2, 1.0)  # warm-up
            session.reset()
            res = b.node._on_segment(Segment.Request(points=[w / 2, h / 2], labels=[1]),
                                     Segment.Response())
            assert res.success, res.message
            proc, lat, n = b.run(bgr, args.model_frames, 1.0)
            print(f"\nreal model (tiny, random weights, image_size {args.image_size}, "
                  f"{args.device}) {w}x{h}: publish -> tracks {lat:.1f} ms median of {n}; "
                  f"model {b.node.stats['model_ms']:.1f} ms, node overhead "
                  f"{b.node.stats['overhead_ms']:.2f} ms (last frame)")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
