"""End to end: the sam_ros node tracks an object in a played-back camera stream, and is scored.

    bash tools/demo.sh                                   # set-up and build included
    python -P -m sam_ros.ros.demo --out out/demo         # in the sourced workspace
        [--checkpoint NAME|FILE] [--offline] [--fps 10] [--frames 60] [--scenes generated,real]

The model: Meta's SAM 2.1 tiny at image_size 512 (a few minutes in all on a 2-core CPU),
from the cache or downloaded on first use; when it cannot be had (no network, --offline
with an empty cache), the bundled sam_ros_mini, a small test model that does not segment
real scenes well. The first line printed and every contact sheet say which model ran and,
for the bundled one, why and how to get the real one. --checkpoint names one explicitly.

The installed `sam_ros_node` executable runs in a process of its own (what `ros2 run` starts:
the model does not share this process's interpreter with the camera and the measurements),
with its parameters given by --ros-args. The demo configures and activates it through its
lifecycle services, then plays each scene as a camera (sensor_msgs/Image rgb8, stamped with
the clock). One click through ~/segment on the first frame the node processed, naming that
frame's stamp, starts the track: the node applies it there, from its ring of recent frames.
Until the click is answered the camera waits for the node frame by frame (so the click lands
on the frame it was meant for, however slow the machine); then it plays in real time at
--fps and the node keeps up with it or drops frames.

Scenes:
  generated  a held-out clip of the synthetic video the bundled model is trained on (rendered
             once by the lab into data/demo/): its target is hidden for a few frames
             (behind a slab or out of the picture); the click is the target's most interior
             pixel, and every label image that comes back is scored against the ground
             truth of its frame.
  real       the first frames of data/videos/01_dog.mp4, the click on the dog.

Writes <scene>.png (a contact sheet of overlay frames), figures.json and node.log to --out,
and prints a summary. Exit status 1 when the node fails to configure or a scene gets no
tracks of its object back.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import rclpy
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from sam_ros.drawing import contact_sheet, overlay_image
from sam_ros.masks import interior_point, mask_iou, mask_stats
from sam_ros.msg import ObjectTrack, ObjectTrackArray
from sam_ros.srv import Segment

from .conversions import image_to_array, stamp_key
from .play import ArraySource, Player
from .prompt_client import call, change_state

DEMO_MODEL, DEMO_IMAGE_SIZE = "sam2.1_hiera_tiny", 512
NAMESPACE = "/sam_ros_demo"  # the demo's node is /sam_ros_demo/sam_ros: no clash with others
NODE = f"{NAMESPACE}/sam_ros"
CAMERA = f"{NAMESPACE}/camera/image_raw"
FRAME_ID = "demo_camera"
VIDEO = "videos/01_dog.mp4"
GENERATED = "demo/generated"  # .mp4 and .npz, written by lab/demo_scene.py
VIDEO_WIDTH = 640
# On the first frame of 01_dog.mp4 at 640 x 360: the dog's back, behind the harness.
DOG_CLICK = (300.0, 218.0)
SHEET_TILES = 12
TIMEOUT = 120.0  # node start-up and model loading on a busy CPU


@dataclass
class Scene:
    name: str
    frames: np.ndarray  # T x H x W x 3 uint8 RGB
    truth: Optional[np.ndarray] = None  # T x H x W bool: the target, where it is known
    hidden: Optional[np.ndarray] = None  # T bool: the target is fully hidden
    click: Optional[tuple] = None  # fixed (x, y); else from the truth

    def click_on(self, i):
        """The click for frame ``i``: the truth's most interior pixel, else the fixed one."""
        if self.truth is None:
            return self.click
        return tuple(float(v) for v in interior_point(self.truth[i]))


