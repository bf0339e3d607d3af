"""The lifecycle node over real rclpy and real DDS (Fast DDS, localhost only, a domain id of
its own): lifecycle transitions through the lifecycle services, the Segment / remove / reset
services, tracks and label images stamped like the source image, every input encoding and
compressed input, a camera faster than the model.

A tiny SAM 2.1 with random weights at image_size 256 keeps this fast on CPU: the tests check
plumbing (headers, ids, shapes, errors, counters), not mask quality. The object-score bias is
raised so that the random model judges objects present. One node serves the module; each
test gets it active and tracking nothing (the ``ros`` fixture), so any test runs alone.

Needs the built workspace (tools/setup_ros.sh; tools/test.sh puts it on the path and sets
SAM_ROS_REQUIRE_ROS=1, which turns a missing build into a failure instead of a skip).
"""

import itertools
import os
import re
import resource
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from harness import TIMEOUT, NodeHarness
from sam_ros.model import SAM2, get_config, save_checkpoint
from sam_ros.msg import ObjectTrackArray
from sam_ros.ros import conversions as ros_image
from sam_ros.srv import RemoveObject

W, H = 320, 240
# Domains for nodes beside the module's, one each: back to back in one domain, a second
# /sam_ros node's change_state went unfound by wait_for_service for 30 s after its first
# call had been answered (twice in about 65 harnesses in a loop; cause in Fast DDS not
# pinned down).
SPARE_DOMAINS = itertools.count(int(os.environ["ROS_DOMAIN_ID"]) + 1)


