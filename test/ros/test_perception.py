"""The node as a perception component (issue 33), over real rclpy and DDS (Fast DDS,
localhost only, domain 230-232 of this module's own): vision_msgs detections in 2D and 3D
and the label image's LabelInfo read back with the upstream types, depth to 3D, tracks from
a detector, track lifetime and the max_objects cap, and what each does when its input is
missing or wrong.

The node runs the bundled model (``build_sam2()``, 256 px) on generated scenes: boxes and a
sphere in front of a wall, rendered with their exact depth by a known pinhole camera
(``lab.depth_scenes``), each object in its own flat colour; detections are the scene's
ground truth (each visible object's box, with its class). The bundled model is a weak
segmenter: its masks bleed onto the wall and drift within a few frames (a box's mask IoU
0.88 on its prompt, 0.71 five frames on), and it seldom says a hidden object is gone. So
the tests that measure (3D within 2 % and 10 %) or need the tracker to lose an object
(re-acquisition, expiry) replace its masks with the scene's truth (``TruthMasks``: the
tracker still runs, prompts and ids go through it, only each result's mask and visibility
are the scene's); the detector stream over 50 frames, the flood and the failure paths run
on the model's own masks.

One node serves the module; each test starts it active and tracking nothing.
"""

import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from vision_msgs.msg import (
    Detection2D,
    Detection2DArray,
    Detection3DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
)

from harness import TIMEOUT, NodeHarness
from lab.depth_scenes import Box, Plane, Sphere, render
from sam_ros.masks import mask_stats
from sam_ros.msg import ObjectTrackArray
from sam_ros.ros import conversions, parameters
from sam_ros.ros.depth3d import RECENT
from sam_ros.ros.detector import HELD
from sam_ros.ros.vision import presence
from sam_ros.srv import Segment
from sam_ros.tracker.depth import CameraModel

W, H = 320, 240
DOMAIN = 230 + os.getpid() % 3  # test_play takes 10-89, test_cli 90-99, the others 100-229
FRAME_S = 0.1  # seconds between the frames' stamps
K = [[300.0, 0.0, 158.5], [0.0, 302.0, 121.2], [0.0, 0.0, 1.0]]
CAMERA = CameraModel.from_matrix(K, W, H)
WALL = Plane((0.0, 0.0, 2.6), (0.0, 0.0, 1.0))
WALL_COLOUR = (90, 96, 104)
CENTRE_TOLERANCE = 0.02  # of the true distance
SIZE_TOLERANCE = 0.10


@dataclasses.dataclass(frozen=True)
class Thing:
    """An object of a scene: what it is, where, and its colour."""

    label: str
    kind: str  # "box" or "sphere"
    centre: tuple
    size: tuple  # a box's edges, a sphere's diameter (three times)
    colour: tuple

    def shape(self):
        if self.kind == "box":
            return Box(self.centre, self.size)
        return Sphere(self.centre, self.size[0] / 2)

    def moved(self, dx=0.0, dy=0.0):
        x, y, z = self.centre
        return dataclasses.replace(self, centre=(x + dx, y + dy, z))


CUP = Thing("cup", "box", (-0.42, 0.02, 1.6), (0.36, 0.32, 0.3), (215, 40, 35))
BALL = Thing("ball", "sphere", (0.42, -0.04, 1.9), (0.5, 0.5, 0.5), (40, 90, 225))
BOOK = Thing("book", "box", (0.0, 0.38, 1.7), (0.44, 0.2, 0.2), (40, 190, 60))


@dataclasses.dataclass
class Frame:
    """A rendered scene: the colour image, its exact depth (m), which thing each pixel
    shows (-1: the wall) and the things."""

    rgb: np.ndarray
    depth: np.ndarray
    owner: np.ndarray
    things: tuple
    points: np.ndarray

    def mask(self, i):
        return self.owner == i

    def box(self, i):
        return mask_stats(self.mask(i))[1]