def read_video(path, frames, width=None):
    """Up to ``frames`` RGB frames of a video file, scaled to ``width`` if given."""
    cap = cv2.VideoCapture(path)
    rgb = []
    while len(rgb) < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        if width is not None:
            h, w = bgr.shape[:2]
            bgr = cv2.resize(bgr, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        rgb.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not rgb:
        raise SystemExit(f"cannot read the demo's video {path}: give the folder that holds "
                         f"{VIDEO} and {GENERATED}.mp4 with --data")
    return np.stack(rgb)


def generated_scene(data, frames):
    """Held-out clip 0 of the lab's generator: its target is fully visible on frame 0, then
    fully hidden for a few frames, then back."""
    rgb = read_video(os.path.join(data, GENERATED + ".mp4"), frames)
    with np.load(os.path.join(data, GENERATED + ".npz")) as f:
        truth = np.unpackbits(f["truth"], axis=-1, count=rgb.shape[2]).astype(bool)
        hidden = f["hidden"]
    return Scene("generated", rgb, truth=truth[:len(rgb)], hidden=hidden[:len(rgb)])


def real_scene(data, frames):
    return Scene("real", read_video(os.path.join(data, VIDEO), frames, VIDEO_WIDTH),
                 click=DOG_CLICK)


def wait_for(predicate, timeout):
    """The first true value of ``predicate()`` within ``timeout`` seconds, else None."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    return None


class Demo:
    """This process's side: the camera publisher, what comes back from the node (by source
    stamp, with its arrival time), and service clients."""

    def __init__(self):
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C: KeyboardInterrupt
        self.stopping = threading.Event()
        self.node = rclpy.create_node("sam_ros_demo", namespace=NAMESPACE)
        self.lock = threading.Lock()
        self.tracks, self.labels, self.overlays = {}, {}, {}
        self.diagnostics = []  # (arrival, values) of the node's statuses
        self.node.create_subscription(ObjectTrackArray, NODE + "/tracks", self._on_tracks, 100)
        self.node.create_subscription(Image, NODE + "/masks", self._keep(self.labels), 100)
        self.node.create_subscription(Image, NODE + "/overlay", self._keep(self.overlays), 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin)
        self.spinner.start()
        # the prompt client's calls spin the node they are made from: one outside the executor
        self.caller = rclpy.create_node("sam_ros_demo_caller", namespace=NAMESPACE)
        self.segment = self.caller.create_client(Segment, NODE + "/segment")
        self.reset = self.caller.create_client(Trigger, NODE + "/reset")

    def _on_tracks(self, msg):
        with self.lock:
            self.tracks[stamp_key(msg.header.stamp)] = (time.perf_counter(), msg)

    def _keep(self, store):
        def keep(msg):
            arr = image_to_array(msg).copy()
            with self.lock:
                store[stamp_key(msg.header.stamp)] = arr
        return keep

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith("sam_ros:"):
                with self.lock:
                    self.diagnostics.append((time.perf_counter(),
                                             {kv.key: kv.value for kv in status.values}))

    def fresh_diagnostics(self, timeout=10.0):
        """The node's counters from a /diagnostics message sent after this call."""
        since = time.perf_counter()
        if not wait_for(lambda: self.diagnostics and self.diagnostics[-1][0] > since, timeout):
            raise RuntimeError("no /diagnostics from the node")
        values = self.diagnostics[-1][1]
        return {k: int(values[k]) for k in ("frames_in", "processed", "dropped")}

    def play(self, frames, fps, sent, prompted):
        """Play ``frames`` as the camera (``play.Player``); ``sent`` maps each stamp to
        (index, publish time). Until ``prompted`` is set, frames go one at a time, each once
        the node has answered the last (or a second has passed, when a frame is lost), so
        that the click lands on a frame the node still holds however slow this machine is;
        then in real time at ``fps``."""
        def record(index, header):
            sent[stamp_key(header.stamp)] = (index, time.perf_counter())

        player = Player(self.node, ArraySource(frames, fps=fps), image_topic=CAMERA,
                        frame_id=FRAME_ID, on_publish=record)
        try:
            if not player.wait_for_subscriber(self.stopping, TIMEOUT):
                return
            while not prompted.is_set() and not self.stopping.is_set():
                frame = player.step()
                if frame is None:
                    return
                key = stamp_key(frame.header.stamp)
                if wait_for(lambda: key in self.tracks or self.stopping.is_set(), 1.0):
                    wait_for(lambda: prompted.is_set() or self.stopping.is_set(), TIMEOUT)
            player.run(fps, self.stopping)
        finally:
            player.close()

    def close(self):
        self.stopping.set()
        self.executor.shutdown(timeout_sec=5)
        self.spinner.join(timeout=5)
        self.node.destroy_node()
        self.caller.destroy_node()
        rclpy.try_shutdown()