def test_the_built_package_is_imported():
    # rosidl's sam_ros.msg/srv and our code must come from the same installed package
    import sam_ros.msg
    package = os.path.dirname(sam_ros.__file__)
    assert os.path.dirname(sam_ros.msg.__file__) == os.path.join(package, "msg")
    if os.environ.get("SAM_ROS_REQUIRE_ROS") == "1":
        assert "install" in sam_ros.__file__, sam_ros.__file__


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = SAM2(get_config("sam2.1_hiera_t"))
    with torch.no_grad():
        model.state_dict()["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].add_(1.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_random.pt"
    save_checkpoint(model, path)
    return str(path)


@pytest.fixture(scope="module")
def frame_rgb():
    import cv2

    from lab.oracle import read_image
    from lab.samples import IMAGES
    return cv2.resize(read_image(IMAGES[2]), (W, H), interpolation=cv2.INTER_AREA)


class Harness(NodeHarness):
    """The module's node (a small model; the last ring_size frames only) and its client's
    camera publishers and output subscriptions."""

    def __init__(self, checkpoint, domain_id=None):
        super().__init__(dict(checkpoint="/nonexistent/sam2_missing.pt", image_size=256,
                              ring_size=4, prompt_history=0.0, diagnostics_period=0.2,
                              error_log_period=1.0), domain_id)
        c = self.client
        self.image_pub = c.create_publisher(Image, "image", qos_profile_sensor_data)
        self.compressed_pub = c.create_publisher(CompressedImage, "image/compressed",
                                                 qos_profile_sensor_data)
        self.tracks, self.masks, self.diagnostics = [], [], []
        c.create_subscription(ObjectTrackArray, "/sam_ros/tracks", self.keep(self.tracks), 50)
        c.create_subscription(Image, "/sam_ros/masks", self.keep(self.masks), 50)
        c.create_subscription(DiagnosticArray, "/diagnostics", self.keep(self.diagnostics), 50)

    def header(self, frame_id="camera_optical"):
        self.seq += 1
        return Header(stamp=Time(sec=1000 + self.seq, nanosec=123), frame_id=frame_id)

    def publish(self, rgb, encoding="rgb8", pad=0, compressed=None):
        header = self.header()
        if compressed:
            self.compressed_pub.publish(ros_image.array_to_compressed(rgb, compressed, header))
            return header
        msg = make_image(rgb, encoding, pad)
        msg.header = header
        self.image_pub.publish(msg)
        return header

    def wait_tracks(self, header, timeout=TIMEOUT):
        """The tracks message whose stamp is ``header``'s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for msg in self.tracks:
                    if msg.header.stamp == header.stamp:
                        return msg
            time.sleep(0.01)
        raise AssertionError(f"no tracks for stamp {header.stamp} within {timeout} s; "
                             f"node stats {self.node.stats}")

    def publish_and_wait(self, rgb, tries=5, **kw):
        """Publish until one frame comes back as tracks (best-effort input may lose one)."""
        for _ in range(tries):
            header = self.publish(rgb, **kw)
            try:
                return header, self.wait_tracks(header, timeout=TIMEOUT / tries)
            except AssertionError:
                continue
        raise AssertionError(f"no tracks after {tries} frames; node stats {self.node.stats}")

    def add_objects(self, rgb, count):
        """Publish a frame and start ``count`` tracks on it (ids 1 to ``count`` after a
        reset)."""
        self.publish_and_wait(rgb)
        for i in range(count):
            res = self.segment(points=[60.0 + 80.0 * i, 120.0], labels=[1])
            assert res.success and res.object_id == i + 1, res.message


def make_image(rgb, encoding, pad=0, bigendian=False):
    """A sensor_msgs/Image of ``rgb`` in ``encoding`` with ``pad`` bytes after each row."""
    import cv2
    conv = {"rgb8": rgb, "bgr8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
            "rgba8": cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
            "bgra8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
            "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[encoding]
    h = conv.shape[0]
    row = conv.reshape(h, -1)
    padded = np.zeros((h, row.shape[1] + pad), np.uint8)
    padded[:, :row.shape[1]] = row
    msg = ros_image.array_to_image(conv, encoding)
    msg.step = padded.shape[1]
    msg.is_bigendian = int(bigendian)
    msg.data = ros_image._to_array(padded)
    return msg


@pytest.fixture(scope="module")
def harness(checkpoint):
    """The module's node: unconfigured, its checkpoint parameter a file that does not
    exist (``test_configure_fails_clearly_then_succeeds`` starts there)."""
    harness = Harness(checkpoint)
    harness.checkpoint = checkpoint
    yield harness
    harness.close()


@pytest.fixture
def ros(harness):
    """The module's node, active on the test checkpoint and tracking nothing: each test
    starts the tracks it needs (``add_objects``), so any one of them also runs alone."""
    if harness.state() == State.PRIMARY_STATE_UNCONFIGURED:
        harness.node.set_parameters([Parameter("checkpoint", value=harness.checkpoint)])
        assert harness.transition(Transition.TRANSITION_CONFIGURE)
    if harness.state() == State.PRIMARY_STATE_INACTIVE:
        assert harness.transition(Transition.TRANSITION_ACTIVATE)
    assert harness.call(harness.reset_cli, Trigger.Request()).success
    return harness


# ---------------------------------------------------------- conversion (no DDS)

@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_image_to_rgb(frame_rgb, encoding, pad):
    rgb = ros_image.image_to_rgb(make_image(frame_rgb, encoding, pad))
    assert rgb.shape == frame_rgb.shape and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    if encoding == "mono8":
        import cv2
        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        assert np.array_equal(rgb, np.repeat(gray[..., None], 3, axis=2))
    else:
        assert np.array_equal(rgb, frame_rgb)


def test_sixteen_bit_big_and_little_endian_and_bad_images():
    values = (np.arange(6 * 7, dtype=np.uint16) * 1531).reshape(6, 7)
    for big in (False, True):
        msg = ros_image.array_to_image(values, "mono16")
        raw = values.astype(">u2" if big else "<u2")
        padded = np.zeros((6, 7 * 2 + 4), np.uint8)
        padded[:, :14] = raw.view(np.uint8).reshape(6, 14)
        msg.data, msg.step, msg.is_bigendian = ros_image._to_array(padded), 18, int(big)
        assert np.array_equal(ros_image.image_to_array(msg), values)
    bad = ros_image.array_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    bad.encoding = "32FC1"
    with pytest.raises(ros_image.UnsupportedEncoding, match="32FC1"):
        ros_image.image_to_rgb(bad)
    short = ros_image.array_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    short.height = 8
    with pytest.raises(ros_image.UnsupportedEncoding, match="bytes"):
        ros_image.image_to_rgb(short)


def test_compressed_round_trip(frame_rgb):
    png = ros_image.array_to_compressed(frame_rgb, "png")
    assert np.array_equal(ros_image.compressed_to_rgb(png), frame_rgb)
    jpeg = ros_image.array_to_compressed(frame_rgb, "jpeg")
    assert np.abs(ros_image.compressed_to_rgb(jpeg).astype(int) - frame_rgb).mean() < 8


@pytest.mark.skipif(not ros_image.have_cv_bridge(), reason="cv_bridge is not installed "
                    "(the PyPI one is broken on numpy 2); the distribution's is compared")
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_same_as_cv_bridge(frame_rgb, encoding):
    from cv_bridge import CvBridge
    msg = make_image(frame_rgb, encoding, pad=3)
    ours = ros_image.image_to_array(msg)
    theirs = CvBridge().imgmsg_to_cv2(msg, desired_encoding="passthrough")
    assert np.array_equal(ours, theirs)
    assert np.array_equal(ros_image.image_to_rgb(msg),
                          CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))


# -------------------------------------------------------------- the node

def test_configure_fails_clearly_then_succeeds(harness, tmp_path):
    ros = harness
    assert ros.state() == State.PRIMARY_STATE_UNCONFIGURED
    # missing file
    assert not ros.transition(Transition.TRANSITION_CONFIGURE)
    assert ros.state() == State.PRIMARY_STATE_UNCONFIGURED
    # corrupt file
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    ros.node.set_parameters([Parameter("checkpoint", value=str(corrupt))])
    assert not ros.transition(Transition.TRANSITION_CONFIGURE)
    assert ros.state() == State.PRIMARY_STATE_UNCONFIGURED
    # a checkpoint of the wrong kind
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, wrong)
    ros.node.set_parameters([Parameter("checkpoint", value=str(wrong))])
    assert not ros.transition(Transition.TRANSITION_CONFIGURE)
    assert ros.state() == State.PRIMARY_STATE_UNCONFIGURED
    # a service call now: a clear error, no crash
    res = ros.segment(points=[10.0, 10.0], labels=[1])
    assert not res.success and "not configured" in res.message
    # the good one
    ros.node.set_parameters([Parameter("checkpoint", value=ros.checkpoint)])
    assert ros.transition(Transition.TRANSITION_CONFIGURE)
    assert ros.state() == State.PRIMARY_STATE_INACTIVE
    res = ros.segment(points=[10.0, 10.0], labels=[1])
    assert not res.success and "not active" in res.message
    assert ros.transition(Transition.TRANSITION_ACTIVATE)
    assert ros.state() == State.PRIMARY_STATE_ACTIVE


def test_segment_before_any_frame(ros):
    res = ros.segment(points=[10.0, 10.0], labels=[1])
    assert not res.success and "no camera frame" in res.message


def test_prompt_then_tracks_and_label_images_carry_the_source_header(ros, frame_rgb):
    header, tracks = ros.publish_and_wait(frame_rgb)
    assert tracks.header == header and tracks.objects == []
    short = ros.segment(points=[160.0, 120.0], labels=[1], once=True)
    assert short.success and len(short.mask.data) == 0  # no mask unless asked for
    res = ros.segment(points=[160.0, 120.0], labels=[1], return_mask=True, label="truck")
    assert res.success, res.message
    assert res.object_id == 1 and res.message == "ok"
    assert res.stamp == header.stamp and short.stamp == header.stamp
    assert res.mask.header == header
    assert (res.mask.height, res.mask.width, res.mask.encoding) == (H, W, "mono8")
    mask = ros_image.image_to_array(res.mask)
    assert set(np.unique(mask)) <= {0, 255}
    assert res.area == np.count_nonzero(mask) == short.area
    if mask.any():
        ys, xs = np.nonzero(mask)
        assert list(res.bbox) == [xs.min(), ys.min(), xs.max(), ys.max()]
    # box prompt -> a second object
    res2 = ros.segment(box=[20.0, 20.0, 200.0, 180.0])
    assert res2.success and res2.object_id == 2, res2.message
    # refine object 1 with a background click
    res3 = ros.segment(object_id=1, points=[10.0, 10.0], labels=[0])
    assert res3.success and res3.object_id == 1, res3.message

    header, tracks = ros.publish_and_wait(frame_rgb)
    assert tracks.header == header  # stamp and frame_id unchanged
    assert [o.id for o in tracks.objects] == [1, 2]
    assert [o.label for o in tracks.objects] == ["truck", ""]  # a refinement keeps the label
    for o in tracks.objects:
        assert len(o.bbox) == 4 and len(o.centroid) == 2
        if o.visible:
            assert o.area > 0
            assert 0 <= o.bbox[0] <= o.bbox[2] < W and 0 <= o.bbox[1] <= o.bbox[3] < H
        else:
            assert o.area == 0
    ros.wait_for(lambda: any(m.header == header for m in list(ros.masks)), "label image")
    labels_msg = next(m for m in list(ros.masks) if m.header == header)
    assert (labels_msg.height, labels_msg.width, labels_msg.encoding) == (H, W, "mono16")
    labels = ros_image.image_to_array(labels_msg)
    assert set(np.unique(labels)) <= {0, 1, 2}
    for o in tracks.objects:
        assert int((labels == o.id).sum()) <= o.area


def test_bad_prompts_are_refused_and_tracking_goes_on(ros, frame_rgb):
    ros.add_objects(frame_rgb, 2)
    old_header, _ = ros.publish_and_wait(frame_rgb)
    for _ in range(5):  # ring_size is 4: old_header leaves the ring
        ros.publish_and_wait(frame_rgb)
    nan = float("nan")
    bad = {
        "NaN": dict(points=[nan, 10.0], labels=[1]),
        "outside": dict(points=[W + 50.0, 10.0], labels=[1]),
        "labels": dict(points=[10.0, 10.0, 20.0, 20.0], labels=[1]),
        "odd": dict(points=[10.0, 10.0, 20.0], labels=[1, 1]),
        "empty": dict(),
        "box": dict(box=[1.0, 2.0, 3.0]),
        "unknown id": dict(object_id=77, points=[10.0, 10.0], labels=[1]),
        "old stamp": dict(points=[10.0, 10.0], labels=[1], stamp=old_header.stamp),
        "once on an id": dict(object_id=1, once=True, points=[10.0, 10.0], labels=[1]),
    }
    for what, fields in bad.items():
        res = ros.segment(**fields)
        assert not res.success, what
        assert res.message and res.message != "ok", what
        print(f"{what}: {res.message}")
    assert "unknown object id 77" in ros.segment(**bad["unknown id"]).message
    assert "no recent frame has stamp" in ros.segment(**bad["old stamp"]).message
    assert "empty prompt" in ros.segment().message
    header, tracks = ros.publish_and_wait(frame_rgb)
    assert [o.id for o in tracks.objects] == [1, 2]


def test_prompt_on_a_recent_past_frame(ros, frame_rgb):
    ros.add_objects(frame_rgb, 2)
    past, _ = ros.publish_and_wait(frame_rgb)
    ros.publish_and_wait(frame_rgb)
    res = ros.segment(points=[100.0, 100.0], labels=[1], stamp=past.stamp, return_mask=True)
    assert res.success, res.message
    assert res.stamp == past.stamp and res.mask.header == past
    assert res.object_id == 3
    _, tracks = ros.publish_and_wait(frame_rgb)
    assert [o.id for o in tracks.objects] == [1, 2, 3]
    once = ros.segment(points=[50.0, 50.0], labels=[1], once=True)
    assert once.success and once.object_id == 0, once.message
    _, tracks = ros.publish_and_wait(frame_rgb)
    assert [o.id for o in tracks.objects] == [1, 2, 3]


def test_remove_and_reset(ros, frame_rgb):
    ros.add_objects(frame_rgb, 3)
    res = ros.call(ros.remove_cli, RemoveObject.Request(object_id=2))
    assert res.success, res.message
    _, tracks = ros.publish_and_wait(frame_rgb)
    assert [o.id for o in tracks.objects] == [1, 3]
    res = ros.call(ros.remove_cli, RemoveObject.Request(object_id=2))
    assert not res.success and "unknown object id 2" in res.message
    res = ros.call(ros.reset_cli, Trigger.Request())
    assert res.success, res.message
    _, tracks = ros.publish_and_wait(frame_rgb)
    assert tracks.objects == []
    res = ros.segment(points=[160.0, 120.0], labels=[1])
    assert res.success and res.object_id == 1, res.message


@pytest.mark.parametrize("encoding,pad", [("rgb8", 0), ("bgr8", 0), ("rgba8", 0),
                                          ("bgra8", 0), ("mono8", 0), ("rgb8", 7),
                                          ("bgr8", 3)])
def test_each_encoding(ros, frame_rgb, encoding, pad):
    ros.add_objects(frame_rgb, 1)
    before = dict(ros.node.stats)
    header, tracks = ros.publish_and_wait(frame_rgb, encoding=encoding, pad=pad)
    assert tracks.header == header and [o.id for o in tracks.objects] == [1]
    assert ros.node.stats["unsupported"] == before["unsupported"]
    assert ros.node.stats["errors"] == before["errors"]


def test_unsupported_encoding_is_counted_not_fatal(ros, frame_rgb):
    before = ros.node.stats["unsupported"]
    msg = ros_image.array_to_image(np.zeros((H, W), np.float32).view(np.uint16)[:, :W], "16UC1")
    msg.encoding = "32FC1"
    msg.header = ros.header()
    for _ in range(3):
        ros.image_pub.publish(msg)
    ros.wait_for(lambda: ros.node.stats["unsupported"] > before, "unsupported counter")
    header, tracks = ros.publish_and_wait(frame_rgb)
    assert tracks.header == header


def test_diagnostics(ros, frame_rgb):
    ros.publish_and_wait(frame_rgb)

    def latest():
        with ros.lock:
            status = ros.diagnostics[-1].status[0] if ros.diagnostics else None
        return {kv.key: kv.value for kv in status.values} if status else {}

    ros.wait_for(lambda: int(latest().get("processed", 0)) > 0, "/diagnostics of a frame")
    values = latest()
    for key in ("frames_in", "processed", "dropped", "latency_ms", "objects", "device"):
        assert key in values
    assert values["device"] == "cpu"


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_fast_camera_is_dropped_not_queued(ros, frame_rgb):
    def burst(n=60, hz=200.0):
        headers = []
        for _ in range(n):
            headers.append(ros.publish(frame_rgb))
            time.sleep(1.0 / hz)
        return headers

    burst(20)
    time.sleep(1.0)
    rss0 = _rss_mb()
    before = dict(ros.node.stats)
    for _ in range(3):
        headers = burst()
        # the node stays current: one of the last frames is processed soon after the burst,
        # not a backlog of 60 frames
        t0 = time.monotonic()
        ros.wait_for(lambda: any(m.header.stamp in [h.stamp for h in headers[-3:]]
                                 for m in list(ros.tracks)), "tracks of the newest frames",
                     timeout=15)
        caught_up = time.monotonic() - t0
        assert caught_up < 10, caught_up
    stats = ros.node.stats
    processed = stats["processed"] - before["processed"]
    dropped = stats["dropped"] - before["dropped"]
    frames_in = stats["frames_in"] - before["frames_in"]
    print(f"frames in {frames_in}, processed {processed}, dropped {dropped}, "
          f"RSS {rss0:.0f} -> {_rss_mb():.0f} MB")
    assert dropped > 0 and processed < frames_in / 2, stats
    # every frame received is processed or dropped; one in the worker and one in the
    # mailbox may be on their way at either snapshot
    assert abs(frames_in - (processed + dropped)) <= 2, stats
    assert _rss_mb() - rss0 < 200  # flat: no queue of frames


def test_the_camera_is_heard_while_the_tracker_is_busy(ros, frame_rgb):
    """A tracker call can take seconds (a 1024 px frame on a CPU, a prompt that catches up
    through the ring). Meanwhile the camera callback must go on receiving, so that the
    newest frame is the one processed next and the counts are true: nothing else may make
    it wait for the tracker (the diagnostics timer did, through the tracker lock)."""
    ros.publish_and_wait(frame_rgb)
    before = ros.node.stats["frames_in"]
    sent = 30
    with ros.node.session.lock:  # the tracker is busy for 1.5 s, 7 diagnostics periods
        for _ in range(sent):
            ros.publish(frame_rgb)
            time.sleep(0.05)
        heard = ros.node.stats["frames_in"] - before
    # best-effort may lose a frame or two on a loaded machine, not the 25 that a blocked
    # callback loses (the reader keeps the last 5)
    assert heard >= sent - 3, (heard, ros.node.stats)
    ros.publish_and_wait(frame_rgb)  # and the node goes on


def test_prompt_client(ros, frame_rgb, tmp_path):
    import subprocess
    def run(*args):
        return subprocess.run(
            [sys.executable, "-P", "-m", "sam_ros.ros.prompt_client", "--timeout", "20", *args],
            capture_output=True, text=True, timeout=120)

    ros.publish_and_wait(frame_rgb)
    out = tmp_path / "mask.png"
    r = run("segment", "--point", "160,120", "--point", "10,10,0", "--once", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "object 0" in r.stdout and out.exists()
    # the box as plain numbers, as typed (not numpy's reprs)
    assert re.search(r"bbox \[\d+, \d+, \d+, \d+\]", r.stdout), r.stdout
    r = run("segment", "--id", "42", "--point", "160,120")
    assert r.returncode == 1 and "unknown object id 42" in r.stdout, r.stdout + r.stderr
    r = run("state")
    assert r.returncode == 0 and r.stdout.strip() == "active", r.stdout + r.stderr


def test_segment_all_lists_masks_and_starts_tracks(ros, frame_rgb):
    """~/segment_all on the latest frame: the masks found (filters off: random weights
    rate every mask low) with boxes, scores and areas, the label image with the frame's
    header; with track: true, a track from each, labelled, under the cap."""
    from sam_ros.srv import SegmentAll
    client = ros.client.create_client(SegmentAll, "/sam_ros/segment_all")
    header, _ = ros.publish_and_wait(frame_rgb)
    everything = dict(points_per_side=4, pred_iou_thresh=-1.0, stability_score_thresh=-1.0)
    res = ros.call(client, SegmentAll.Request(**everything))
    assert res.success and res.stamp == header.stamp, res.message
    count = len(res.scores)
    assert count >= 1 and len(res.boxes) == 4 * count and len(res.areas) == count
    assert res.labels.header == header and (res.labels.height, res.labels.width) == (H, W)
    labels = ros_image.image_to_array(res.labels)
    assert set(np.unique(labels)) <= set(range(count + 1)) and labels.max() >= 1
    assert list(res.object_ids) == [0] * count
    ros.node.set_parameters([Parameter("segment_all_max_tracks", value=1)])
    res = ros.call(client, SegmentAll.Request(track=True, label="thing", **everything))
    assert res.success and res.object_ids[0] == 1 and list(res.object_ids[1:]) == [0] * (
        len(res.scores) - 1), (res.message, list(res.object_ids))
    labels = ros_image.image_to_array(res.labels)
    assert set(np.unique(labels)) <= {0, 1}
    _, tracks = ros.publish_and_wait(frame_rgb)
    assert [(o.id, o.label) for o in tracks.objects] == [(1, "thing")]
    ros.node.set_parameters([Parameter("segment_all_max_tracks", value=16)])
    bad = ros.call(client, SegmentAll.Request(points_per_side=-2))
    assert not bad.success and "points_per_side" in bad.message


def test_parameters_change_when_they_take_effect(ros):
    """A parameter read at configure is refused while configured, one read at activate
    while active, with the transition to run first; live ones change at once; values out of
    their choices are refused in any state (dtype float16 ran 7x slower on a CPU)."""
    def set_one(name, value):
        return ros.node.set_parameters([Parameter(name, value=value)])[0]

    assert ros.state() == State.PRIMARY_STATE_ACTIVE
    refused = set_one("checkpoint", "/some/other.pt")
    assert not refused.successful and "cleanup" in refused.reason, refused.reason
    refused = set_one("input_transport", "compressed")
    assert not refused.successful and "deactivate" in refused.reason, refused.reason
    refused = set_one("dtype", "float16")
    assert not refused.successful and "float32, bfloat16" in refused.reason, refused.reason
    assert ros.node.get_parameter("dtype").value == "float32"
    assert set_one("publish_overlay", False).successful
    assert set_one("publish_overlay", True).successful


def test_the_parameter_file_lists_every_parameter_with_its_default():
    """config/sam_ros.yaml (what the launch file loads) and the node's table agree."""
    import yaml

    from sam_ros.ros import parameters
    path = os.path.join(os.path.dirname(__file__), "..", "..", "config", "sam_ros.yaml")
    with open(path) as f:
        listed = yaml.safe_load(f)["sam_ros"]["ros__parameters"]
    assert listed == {spec.name: spec.default for spec in parameters.SPECS}


def test_configure_names_a_device_it_cannot_use():
    from sam_ros.ros.parameters import device_problem
    assert device_problem("cpu") is None
    assert "not a torch device" in device_problem("gpu0")
    if not torch.cuda.is_available():
        assert "use device cpu" in device_problem("cuda")


def test_compressed_input_and_the_remaining_transitions(ros, frame_rgb):
    ros.add_objects(frame_rgb, 1)
    assert ros.transition(Transition.TRANSITION_DEACTIVATE)
    assert ros.state() == State.PRIMARY_STATE_INACTIVE
    ros.node.set_parameters([Parameter("input_transport", value="compressed")])
    assert ros.transition(Transition.TRANSITION_ACTIVATE)
    for fmt in ("jpeg", "png"):
        header, tracks = ros.publish_and_wait(frame_rgb, compressed=fmt)
        assert tracks.header == header and [o.id for o in tracks.objects] == [1]
    assert ros.transition(Transition.TRANSITION_DEACTIVATE)
    assert ros.transition(Transition.TRANSITION_CLEANUP)
    assert ros.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert ros.node.session is None
    res = ros.segment(points=[10.0, 10.0], labels=[1])
    assert not res.success and "not configured" in res.message
    # configure again after cleanup, then shut down from inactive
    ros.node.set_parameters([Parameter("input_transport", value="raw")])
    assert ros.transition(Transition.TRANSITION_CONFIGURE)
    assert ros.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert ros.state() == State.PRIMARY_STATE_FINALIZED
    assert ros.node.session is None
    res = ros.segment(points=[10.0, 10.0], labels=[1])
    assert not res.success and "shut down" in res.message, res.message
    res = ros.call(ros.reset_cli, Trigger.Request())
    assert not res.success and "shut down" in res.message, res.message


def test_mask_stats_label_image_and_overlay():
    from sam_ros.drawing import overlay_image
    from sam_ros.masks import mask_stats
    from sam_ros.msg import ObjectTrack
    from sam_ros.tracker import TrackResult, label_image
    rng = np.random.default_rng(0)
    mask = np.zeros((H, W), bool)
    mask[30:90, 40:200] = rng.random((60, 160)) > 0.3
    area, bbox, (cx, cy) = mask_stats(mask)
    ys, xs = np.nonzero(mask)
    assert area == xs.size and bbox == [xs.min(), ys.min(), xs.max(), ys.max()]
    assert abs(cx - xs.mean()) < 1e-6 and abs(cy - ys.mean()) < 1e-6
    assert mask_stats(np.zeros((H, W), bool)) == (0, [0, 0, 0, 0], (0.0, 0.0))
    other = np.zeros((H, W), bool)
    other[60:150, 100:150] = True  # overlaps mask's rows 60-89
    # object 3 is surer than object 300 on the left half of the overlap, less sure on the right
    logits_3 = np.where(mask, 1.0, -1.0).astype(np.float32)
    logits_3[:, 125:] = np.where(mask[:, 125:], 0.2, -1.0)
    logits_300 = np.where(other, 0.5, -1.0).astype(np.float32)
    results = {3: TrackResult(3, 0, None, mask, logits_3, 1.0, True, 0.5),
               300: TrackResult(300, 0, None, other, logits_300, 1.0, True, 0.5),
               4: TrackResult(4, 0, None, ~mask, np.where(mask, -1.0, 1.0), -1.0, False, 0.5)}
    labels = label_image((H, W), results)
    assert labels.dtype == np.uint16
    left = np.zeros((H, W), bool)
    left[:, :125] = True
    assert (mask & other & left).any() and (mask & other & ~left).any()
    assert np.array_equal(labels == 3, mask & ~(other & ~left))
    assert np.array_equal(labels == 300, other & ~(mask & left))
    assert not (labels == 4).any()
    assert np.array_equal(labels == 0, ~mask & ~other)
    rgb = rng.integers(0, 255, (H, W, 3), np.uint8)
    tracks = [ObjectTrack(id=3, visible=True, bbox=bbox, centroid=[cx, cy], area=area)]
    over = overlay_image(rgb, labels, tracks)
    assert over.shape == rgb.shape and over.dtype == np.uint8
    background = labels == 0
    background[25:95, 35:205] = False  # the drawn box and text
    assert np.array_equal(over[background], rgb[background])
    assert not np.array_equal(over[other], rgb[other])
    near = ObjectTrack(id=3, visible=True, bbox=bbox, centroid=[cx, cy], area=area, has_3d=True)
    near.position.z = 1.5
    ys, xs = np.nonzero(np.any(overlay_image(rgb, labels, [near]) != over, axis=2))
    # the distance is written after the id, on its line
    assert xs.size and xs.min() > cx + 10 and cy - 30 < ys.min() and ys.max() < cy + 5


class _IdOnlyTracker:
    """What the id policy touches of a StreamingTracker: object ids, prompts, removal, reset."""

    latest_frame = np.zeros((2, 2, 3), np.uint8)

    def __init__(self):
        self.object_ids = set()

    def add_prompt(self, object_id, frame=None, **prompt):
        self.object_ids.add(object_id)

    def remove(self, object_id):
        self.object_ids.discard(object_id)

    def reset(self):
        self.object_ids.clear()


def test_ids_are_not_reused_and_wrap_below_the_label_image_limit():
    from sam_ros.ros.session import MAX_OBJECT_ID, Session
    session = Session(_IdOnlyTracker())

    def new():
        return session.segment({"points": [[0, 0]]})[0]

    assert [new(), new(), new()] == [1, 2, 3]
    session.remove(3)
    session.remove(1)
    assert new() == 4  # not 1 or 3: a gone object's id is not handed out again
    while len(session.tracker.object_ids) < 100:
        new()
    for object_id in range(5, 100):
        session.remove(object_id)
    ids = [new() for _ in range(MAX_OBJECT_ID - 102)]
    assert ids[-1] == MAX_OBJECT_ID
    assert [new(), new()] == [1, 3]  # past 65535: the lowest free ids (2 and 4 are tracked)
    for object_id in range(5, 200):
        if object_id in session.tracker.object_ids:
            session.remove(object_id)
    assert new() == 5
    while len(session.tracker.object_ids) < MAX_OBJECT_ID:
        new()
    with pytest.raises(ValueError, match="every id up to 65535 is in use"):
        new()
    assert session.reset() == MAX_OBJECT_ID and new() == 1


@pytest.mark.parametrize("start", ["unconfigured", "active"])
def test_shutdown_from_unconfigured_and_active(checkpoint, frame_rgb, start):
    # a domain of its own: the module's node (also named /sam_ros) is still up
    h = Harness(checkpoint, domain_id=next(SPARE_DOMAINS))
    try:
        if start == "unconfigured":
            assert h.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        else:
            h.node.set_parameters([Parameter("checkpoint", value=checkpoint)])
            assert h.transition(Transition.TRANSITION_CONFIGURE)
            assert h.transition(Transition.TRANSITION_ACTIVATE)
            h.publish_and_wait(frame_rgb)
            assert h.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert h.state() == State.PRIMARY_STATE_FINALIZED
        assert h.node.session is None and not h.node.worker.alive
    finally:
        h.close()


def test_a_prompt_reaches_back_prompt_history_seconds(checkpoint, frame_rgb):
    """With prompt_history, a stamp of several seconds ago still names a frame (the nearest
    one the thinned ring holds, said in the message), with at most ring_size frames held;
    a stamp older than that is refused. Frames here are 1 s apart."""
    h = Harness(checkpoint, domain_id=next(SPARE_DOMAINS))
    try:
        h.node.set_parameters([Parameter("checkpoint", value=checkpoint),
                               Parameter("ring_size", value=6),
                               Parameter("prompt_history", value=12.0)])
        assert h.transition(Transition.TRANSITION_CONFIGURE)
        assert h.transition(Transition.TRANSITION_ACTIVATE)
        headers = [h.publish_and_wait(frame_rgb)[0] for _ in range(16)]
        tracker = h.node.session.tracker
        assert len(tracker.ring_frames) <= 6
        held = {(s.stamp.sec, s.stamp.nanosec) for s in tracker.ring_stamps}
        back = next(x for x in headers[-11:-3] if (x.stamp.sec, x.stamp.nanosec) not in held)
        res = h.segment(points=[100.0, 100.0], labels=[1], stamp=back.stamp)
        assert res.success and "nearest" in res.message, res.message
        assert abs(res.stamp.sec - back.stamp.sec) <= 2 and res.stamp != back.stamp
        res = h.segment(points=[100.0, 100.0], labels=[1], stamp=headers[0].stamp)
        assert not res.success and "prompt_history" in res.message, res.message
    finally:
        h.close()


def test_configure_downloads_a_model_by_name(frame_rgb, tmp_path, monkeypatch, capfd):
    """checkpoint = a model name: configure fetches it from a mirror (here a server on the
    loopback address; a log line per 10%), loads and tracks; with the mirror gone and the
    cache empty, configure fails cleanly and the node stays unconfigured, ready to retry."""
    import functools
    import hashlib
    import http.server
    import shutil

    from sam_ros.model import BUNDLED_CHECKPOINT, hub

    name = "sam_ros_mini_by_name"
    served = tmp_path / "mirror"
    served.mkdir()
    shutil.copy(BUNDLED_CHECKPOINT, served / f"{name}.pt")
    data = (served / f"{name}.pt").read_bytes()
    monkeypatch.setitem(hub.CHECKPOINTS, name, hub.OfficialCheckpoint(
        name, "sam_ros_mini", "test", 8, len(data), hashlib.sha256(data).hexdigest()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SAM_ROS_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SAM_ROS_DOWNLOAD_BASE", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(hub, "META_BASE_URL", "http://127.0.0.1:9")  # nothing listens
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    h = Harness(None, domain_id=next(SPARE_DOMAINS))
    try:
        h.node.set_parameters([Parameter("checkpoint", value=name)])
        assert h.transition(Transition.TRANSITION_CONFIGURE)
        assert (tmp_path / "cache" / f"{name}.pt").read_bytes() == data
        assert f"downloading {name}: 100%" in capfd.readouterr().err
        assert h.transition(Transition.TRANSITION_ACTIVATE)
        h.publish_and_wait(frame_rgb)
        assert h.segment(points=[100.0, 100.0], labels=[1]).success
        assert h.transition(Transition.TRANSITION_DEACTIVATE)
        assert h.transition(Transition.TRANSITION_CLEANUP)
        server.shutdown()
        server.server_close()
        shutil.rmtree(tmp_path / "cache")
        assert not h.transition(Transition.TRANSITION_CONFIGURE)
        assert h.state() == State.PRIMARY_STATE_UNCONFIGURED
        err = capfd.readouterr().err
        assert f"configure failed: cannot get checkpoint {name}" in err, err[-3000:]
        assert not (tmp_path / "cache" / f"{name}.pt").exists()
    finally:
        h.close()


@pytest.mark.parametrize("variant", ["mobile_sam", "sam_vit_b"])
def test_image_only_models_answer_once(variant, frame_rgb, tmp_path):
    """SAM and MobileSAM checkpoints serve Segment with once: true (a point, a box), on the
    frame named by its stamp; a request to track is refused, saying a SAM 2 checkpoint is
    needed (they have no memory to track with). Random weights: plumbing, not masks."""
    from sam_ros.model import build_model
    torch.manual_seed(0)
    path = tmp_path / f"{variant}.pt"
    save_checkpoint(build_model(variant), path)
    h = Harness(None, domain_id=next(SPARE_DOMAINS))
    try:
        h.node.set_parameters([Parameter("checkpoint", value=str(path)),
                               Parameter("image_size", value=0)])  # SAM's is fixed: 1024
        assert h.transition(Transition.TRANSITION_CONFIGURE)
        assert h.transition(Transition.TRANSITION_ACTIVATE)
        header, tracks = h.publish_and_wait(frame_rgb)
        assert tracks.objects == []
        # the first answer encodes the frame: SAM ViT-B takes tens of seconds on a 2-core CPU
        point = h.segment(points=[160.0, 120.0], labels=[1], once=True, return_mask=True,
                          timeout=300.0)
        assert point.success and point.object_id == 0, point.message
        assert point.stamp == header.stamp and point.mask.header == header
        assert (point.mask.height, point.mask.width) == (H, W)
        box = h.segment(box=[40.0, 30.0, 280.0, 200.0], once=True, stamp=header.stamp)
        assert box.success and box.stamp == header.stamp, box.message
        assert np.isfinite(box.iou) and np.isnan(box.score)  # no object score in these models
        refused = h.segment(points=[160.0, 120.0], labels=[1])
        assert not refused.success and "image-only" in refused.message
        assert "SAM 2" in refused.message
        from sam_ros.srv import SegmentAll
        client = h.client.create_client(SegmentAll, "/sam_ros/segment_all")
        found = h.call(client, SegmentAll.Request(points_per_side=2, pred_iou_thresh=-1.0,
                                                  stability_score_thresh=-1.0))
        assert found.success and found.stamp == header.stamp, found.message
        refused = h.call(client, SegmentAll.Request(points_per_side=2, track=True))
        assert not refused.success and "image-only" in refused.message
    finally:
        h.close()


def test_the_executor_outlives_many_transitions(checkpoint, frame_rgb):
    """Deactivate destroys the camera subscription from an executor thread while the
    spinning thread builds its wait set. When the subscription had QoS event handlers, that
    ended the spin with InvalidHandle now and then (rclpy issue 1284), and no service
    answered again: a lifecycle call timed out in 1 of 2 runs of 60 cycles before the fix."""
    h = Harness(checkpoint, domain_id=next(SPARE_DOMAINS))
    try:
        h.node.set_parameters([Parameter("checkpoint", value=checkpoint)])
        for _ in range(80):
            assert h.transition(Transition.TRANSITION_CONFIGURE)
            assert h.transition(Transition.TRANSITION_ACTIVATE)
            h.publish_and_wait(frame_rgb)
            assert h.transition(Transition.TRANSITION_DEACTIVATE)
            assert h.transition(Transition.TRANSITION_CLEANUP)
        assert h.thread.is_alive()
        assert h.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        h.close()


def test_ctrl_c_twice_while_a_frame_is_in_flight(checkpoint, frame_rgb):
    """The installed executable in its own process: Ctrl-C while its worker is inside the
    model, and Ctrl-C again during the clean-up, still end it cleanly (exit status 0), each
    shutdown step logged. SIGUSR1 first prints every thread's stack and changes nothing."""
    import signal
    import subprocess

    from ament_index_python.packages import get_package_prefix
    from rclpy.executors import SingleThreadedExecutor

    domain = next(SPARE_DOMAINS)
    exe = os.path.join(get_package_prefix("sam_ros"), "lib", "sam_ros", "sam_ros_node")
    # image_size 1024: a frame takes seconds on a CPU, so one is surely in flight
    proc = subprocess.Popen([exe, "--activate", "--ros-args", "-p", f"checkpoint:={checkpoint}",
                             "-p", "image_size:=1024"],
                            env=dict(os.environ, ROS_DOMAIN_ID=str(domain)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    camera = rclpy.create_node("ctrl_c_camera", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(camera)
    try:
        tracks = []
        camera.create_subscription(ObjectTrackArray, "/sam_ros/tracks", tracks.append, 10)
        pub = camera.create_publisher(Image, "image", qos_profile_sensor_data)
        image = ros_image.array_to_image(frame_rgb, "rgb8")
        deadline = time.monotonic() + 120
        while not tracks and proc.poll() is None and time.monotonic() < deadline:
            pub.publish(image)
            executor.spin_once(timeout_sec=0.2)
        assert tracks, "the node processed no frame"
        pub.publish(image)  # the worker takes it at once
        time.sleep(0.5)
        proc.send_signal(signal.SIGUSR1)  # every thread's stack, to find a hang by
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        executor.shutdown()
        camera.destroy_node()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0 and "Traceback" not in output, output
    assert "ros/worker.py" in output, output  # the worker's stack, printed on SIGUSR1
    assert output.index("spin ended; stopping") < output.index("exiting"), output