@functools.lru_cache(maxsize=256)
def scene(*things):
    rendered = render(CAMERA, [WALL] + [t.shape() for t in things])
    owner = rendered.owner - 1
    palette = np.array([WALL_COLOUR] + [t.colour for t in things], np.uint8)
    rng = np.random.default_rng(len(things))
    noise = rng.integers(-12, 13, (H, W, 3))
    rgb = np.clip(palette[owner + 1].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return Frame(rgb, rendered.depth, owner, things, rendered.points)


def camera_info(header, distortion_model="plumb_bob", width=W, height=H):
    (fx, _, cx), (_, fy, cy), _ = K
    return CameraInfo(header=header, width=width, height=height,
                      distortion_model=distortion_model, d=[0.0] * 5,
                      k=[float(v) for row in K for v in row],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def depth_image(depth, encoding, header):
    if encoding == "16UC1":
        millimetres = np.where(np.isfinite(depth), np.round(depth * 1000), 0)
        return conversions.array_to_image(millimetres.astype(np.uint16), "16UC1", header)
    msg = conversions.array_to_image(np.ascontiguousarray(depth, np.float32).view(np.uint16),
                                     "16UC1", header)
    msg.encoding, msg.width = "32FC1", depth.shape[1]
    return msg


def detection(box, label, score=0.9):
    x0, y0, x1, y1 = (float(v) for v in box)
    det = Detection2D()
    det.bbox.center.position.x, det.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
    det.bbox.size_x, det.bbox.size_y = x1 - x0 + 1, y1 - y0 + 1
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = label, score
    det.results = [hypothesis]
    return det


def truth_detections(frame):
    """The detector's answer: each visible thing's box, with its class."""
    return [detection(frame.box(i), t.label) for i, t in enumerate(frame.things)
            if frame.mask(i).any()]


class TruthMasks:
    """The node's tracker, with each result's mask and visibility replaced by the scene's
    truth: the thing whose box a track's first box prompt matches best, on the frame the
    result is for. Like a real tracker it loses a thing hidden for ``FORGET`` frames: the
    track stays not visible, even once the thing is back, until it is prompted again.
    Everything else (frames, prompts, ids, the ring) is the tracker's."""

    FORGET = 2

    def __init__(self, tracker, frames):
        self._tracker, self._frames = tracker, frames  # frames: stamp key -> Frame
        self.things = {}  # object id -> index of the thing it follows
        self.hidden = {}  # object id -> frames it has been hidden for

    def __getattr__(self, name):
        return getattr(self._tracker, name)

    def step(self, image, stamp=None, time=None):
        results = self._tracker.step(image, stamp=stamp, time=time)
        results = {obj_id: self._truth(r) for obj_id, r in results.items()}
        for obj_id, r in results.items():
            self.hidden[obj_id] = 0 if r.visible else self.hidden.get(obj_id, 0) + 1
        return results

    def add_prompt(self, obj_id, box=None, **prompt):
        result = self._tracker.add_prompt(obj_id, box=box, **prompt)
        if obj_id not in self.things:
            frame = self._frames[conversions.stamp_key(result.stamp.stamp)]
            ious = [box_iou(box, frame.box(i)) for i in range(len(frame.things))]
            self.things[obj_id] = int(np.argmax(ious))
        self.hidden[obj_id] = 0
        return self._truth(result)

    def result(self, obj_id, frame=None):
        return self._truth(self._tracker.result(obj_id, frame))

    def _truth(self, result):
        frame = self._frames[conversions.stamp_key(result.stamp.stamp)]
        mask = frame.mask(self.things[result.obj_id])
        if self.hidden.get(result.obj_id, 0) >= self.FORGET:
            mask = np.zeros_like(mask)  # lost
        visible = bool(mask.any())
        return dataclasses.replace(result, mask=mask, logits=np.where(mask, 8.0, -8.0),
                                   score=4.0 if visible else -4.0, visible=visible)


def box_iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Harness(NodeHarness):
    """The node (depth and detections on) and a client with camera, depth, camera_info and
    detector publishers and subscribers of the upstream message types."""

    def __init__(self):
        super().__init__(dict(depth_enabled=True, detections_enabled=True,
                              diagnostics_period=0.2, error_log_period=1.0), DOMAIN,
                         "perception_test_client")
        c = self.client
        sensor = qos_profile_sensor_data
        self.image_pub = c.create_publisher(Image, "image", sensor)
        self.depth_pub = c.create_publisher(Image, "depth", sensor)
        self.info_pub = c.create_publisher(CameraInfo, "camera_info", sensor)
        self.detections_pub = c.create_publisher(Detection2DArray, "detections_in", 10)
        self.got = {name: [] for name in ("tracks", "detections", "detections_3d",
                                          "label_info", "diagnostics", "log")}
        for name, msg_type, topic, qos in (
                ("tracks", ObjectTrackArray, "/sam_ros/tracks", 100),
                ("detections", Detection2DArray, "/sam_ros/detections", 100),
                ("detections_3d", Detection3DArray, "/sam_ros/detections_3d", 100),
                ("label_info", LabelInfo, "/sam_ros/label_info", QoSProfile(
                    depth=10, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL)),
                ("diagnostics", DiagnosticArray, "/diagnostics", 50),
                ("log", Log, "/rosout", 200)):
            c.create_subscription(msg_type, topic, self.keep(self.got[name]), qos)
        self.frames = {}  # stamp key -> Frame published with it

    def received(self, name):
        with self.lock:
            return list(self.got[name])

    def set(self, **values):
        results = self.node.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        assert all(r.successful for r in results), [r.reason for r in results]

    def header(self):
        self.seq += 1
        ns = int(round(self.seq * FRAME_S * 1e9))
        return Header(stamp=Time(sec=3000 + ns // 10**9, nanosec=ns % 10**9),
                      frame_id="camera_color_optical_frame")

    def publish(self, frame, depth="16UC1", info=True, detections=None):
        """One camera frame of ``frame`` with what comes with it (depth: an encoding, a
        message, or None; info: True, a CameraInfo or None; detections: a list of
        Detection2D or None), all with the frame's header; the colour image last."""
        header = self.header()
        self.frames[conversions.stamp_key(header.stamp)] = frame
        if info is True:
            info = camera_info(header)
        if info is not None:
            info.header = header
            self.info_pub.publish(info)
        if isinstance(depth, str):
            depth = depth_image(frame.depth, depth, header)
        if depth is not None:
            depth.header = header
            self.depth_pub.publish(depth)
        if detections is not None:
            self.detections_pub.publish(Detection2DArray(header=header, detections=detections))
        self.image_pub.publish(conversions.array_to_image(frame.rgb, "rgb8", header))
        return header

    def tracks_of(self, header, timeout=TIMEOUT):
        return self.wait_for(lambda: next((m for m in self.received("tracks")
                                           if m.header == header), None),
                             f"tracks of {header.stamp}", timeout)

    def step(self, frame, tries=4, **kw):
        """Publish ``frame`` until it comes back as tracks (best effort may lose one):
        ``(header, tracks)``."""
        for _ in range(tries):
            header = self.publish(frame, **kw)
            try:
                return header, self.tracks_of(header, timeout=TIMEOUT / tries)
            except AssertionError:
                continue
        raise AssertionError(f"no tracks after {tries} frames; node stats {self.node.stats}")

    def counters(self):
        """The node's latest /diagnostics values after everything sent so far."""
        diagnostics = self.received("diagnostics")
        if not diagnostics:
            return {}
        return {kv.key: kv.value for kv in diagnostics[-1].status[0].values}

    def counter(self, key):
        return int(self.counters().get(key, 0))

    def truth_masks(self):
        """Replace the tracker's masks with the scene's truth (until ``real_masks``)."""
        session = self.node.session
        with session.lock:
            session.tracker = TruthMasks(session.tracker, self.frames)

    def real_masks(self):
        session = self.node.session
        with session.lock:
            if isinstance(session.tracker, TruthMasks):
                session.tracker = session.tracker._tracker



@pytest.fixture(scope="module")
def harness():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared: one thread is faster than two contending
    harness = Harness()
    assert harness.transition(Transition.TRANSITION_CONFIGURE)
    yield harness
    harness.close()
    torch.set_num_threads(threads)


LIVE_DEFAULTS = dict(max_objects=16, max_lost_s=0.0, detection_threshold=0.5,
                     detection_classes="", depth_tolerance=0.02)


@pytest.fixture
def ros(harness):
    """The module's node, active, on the model's own masks and tracking nothing."""
    harness.real_masks()
    harness.set(**LIVE_DEFAULTS)
    if harness.state() == State.PRIMARY_STATE_INACTIVE:
        assert harness.transition(Transition.TRANSITION_ACTIVATE)
    assert harness.call(harness.reset_cli, Trigger.Request()).success
    yield harness
    harness.real_masks()


def segment_box(ros, frame, i):
    """Start a track on thing ``i`` of the latest frame with its box and class."""
    box = [float(v) for v in frame.box(i)]
    res = ros.call(ros.segment_cli, Segment.Request(box=box, label=frame.things[i].label))
    assert res.success, res.message
    return res.object_id


def assert_3d(track, frame, i, truth_centre, truth_size):
    centre = np.array([track.position.x, track.position.y, track.position.z])
    size = np.array([track.size.x, track.size.y, track.size.z])
    assert track.has_3d
    distance = np.linalg.norm(truth_centre)
    assert np.linalg.norm(centre - truth_centre) <= CENTRE_TOLERANCE * distance, (
        centre, truth_centre)
    assert np.all(np.abs(size[:2] / truth_size[:2] - 1) <= SIZE_TOLERANCE), (size, truth_size)
    return centre, size


def front_face_centre(thing):
    x, y, z = thing.centre
    return np.array([x, y, z - thing.size[2] / 2])


# ------------------------------------------------------------------ no DDS

def test_config_file_lists_every_parameter_with_its_default():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(root, "config", "sam_ros.yaml")) as f:
        listed = yaml.safe_load(f)["sam_ros"]["ros__parameters"]
    assert listed == {spec.name: spec.default for spec in parameters.SPECS}


@pytest.mark.skipif(shutil.which("ros2") is None, reason="no ros2 command: run "
                    "tools/setup_ros.sh --cli and source tools/ros_env.sh")
@pytest.mark.parametrize("args,topics", [
    (("depth:=/cam/aligned_depth", "detections:=/yolo/detections"),
     ", /cam/aligned_depth, /cam/color/camera_info, /yolo/detections"),
    (("camera_info:=/cam/info",), ", /depth, /cam/info"),
])
def test_launch_arguments_turn_the_inputs_on(tmp_path, args, topics):
    """depth:= (or camera_info:=) and detections:= remap the inputs and turn them on;
    camera_info defaults to the image's sibling, as image_transport has it. (In the next
    domain of the module's range: its node is also /sam_ros.)"""
    log = tmp_path / "launch.log"
    env = dict(os.environ, ROS_DOMAIN_ID=str(230 + (DOMAIN - 229) % 3))
    with open(log, "w") as out:
        proc = subprocess.Popen(["ros2", "launch", "sam_ros", "sam_ros.launch.py",
                                 "image:=/cam/color/image_raw", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "active: listening on" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    line = next(x for x in log.read_text().splitlines() if "active: listening on" in x)
    assert line.endswith(f"listening on /cam/color/image_raw{topics}"), line


def test_presence_is_the_sigmoid_of_the_object_score():
    assert presence(0.0) == 0.5
    assert presence(2.0) == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert presence(-800.0) == 0.0 and presence(800.0) == 1.0  # no overflow


# ------------------------------------------------------------------ the node

def test_outputs_read_back_with_vision_msgs_and_3d_at_a_known_pose(ros):
    """Two tracks (a box at a known pose and a sphere) on the scene's true masks: the
    Detection2DArray, Detection3DArray and LabelInfo as a plain subscriber of the upstream
    types receives them, headers equal to the source frame's; the box's 3D centre within
    2 % of its distance and its size within 10 %."""
    ros.truth_masks()
    frame = scene(CUP, BALL)
    ros.step(frame)
    ids = [segment_box(ros, frame, 0), segment_box(ros, frame, 1)]
    assert ids == [1, 2]
    header, tracks = ros.step(frame)
    assert tracks.header == header
    assert [(o.id, o.label, o.visible) for o in tracks.objects] == [
        (1, "cup", True), (2, "ball", True)]
    # 2D: one Detection2D per visible track; centre and size span the mask's pixels
    det2d = ros.wait_for(lambda: next((m for m in ros.received("detections")
                                       if m.header == header), None), "detections")
    assert [d.id for d in det2d.detections] == ["1", "2"]
    for det, track in zip(det2d.detections, tracks.objects):
        assert det.header == header
        x0, y0, x1, y1 = track.bbox
        assert (det.bbox.center.position.x, det.bbox.center.position.y) == (
            (x0 + x1) / 2, (y0 + y1) / 2)
        assert (det.bbox.size_x, det.bbox.size_y) == (x1 - x0 + 1, y1 - y0 + 1)
        (hypothesis,) = det.results
        assert hypothesis.hypothesis.class_id == track.label
        assert hypothesis.hypothesis.score == pytest.approx(presence(track.score))
        assert 0.5 < hypothesis.hypothesis.score <= 1.0
    # 3D: the box's front face at its known pose; the sphere against its visible surface
    cup, ball = tracks.objects
    assert_3d(cup, frame, 0, front_face_centre(CUP), np.array(CUP.size))
    assert_3d(ball, frame, 1, np.median(frame.points[frame.mask(1)], axis=0),
              np.array(BALL.size))
    assert cup.depth_share == 1.0 and ball.depth_share == 1.0
    det3d = ros.wait_for(lambda: next((m for m in ros.received("detections_3d")
                                       if m.header == header), None), "detections_3d")
    assert [d.id for d in det3d.detections] == ["1", "2"]
    for det, track in zip(det3d.detections, tracks.objects):
        assert det.header == header
        assert det.bbox.center.position == track.position and det.bbox.size == track.size
        assert det.bbox.center.orientation.w == 1.0
        assert det.results[0].hypothesis.class_id == track.label
        assert det.results[0].pose.pose.position == track.position
    # LabelInfo: which label-image value is which track and class (transient local)
    info = ros.wait_for(lambda: [m for m in ros.received("label_info")
                                 if len(m.class_map) == 2], "label_info")[-1]
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(1, "cup"), (2, "ball")]
    assert info.threshold == 0.5
    assert info.header.stamp.sec >= 3000 and info.header.frame_id == header.frame_id
    late = []  # a subscriber that comes later gets the latest at once
    sub = ros.client.create_subscription(LabelInfo, "/sam_ros/label_info", late.append,
                                         QoSProfile(depth=1,
                                                    reliability=ReliabilityPolicy.RELIABLE,
                                                    durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        ros.wait_for(lambda: late, "the latest LabelInfo", timeout=10)
        assert [c.class_name for c in late[-1].class_map] == ["cup", "ball"]
    finally:
        ros.client.destroy_subscription(sub)


def test_holes_and_nan_in_depth_move_neither_figure(ros):
    """32FC1 depth with NaN over 15 % of the pixels and zero holes (a blob and speckle):
    centre and size stay within the same bounds, and the depth share says what was lost."""
    ros.truth_masks()
    frame = scene(CUP)
    ros.step(frame)
    segment_box(ros, frame, 0)
    _, clean = ros.step(frame, depth="32FC1")
    rng = np.random.default_rng(3)
    depth = frame.depth.copy()
    depth[rng.random(depth.shape) < 0.15] = np.nan
    x0, y0, x1, y1 = frame.box(0)
    depth[y0 + 10:y0 + 35, x0 + 15:x0 + 45] = 0.0  # a hole in the object
    _, holed = ros.step(frame, depth=depth_image(depth, "32FC1", Header()))
    for tracks in (clean, holed):
        (cup,) = tracks.objects
        assert_3d(cup, frame, 0, front_face_centre(CUP), np.array(CUP.size))
    assert clean.objects[0].depth_share == 1.0
    assert 0.6 < holed.objects[0].depth_share < 0.85, holed.objects[0].depth_share


def test_points_only_while_subscribed(ros):
    ros.truth_masks()
    frame = scene(CUP, BALL)
    ros.step(frame)
    segment_box(ros, frame, 0)
    segment_box(ros, frame, 1)
    assert not ros.node.outputs.want_points()
    clouds = []
    sub = ros.client.create_subscription(PointCloud2, "/sam_ros/points", clouds.append, 10)
    try:
        ros.wait_for(lambda: ros.node.outputs.want_points(), "the points subscriber")
        header, tracks = ros.step(frame)
        cloud = ros.wait_for(lambda: next((m for m in list(clouds) if m.header == header),
                                          None), "points")
    finally:
        ros.client.destroy_subscription(sub)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "id"]
    assert cloud.height == 1 and cloud.point_step == 16 and cloud.row_step == 16 * cloud.width
    points = np.frombuffer(bytes(cloud.data), np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u4")]))
    assert set(np.unique(points["id"])) == {1, 2}
    for track in tracks.objects:  # each track's points are its surface: about its centre
        mine = points[points["id"] == track.id]
        xyz = np.stack([mine["x"], mine["y"], mine["z"]], axis=1)
        centre = np.array([track.position.x, track.position.y, track.position.z])
        assert np.linalg.norm(np.median(xyz, axis=0) - centre) < 0.03, track.id
    # decimated: every cloud_step-th pixel of an eroded mask (cloud_step 4)
    assert len(points) < (frame.mask(0).sum() + frame.mask(1).sum()) / 16 * 1.2
    ros.wait_for(lambda: not ros.node.outputs.want_points(), "no points subscriber")


def test_a_slow_frame_keeps_its_depth_image(ros):
    """The worker is busy (the tracker's lock held) while a colour frame waits and many
    later depth images arrive, more than the node keeps: the depth image of the waiting
    frame's stamp was kept for it, and it gets its 3D."""
    ros.truth_masks()
    frame = scene(CUP)
    ros.step(frame)
    segment_box(ros, frame, 0)
    with ros.node.session.lock:
        busy = ros.publish(frame)  # the worker takes it and waits for the lock
        time.sleep(0.3)
        waiting = ros.publish(frame)  # waits in the mailbox, its depth with it
        for _ in range(3 * RECENT):
            ros.depth_pub.publish(depth_image(frame.depth, "16UC1", ros.header()))
            time.sleep(0.02)
        time.sleep(0.3)
    for header in (busy, waiting):
        assert ros.tracks_of(header).objects[0].has_3d


def test_depth_problems_leave_2d_running(ros):
    """Missing camera_info, a depth image of another size, an unsupported lens model, a
    depth topic that stops: each is counted under its reason and warned about (at most
    once per error_log_period), the tracks go on, without 3D; good input brings 3D back."""
    assert ros.transition(Transition.TRANSITION_DEACTIVATE)  # forgets the camera_info
    assert ros.transition(Transition.TRANSITION_ACTIVATE)
    frame = scene(CUP)
    ros.step(frame, info=None)
    segment_box(ros, frame, 0)
    small = depth_image(frame.depth[::2, ::2], "16UC1", Header())
    cases = {
        "no_camera_info": dict(info=None),
        "depth_size": dict(depth=small),
        "distortion": dict(info=camera_info(Header(), distortion_model="equidistant")),
        "no_depth": dict(depth=None),
    }
    started = time.monotonic()
    for reason, inputs in cases.items():
        before = ros.node.depth.stats.get(f"depth_missing_{reason}", 0)
        for _ in range(3):
            _, tracks = ros.step(frame, **inputs)
            assert [o.id for o in tracks.objects] == [1]
            assert not tracks.objects[0].has_3d
        assert ros.node.depth.stats[f"depth_missing_{reason}"] >= before + 3, reason
        ros.wait_for(lambda: ros.counter(f"depth_missing_{reason}") >= before + 3,
                     f"/diagnostics of {reason}")
        ros.wait_for(lambda: any(f"frame: {reason}: " in log.msg
                                 for log in ros.received("log")),
                     f"a warning naming {reason}")
    elapsed = time.monotonic() - started
    warnings = [log.msg for log in ros.received("log") if "no 3D on this frame" in log.msg]
    for reason in cases:  # rate-limited per reason: error_log_period is 1 s
        assert 1 <= sum(f"frame: {reason}: " in w for w in warnings) <= elapsed + 1, warnings
    missing = sum(ros.node.depth.stats[f"depth_missing_{reason}"] for reason in cases)
    assert len(warnings) < missing, (warnings, missing)
    print("\n".join(warnings))
    _, tracks = ros.step(frame)  # and good input again
    assert tracks.objects[0].has_3d
    assert ros.node.stats["errors"] == 0


def test_detector_starts_one_track_per_object_and_carries_its_class(ros):
    """Three things drift across the image for 50 frames, a detection of each on every
    frame (the model's own masks): three tracks, one per thing, from the frame each was
    first detected, never a duplicate; each one's class is in every output."""
    things = (CUP, BALL, BOOK)
    before = dict(ros.node.keeper.stats)
    ids_seen, first = set(), None
    for k in range(50):
        moved = tuple(t.moved(dx=0.002 * k * (1 if i % 2 else -1)) for i, t in
                      enumerate(things))
        frame = scene(*moved)
        header, tracks = ros.step(frame, detections=truth_detections(frame))
        ids_seen |= {o.id for o in tracks.objects}
        if tracks.objects and first is None:
            first = k
        assert len(tracks.objects) <= 3, [(o.id, o.label) for o in tracks.objects]
    assert first is not None and first <= 1
    assert ids_seen == {1, 2, 3}, ids_seen
    labels = {o.id: o.label for o in tracks.objects}
    assert sorted(labels.values()) == ["ball", "book", "cup"]
    detections = next(m for m in ros.received("detections") if m.header == header)
    assert {d.id: d.results[0].hypothesis.class_id for d in detections.detections} == {
        str(i): label for i, label in labels.items() if any(
            o.id == i and o.visible for o in tracks.objects)}
    det3d = ros.wait_for(lambda: next((m for m in ros.received("detections_3d")
                                       if m.header == header), None), "detections_3d")
    for det in det3d.detections:
        assert det.results[0].hypothesis.class_id == labels[int(det.id)]
    info = ros.received("label_info")[-1]
    assert {c.class_id: c.class_name for c in info.class_map} == labels
    assert ros.node.keeper.stats["tracks_started"] == before["tracks_started"] + 3
    print(f"detector counters over the 50 frames: "
          f"{ {k: v - before[k] for k, v in ros.node.keeper.stats.items()} }")


def test_a_hidden_object_is_reacquired_under_its_old_id(ros):
    """A thing hidden (no detection, its mask empty) for 8 frames, longer than the 3 frames
    after which a track counts as lost, comes back a little to the side: its detection
    re-prompts the old track, no new one starts."""
    ros.truth_masks()
    shown = scene(CUP, BALL)
    for _ in range(2):
        ros.step(shown, detections=truth_detections(shown))
    header, tracks = ros.step(shown, detections=truth_detections(shown))
    assert [(o.id, o.label) for o in tracks.objects] == [(1, "cup"), (2, "ball")]
    before = ros.node.keeper.stats["tracks_reacquired"]
    hidden = scene(CUP.moved(dy=5.0), BALL.moved(dx=-0.01))  # the cup far out of view
    for k in range(8):
        _, tracks = ros.step(hidden, detections=truth_detections(hidden))
    assert {o.id: o.visible for o in tracks.objects} == {1: False, 2: True}
    back = scene(CUP.moved(dx=0.03), BALL)
    for k in range(2):
        _, tracks = ros.step(back, detections=truth_detections(back))
    assert {(o.id, o.label, o.visible) for o in tracks.objects} == {
        (1, "cup", True), (2, "ball", True)}
    assert ros.node.keeper.stats["tracks_reacquired"] == before + 1
    ros.wait_for(lambda: ros.counter("tracks_reacquired") >= before + 1, "diagnostics")


def test_a_departed_object_is_dropped_after_max_lost_s(ros):
    """max_lost_s 0.45 with frames 0.1 s apart: a thing that leaves is kept for 4 frames,
    then dropped (its id gone from every output and not reused); one that stays is kept."""
    ros.truth_masks()
    ros.set(max_lost_s=0.45)
    both = scene(CUP, BALL)
    ros.step(both, detections=truth_detections(both))
    _, tracks = ros.step(both, detections=truth_detections(both))
    assert [o.id for o in tracks.objects] == [1, 2]
    before = ros.node.keeper.stats["tracks_expired"]
    gone = scene(CUP.moved(dx=5.0), BALL)  # the cup has left
    history = []
    for k in range(8):
        header, tracks = ros.step(gone, detections=truth_detections(gone))
        history.append([o.id for o in tracks.objects])
    # last seen on the frame before these, dropped 0.5 s later (the 5th)
    assert history[:4] == [[1, 2]] * 4 and history[4:] == [[2]] * 4, history
    assert ros.node.keeper.stats["tracks_expired"] == before + 1
    info = ros.received("label_info")[-1]
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(2, "ball")]
    back = scene(CUP, BALL)  # the cup returns: a new track, a new id
    ros.step(back, detections=truth_detections(back))
    _, tracks = ros.step(back, detections=truth_detections(back))
    assert sorted((o.id, o.label) for o in tracks.objects) == [(2, "ball"), (3, "cup")]


def test_a_flooding_detector_is_capped_and_the_node_stays_current(ros):
    """200 boxes on every frame, frames at 20 Hz (faster than the node): max_objects tracks
    and no more, the rest counted as refused; the node answers the newest frames soon
    after the flood stops; and a Segment for one more object is refused, saying why."""
    ros.set(max_objects=4)
    start = dict(ros.node.keeper.stats)
    frame = scene(CUP, BALL, BOOK)
    rng = np.random.default_rng(0)
    flood = []
    for i in range(200):
        x, y = rng.uniform(0, W - 40), rng.uniform(0, H - 30)
        flood.append(detection((x, y, x + rng.uniform(10, 40), y + rng.uniform(10, 30)),
                               f"class{i % 7}", float(rng.uniform(0.5, 1.0))))
    ros.step(frame, detections=flood)
    before = dict(ros.node.keeper.stats)
    headers = []
    for _ in range(40):
        headers.append(ros.publish(frame, detections=flood))
        time.sleep(0.05)
    t0 = time.monotonic()
    newest = {conversions.stamp_key(h.stamp) for h in headers[-3:]}
    ros.wait_for(lambda: any(conversions.stamp_key(m.header.stamp) in newest
                             for m in ros.received("tracks")), "tracks of the newest frames",
                 timeout=20)
    caught_up = time.monotonic() - t0
    _, tracks = ros.step(frame, detections=flood)
    stats = ros.node.keeper.stats
    print(f"caught up {caught_up:.1f} s after the flood; node {ros.node.stats}; "
          f"detector {stats}")
    assert len(tracks.objects) == 4
    assert stats["tracks_refused"] > before["tracks_refused"]
    assert stats["tracks_started"] == start["tracks_started"] + 4
    assert stats["detections_dropped"] > before["detections_dropped"]  # one applied a frame
    assert caught_up < 10, caught_up
    # between two frames the node holds the newest HELD messages of detections, no more
    # (rclpy takes about 25 ms to deserialize one of 200 boxes here: some may be lost)
    before = dict(ros.node.keeper.stats)
    for _ in range(20):
        ros.detections_pub.publish(Detection2DArray(header=ros.header(), detections=flood))
        time.sleep(0.02)
    ros.wait_for(lambda: ros.node.keeper.stats["detections_in"] >= before["detections_in"]
                 + HELD + 2, "the detections")
    time.sleep(1.0)
    stats = ros.node.keeper.stats
    received = stats["detections_in"] - before["detections_in"]
    assert stats["detections_dropped"] - before["detections_dropped"] == received - HELD
    assert len(ros.node.keeper._held) == HELD
    res = ros.call(ros.segment_cli, Segment.Request(box=[10.0, 10.0, 60.0, 60.0]))
    assert not res.success and "max_objects is 4" in res.message, res.message
    ros.set(max_objects=0)
    res = ros.call(ros.segment_cli, Segment.Request(box=[10.0, 10.0, 60.0, 60.0]))
    assert res.success and res.object_id == 5, res.message
    received = ros.node.keeper.stats["detections_in"]
    ros.detections_pub.publish(Detection2DArray(header=ros.header(), detections=flood))
    ros.wait_for(lambda: ros.node.keeper.stats["detections_in"] > received, "the detections")
    assert ros.node.keeper._held
    assert ros.call(ros.reset_cli, Trigger.Request()).success
    assert not ros.node.keeper._held  # detections of before a reset start nothing after it


def test_detections_without_a_stamp_or_ahead_of_the_frames(ros):
    """A detector that does not stamp its messages, or stamps them with its own clock ahead
    of the camera's: its detections are applied on the latest frame (the one stamped ahead
    after waiting two frames for its frame to come)."""
    frame = scene(CUP, BALL)
    cup, ball = truth_detections(frame)
    ros.step(frame)
    ros.detections_pub.publish(Detection2DArray(detections=[cup]))  # stamp zero
    ros.wait_for(lambda: ros.node.keeper._held, "the detections")
    _, tracks = ros.step(frame)
    assert [(o.id, o.label) for o in tracks.objects] == [(1, "cup")]
    ahead = ros.header()
    ahead.stamp.sec += 60
    ros.detections_pub.publish(Detection2DArray(header=ahead, detections=[cup, ball]))
    ros.wait_for(lambda: ros.node.keeper._held, "the detections")
    for _ in range(2):
        _, tracks = ros.step(frame)
        assert [o.id for o in tracks.objects] == [1]
    _, tracks = ros.step(frame)
    assert [(o.id, o.label) for o in tracks.objects] == [(1, "cup"), (2, "ball")]


def test_detection_threshold_and_classes(ros):
    """Detections under the threshold or of a class not listed start nothing."""
    frame = scene(CUP, BALL)
    ros.set(detection_classes=" toy car ,ball ", detection_threshold=0.6)
    dets = truth_detections(frame)
    dets[1].results[0].hypothesis.score = 0.55
    _, tracks = ros.step(frame, detections=dets)
    _, tracks = ros.step(frame, detections=dets)
    assert tracks.objects == []
    dets[1].results[0].hypothesis.score = 0.65
    ros.step(frame, detections=dets)
    _, tracks = ros.step(frame, detections=dets)
    assert [(o.id, o.label) for o in tracks.objects] == [(1, "ball")]