@dataclass
class ModelChoice:
    checkpoint: str  # what the node's checkpoint parameter gets ("" = the bundled model)
    image_size: int  # 0 = the model's own
    banner: str  # which model runs, and for the bundled one why and how to get a real one


def choose_model(args):
    """The model the demo runs: --checkpoint if given; else SAM 2.1 tiny from the cache, or
    downloaded (not with --offline); else the bundled model, saying why."""
    from sam_ros.model import CheckpointError
    from sam_ros.model.hub import cached_path, resolve_checkpoint

    if args.checkpoint:
        given = args.checkpoint
        checkpoint = os.path.abspath(given) if os.path.exists(given) else given
        return ModelChoice(checkpoint, args.image_size, f"model: {given} (--checkpoint)")
    if args.offline:
        cached = cached_path(DEMO_MODEL)
        why = None if cached else f"--offline, and {DEMO_MODEL} is not in the cache"
    else:
        quiet = _quiet_hub()  # its retries would print before the banner
        try:
            cached, why = resolve_checkpoint(DEMO_MODEL), None
        except CheckpointError as exc:
            attempts = "; ".join(f"{re.split(r' (?=https?://|[^ ]+/)', source)[0]}: {outcome}"
                                 for source, outcome in getattr(exc, "attempts", []))
            cached, why = None, f"{DEMO_MODEL} could not be downloaded ({attempts or exc})"
        finally:
            quiet()
    if cached:
        return ModelChoice(str(cached), args.image_size or DEMO_IMAGE_SIZE,
                           f"model: Meta's {DEMO_MODEL} at image_size "
                           f"{args.image_size or DEMO_IMAGE_SIZE}")
    return ModelChoice("", args.image_size, (
        f"model: the BUNDLED sam_ros_mini, a small test model that does not segment real "
        f"scenes well, because {why}. For Meta's: python -m sam_ros.tools.fetch {DEMO_MODEL} "
        f"(needs the network), then run the demo again"))


def _quiet_hub():
    """Silence huggingface_hub's warnings; returns what puts them back."""
    try:
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:
        return lambda: None
    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    return lambda: hub_logging.set_verbosity(verbosity)


def start_node(args, model, log):
    """The installed executable, found as `ros2 run` finds it."""
    exe = os.path.join(get_package_prefix("sam_ros"), "lib", "sam_ros", "sam_ros_node")
    cmd = [exe, "--ros-args", "-r", f"__ns:={NAMESPACE}", "-r", f"image:={CAMERA}",
           "-p", f"device:={args.device}", "-p", "diagnostics_period:=0.5",
           "-p", f"image_size:={model.image_size}"]
    if model.checkpoint:
        cmd += ["-p", f"checkpoint:={model.checkpoint}"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def stop_node(demo, proc, interrupted=False):
    """Lifecycle shutdown, then SIGINT (the node's main returns); after a Ctrl-C, which the
    node got too, only the wait. Killed if it hangs, after it printed its threads' stacks."""
    if not interrupted and proc.poll() is None:
        if change_state(demo.caller, NODE, "shutdown", 10.0) is None:
            print("the node did not answer its lifecycle shutdown", file=sys.stderr)
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        print("the node hung on shutdown: its threads' stacks are in node.log", file=sys.stderr)
        proc.send_signal(signal.SIGUSR1)  # the node prints every thread's stack
        time.sleep(2.0)
        proc.kill()
        return proc.wait()


def run_scene(demo, scene, fps):
    """Play ``scene`` and prompt on the first frame the node processed: the raw records
    that ``figures`` reads."""
    call(demo.caller, demo.reset, Trigger.Request(), TIMEOUT)  # forget the last scene's objects
    started = time.perf_counter()
    before = demo.fresh_diagnostics()
    sent, prompted = {}, threading.Event()
    camera = threading.Thread(target=demo.play, args=(scene.frames, fps, sent, prompted))
    camera.start()

    def first_back():
        with demo.lock:
            back = [k for k in demo.tracks if k in sent]
        return min(back, key=lambda k: sent[k][0]) if back else None

    run = dict(sent=sent, prompt=None)
    stamp = wait_for(first_back, TIMEOUT)
    if stamp is not None:
        index = sent[stamp][0]
        x, y = scene.click_on(index)
        res = call(demo.caller, demo.segment, Segment.Request(
            points=[x, y], labels=[1], stamp=Time(sec=stamp[0], nanosec=stamp[1]),
            return_mask=True), TIMEOUT)
        run["prompt"] = dict(frame=index, point=[x, y], response=res)
    prompted.set()
    camera.join()
    last = max(sent, key=lambda k: sent[k][0])

    def finished():  # the last frame is back, or nothing came for 2 s (it was lost)
        with demo.lock:
            newest = max((a for k, (a, _) in demo.tracks.items() if k in sent), default=0.0)
            return last in demo.tracks or time.perf_counter() - newest > 2.0
    wait_for(finished, 30.0)
    time.sleep(0.2)  # the node counts a frame just after publishing it
    after = demo.fresh_diagnostics()
    run["node"] = {k: after[k] - before[k] for k in after}
    with demo.lock:
        node_ms = [float(v["node_ms"]) for t, v in demo.diagnostics if t > started]
    run["node_ms"] = statistics.median(node_ms) if node_ms else None
    return run


def figures(scene, run, demo, fps):
    """The figures of one scene; also the frames that came back with the object, as (index,
    stamp, ObjectTrack), and their IoU by index where the truth is known."""
    sent = run["sent"]
    with demo.lock:
        back = {k: v for k, v in demo.tracks.items() if k in sent}
        labels = {k: v for k, v in demo.labels.items() if k in sent}
    latency = [(arrival - sent[k][1]) * 1e3 for k, (arrival, _) in back.items()]
    arrivals = sorted(arrival for arrival, _ in back.values())
    prompt = run["prompt"]
    res = prompt["response"] if prompt else None
    obj_id = res.object_id if res is not None and res.success else None
    tracked = sorted((sent[k][0], k, o) for k, (_, msg) in back.items() for o in msg.objects
                     if o.id == obj_id)
    fig = dict(
        frames_published=len(sent), fps=fps, node=run["node"], tracks_received=len(back),
        tracks_with_object=len(tracked),
        processing_fps=((len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
                        if len(arrivals) > 1 else None),
        node_ms_median=run["node_ms"],
        latency_ms=dict(median=statistics.median(latency) if latency else None,
                        p95=float(np.percentile(latency, 95)) if latency else None),
        prompt=None if prompt is None else dict(
            frame=prompt["frame"], point=prompt["point"], success=obj_id is not None,
            message=res.message if res is not None else "no answer",
            object_id=obj_id, score=res.score if obj_id else None))
    scores = {}
    if scene.truth is not None and tracked:
        hidden = [o.visible for i, _, o in tracked if scene.hidden[i]]
        scores = {i: mask_iou(labels[k] == obj_id, scene.truth[i])
                  for i, k, _ in tracked if k in labels}
        shown = [j for i, j in scores.items() if not scene.hidden[i]]
        fig.update(scored_frames=len(scores),
                   mean_iou=float(np.mean(list(scores.values()))) if scores else None,
                   mean_iou_target_shown=float(np.mean(shown)) if shown else None,
                   hidden_frames=len(hidden), hidden_flagged_not_visible=hidden.count(False))
    return fig, tracked, scores


def sheet(scene, run, demo, tracked, scores, banner):
    """The prompt frame with the node's answer and the click drawn, then overlay frames
    evenly spaced over those that came back; the truth outlined in white where known."""
    tiles, captions = [], []

    def outline(img, i):
        if scene.truth is not None:
            contours, _ = cv2.findContours(scene.truth[i].view(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, (255, 255, 255), 1)
        return img

    prompt = run["prompt"]
    if prompt is not None and prompt["response"] is not None and prompt["response"].success:
        res, i = prompt["response"], prompt["frame"]
        mask = image_to_array(res.mask) > 0
        area, bbox, centroid = mask_stats(mask)
        track = ObjectTrack(id=res.object_id, visible=area > 0, bbox=bbox,
                            centroid=list(centroid))
        img = outline(overlay_image(scene.frames[i], mask * np.uint16(res.object_id), [track]), i)
        x, y = (int(round(v)) for v in prompt["point"])
        cv2.drawMarker(img, (x, y), (255, 0, 0), cv2.MARKER_CROSS, 12, 2)
        tiles.append(img)
        captions.append(f"#{i} click")
    with demo.lock:
        have = [(i, k, o) for i, k, o in tracked if k in demo.overlays]
        overlays = {k: demo.overlays[k] for _, k, _ in have}
    picks = np.linspace(0, len(have) - 1, SHEET_TILES - len(tiles)) if have else []
    for p in np.unique(np.round(picks).astype(int)):
        i, k, o = have[p]
        tiles.append(outline(overlays[k].copy(), i))
        if i not in scores:
            captions.append(f"#{i}")
        elif not scene.hidden[i]:
            captions.append(f"#{i} IoU {scores[i]:.2f}")
        else:
            captions.append(f"#{i} hidden: {'visible' if o.visible else 'not visible'}")
    return contact_sheet(tiles, captions, title=banner) if tiles else None


def summary(name, fig):
    node, lat, p = fig["node"], fig["latency_ms"], fig["prompt"]
    lines = [f"{name}: {fig['frames_published']} frames published at {fig['fps']:g} fps; node "
             f"received {node['frames_in']}, processed {node['processed']}, dropped "
             f"{node['dropped']}"]
    if fig["tracks_received"]:
        node_ms = fig["node_ms_median"]
        lines.append(f"  tracks back for {fig['tracks_received']} frames "
                     f"({fig['tracks_with_object']} with the object) at "
                     f"{fig['processing_fps'] or 0:.1f} frames/s"
                     + (f", node {node_ms:.0f} ms/frame" if node_ms is not None else "")
                     + f"; latency publish -> tracks median {lat['median']:.0f} ms, "
                     f"p95 {lat['p95']:.0f} ms")
    else:
        lines.append("  no tracks came back")
    if p is not None:
        lines.append(f"  click ({p['point'][0]:.0f}, {p['point'][1]:.0f}) on frame {p['frame']}: "
                     + (f"object {p['object_id']}, score {p['score']:.2f}" if p["success"]
                        else f"refused: {p['message']}"))
    if fig.get("mean_iou") is not None:
        shown = fig["mean_iou_target_shown"]
        lines.append(f"  IoU vs ground truth: mean {fig['mean_iou']:.3f} over "
                     f"{fig['scored_frames']} frames ("
                     + (f"{shown:.3f}" if shown is not None else "n/a")
                     + f" where the target shows); hidden on {fig['hidden_frames']} frames, "
                     f"flagged not visible on {fig['hidden_flagged_not_visible']}")
    if fig.get("sheet"):
        lines.append(f"  contact sheet: {fig['sheet']}")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="sam_ros_demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo", help="folder for the sheets and figures.json")
    ap.add_argument("--checkpoint", default="",
                    help=f"the node's model: a checkpoint file or name (default: {DEMO_MODEL} "
                         f"if it can be had, else the bundled sam_ros_mini)")
    ap.add_argument("--offline", action="store_true",
                    help=f"never download: {DEMO_MODEL} from the cache, else the bundled model")
    ap.add_argument("--image-size", type=int, default=0,
                    help=f"the node's image_size (default: {DEMO_IMAGE_SIZE} for "
                         f"{DEMO_MODEL}, the model's own otherwise)")
    ap.add_argument("--device", default="cpu", help="the node's torch device")
    ap.add_argument("--fps", type=float, default=10.0, help="camera rate")
    ap.add_argument("--frames", type=int, default=60, help="frames per scene")
    ap.add_argument("--scenes", default="generated,real",
                    type=lambda t: [s for s in t.split(",") if s],
                    help="comma-separated, from: generated, real")
    ap.add_argument("--data", default=None,
                    help=f"folder with {VIDEO} and {GENERATED}.mp4/.npz (default: the "
                         f"installed package's share/sam_ros/data)")
    args = ap.parse_args(argv)
    if args.data is None:
        args.data = os.path.join(get_package_share_directory("sam_ros"), "data")
    if not args.scenes or set(args.scenes) - {"generated", "real"}:
        ap.error(f"--scenes takes generated and/or real, got {args.scenes}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    model = choose_model(args)
    print(model.banner, flush=True)
    # for this process and the node's (inherited): local only, and full-size frames intact
    # (see the profile)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(
        get_package_share_directory("sam_ros"), "config", "fastdds_large_images.xml"))
    os.makedirs(args.out, exist_ok=True)
    demo = Demo()
    log_path = os.path.join(args.out, "node.log")
    with open(log_path, "w") as log:
        proc = start_node(args, model, log)
    results, status, interrupted = {}, 0, False
    try:
        loaders = {"generated": generated_scene, "real": real_scene}  # while the node starts
        scenes = [loaders[name](args.data, args.frames) for name in args.scenes]
        for command in ("configure", "activate"):
            res = change_state(demo.caller, NODE, command, TIMEOUT)
            if res is None or not res.success:
                with open(log_path) as f:
                    print(f.read()[-3000:], file=sys.stderr)
                print(f"the node failed to {command} (its log: {log_path})", file=sys.stderr)
                return 1
        # discovery both ways before the first frame: best-effort frames are not resent
        if not wait_for(lambda: demo.node.count_subscribers(CAMERA) and all(
                demo.node.count_publishers(NODE + t) for t in ("/tracks", "/masks", "/overlay")),
                TIMEOUT):
            print("the node's topics did not connect", file=sys.stderr)
            return 1
        for scene in scenes:
            run = run_scene(demo, scene, args.fps)
            fig, tracked, scores = figures(scene, run, demo, args.fps)
            picture = sheet(scene, run, demo, tracked, scores, model.banner)
            if picture is not None:
                fig["sheet"] = os.path.join(args.out, f"{scene.name}.png")
                cv2.imwrite(fig["sheet"], cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            results[scene.name] = fig
            print(summary(scene.name, fig), flush=True)
            if not fig["tracks_with_object"]:
                status = 1
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        code = stop_node(demo, proc, interrupted)
        demo.close()
    wall = time.perf_counter() - t_start
    with open(os.path.join(args.out, "figures.json"), "w") as f:
        json.dump(dict(model=model.banner, checkpoint=model.checkpoint or "bundled sam_ros_mini",
                       image_size=model.image_size, device=args.device,
                       fps=args.fps, frames=args.frames, node_exit_status=code,
                       wall_s=round(wall, 1), scenes=results), f, indent=2)
    print(f"node exited with status {code}; {wall:.0f} s in all; figures in "
          f"{os.path.join(args.out, 'figures.json')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
