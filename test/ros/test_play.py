"""The camera player (sam_ros.ros.play) over real rclpy and real DDS (Fast DDS, localhost
only, a domain of its own): what a subscriber receives from a video file and a folder of
images (size, encoding, pixels, frame_id, stamps, the rate, CameraInfo beside them,
compressed frames, --start/--frames, --loop), the exit status for sources that cannot be
opened and on Ctrl-C, and the schedule and the camera path against a fake clock and a fake
VideoCapture (no camera here).

Frames are small (a few kB) but in one test, which checks that large best-effort frames
arrive through the Fast DDS profile that the player sets for itself; where a test counts
frames, the player is --reliable and waits for the test's subscriber (--wait), and a frame
that a stalled machine makes it skip is tolerated. Rates are checked on the stamps (taken by
the player when it publishes), not on arrival times.

Needs the built workspace (tools/setup_ros.sh; SAM_ROS_REQUIRE_ROS=1 turns a missing build
into a failure).
"""

import itertools
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lab.samples import PHOTOS, VIDEOS
from sam_ros.ros import play
from sam_ros.ros.conversions import compressed_to_rgb, image_to_array

VIDEO = str(VIDEOS[0])  # 1280 x 720, 29.97 fps, 121 frames
SHORT_VIDEO = str(VIDEOS[2])  # 60 frames
TIMEOUT = 20.0
# A domain of this module's own (set for its tests by the `ros` fixture): the module's
# players and subscribers must not meet the other modules' nodes.
DOMAIN = 10 + os.getpid() % 80
# One colour per image of the test folders: every channel differs, so RGB and BGR differ.
COLOURS = [(200, 30, 90), (20, 180, 60), (70, 40, 230), (250, 250, 10), (5, 120, 160)]



# ------------------------------------------------------------------ fixtures

class Listener:
    """A node of the test's own that keeps what arrives on the topics it is asked about."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node("play_test_listener", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin)
        self.thread.start()
        self.lock = threading.Lock()

    def listen(self, msg_type, topic, reliable=True):
        """A list that fills with the messages arriving on ``topic`` (absolute name), and the
        subscription (to destroy)."""
        got = []

        def keep(msg):
            with self.lock:
                got.append(msg)
        qos = play.reliable_qos(100) if reliable else qos_profile_sensor_data
        return got, self.node.create_subscription(msg_type, topic, keep, qos)

    def close(self):
        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope="module")
def ros():
    domain = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(DOMAIN)  # for main() in this process and subprocesses
    listener = Listener()
    yield listener
    listener.close()
    if domain is None:
        del os.environ["ROS_DOMAIN_ID"]
    else:
        os.environ["ROS_DOMAIN_ID"] = domain


@pytest.fixture
def subscribe(ros):
    """subscribe(type, topic, reliable=True) -> the list it fills; unsubscribed afterwards."""
    subscriptions = []

    def make(msg_type, topic, reliable=True):
        got, sub = ros.listen(msg_type, topic, reliable)
        subscriptions.append(sub)
        return got
    yield make
    for sub in subscriptions:
        ros.node.destroy_subscription(sub)


@pytest.fixture
def colour_folder(tmp_path):
    """A folder of small PNGs, one colour each, named so that name order is COLOURS order."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, rgb in enumerate(COLOURS):
        image = np.empty((24, 32, 3), np.uint8)
        image[:] = rgb
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    return folder


def stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def assert_on_schedule(indices, stamps, rate):
    """Frame i of a played part published at t0 + i / rate, where ``indices`` say which frame
    each stamp is of: in order, the first never skipped, and the rate kept, measured as the
    median of the pairwise slopes of stamp over index (Theil-Sen): a loaded machine wakes the
    player late now and then, and may make it skip a frame, without moving that median much."""
    assert indices[0] == 0 and (np.diff(indices) > 0).all(), indices
    i, t = np.array(indices), np.array(stamps)
    a, b = np.triu_indices(len(i), k=1)
    slope = np.median((t[b] - t[a]) / (i[b] - i[a]))
    assert slope == pytest.approx(1.0 / rate, rel=0.15), (1 / slope, t - t[0])


def decoded_frames(path, count, size):
    """The first ``count`` frames of a video as the player should publish them (RGB, resized
    by area), decoded here independently."""
    cap = cv2.VideoCapture(path)
    frames = []
    for _ in range(count):
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA),
                                   cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def which(rgb, candidates):
    """The index of the candidate image equal to ``rgb``."""
    found = [i for i, c in enumerate(candidates) if np.array_equal(rgb, c)]
    assert len(found) == 1, f"the frame matches candidates {found}"
    return found[0]


def colour_index(rgb, tolerance=0):
    found = [i for i, c in enumerate(COLOURS) if np.abs(rgb.astype(int) - c).max() <= tolerance]
    assert len(found) == 1, f"the frame is none of the test colours: {rgb[0, 0]}"
    return found[0]


def run_main(argv):
    """play.main in this process, with the test's subscriber already there (--wait)."""
    assert play.main([*argv, "--reliable", "--wait"]) == 0


# ------------------------------------------------------------------ over DDS

def test_video_file_frames_stamps_and_its_own_rate(subscribe):
    images = subscribe(Image, "/image")
    run_main([VIDEO, "--width", "160", "--frames", "20", "--frame-id", "test_cam"])
    expected = decoded_frames(VIDEO, 20, (160, 90))
    assert len(images) >= 15  # all 20, unless the machine stalled for a frame's period
    for msg in images:
        assert (msg.width, msg.height, msg.encoding, msg.header.frame_id) == (
            160, 90, "rgb8", "test_cam")
    indices = [which(image_to_array(m), expected) for m in images]
    assert_on_schedule(indices, [stamp(m) for m in images], 30000 / 1001)  # its own 29.97 fps


def test_a_rate_of_its_own(subscribe):
    images = subscribe(Image, "/image")
    run_main([SHORT_VIDEO, "--rate", "60", "--frames", "40", "--scale", "0.05"])
    expected = decoded_frames(SHORT_VIDEO, 40, (64, 36))
    assert len(images) >= 20, len(images)
    indices = [which(image_to_array(m), expected) for m in images]
    assert_on_schedule(indices, [stamp(m) for m in images], 60)


def test_folder_start_frames_bgr8(subscribe, colour_folder):
    images = subscribe(Image, "/image")
    run_main([str(colour_folder), "--start", "1", "--frames", "3", "--encoding", "bgr8"])
    assert {(m.width, m.height, m.encoding, m.header.frame_id) for m in images} == {
        (32, 24, "bgr8", "camera")}
    indices = [colour_index(image_to_array(m)[:, :, ::-1]) for m in images]  # BGR -> RGB
    # frames 1, 2, 3 (one of the last two may be skipped by a stalled machine)
    assert indices[0] == 1 and set(indices) <= {1, 2, 3} and len(indices) >= 2, indices
    assert stamp(images[-1]) - stamp(images[0]) > 0.09  # 10 Hz, a folder's default rate


def test_camera_info_from_calibration_scaled_with_the_image(subscribe, tmp_path):
    calibration = tmp_path / "camera.yaml"
    calibration.write_text("""\
image_width: 1280
image_height: 720
camera_name: test_camera
camera_matrix:
  rows: 3
  cols: 3
  data: [910.0, 0.5, 641.3, 0, 905.0, 362.7, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.21, 0.05, 0.001, -0.002, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [0.99, -0.01, 0.02, 0.01, 0.99, 0.0, -0.02, 0.0, 0.99]
projection_matrix:
  rows: 3
  cols: 4
  data: [900.0, 0, 640.0, -45.0, 0, 900.0, 360.0, 0, 0, 0, 1, 0]
""")
    images = subscribe(Image, "/image")
    infos = subscribe(CameraInfo, "/camera_info")
    run_main([VIDEO, "--scale", "0.125", "--frames", "4", "--calibration", str(calibration)])
    assert 1 <= len(images) == len(infos) <= 4
    assert [(i.header.stamp, i.header.frame_id) for i in infos] == [
        (m.header.stamp, m.header.frame_id) for m in images]
    s = 0.125  # 1280 x 720 -> 160 x 90; pixel centres: x' = (x + 0.5) s - 0.5
    for info in infos:
        assert (info.width, info.height, info.distortion_model) == (160, 90, "plumb_bob")
        np.testing.assert_allclose(info.k, [910 * s, 0.5 * s, 641.8 * s - 0.5,
                                            0, 905 * s, 363.2 * s - 0.5, 0, 0, 1])
        np.testing.assert_allclose(info.p, [900 * s, 0, 640.5 * s - 0.5, -45 * s,
                                            0, 900 * s, 360.5 * s - 0.5, 0, 0, 0, 1, 0])
        np.testing.assert_allclose(info.d, [-0.21, 0.05, 0.001, -0.002, 0.0])
        np.testing.assert_allclose(info.r, [0.99, -0.01, 0.02, 0.01, 0.99, 0, -0.02, 0, 0.99])


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_frames_decode_with_a_fov_camera_info(subscribe, colour_folder, fmt):
    frames = subscribe(CompressedImage, "/image/compressed")
    infos = subscribe(CameraInfo, "/camera_info")
    run_main([str(colour_folder), "--encoding", fmt, "--rate", "50", "--fov", "90"])
    assert 1 <= len(frames) == len(infos)
    indices = []
    for msg in frames:
        assert msg.format == fmt
        rgb = compressed_to_rgb(msg)
        assert rgb.shape == (24, 32, 3)
        indices.append(colour_index(rgb, tolerance=0 if fmt == "png" else 3))
    assert indices[0] == 0 and (np.diff(indices) > 0).all(), indices
    # 90 degrees across 32 pixels, edge to edge: f = 16 / tan(45 deg); centre (15.5, 11.5)
    np.testing.assert_allclose(infos[0].k, [16, 0, 15.5, 0, 16, 11.5, 0, 0, 1])
    assert [i.header.stamp for i in infos] == [m.header.stamp for m in frames]


def test_loop_wraps_and_ctrl_c_exits_0(subscribe, colour_folder):
    images = subscribe(Image, "/camera/image_raw")
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "sam_ros.ros.play", str(colour_folder), "--start", "2",
         "--frames", "3", "--loop", "--rate", "30", "--reliable",
         "--ros-args", "-r", "image:=/camera/image_raw"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(images) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "stopped: published" in out and "passes" in out, out
    seen = [colour_index(image_to_array(m)) for m in images]
    assert len(seen) >= 8 and set(seen) == {2, 3, 4}, (seen, out)  # --start 2 --frames 3
    # looped: 2, 3, 4, 2, 3, 4, ... (a stalled machine may skip one now and then)
    follows = [b == (a - 1) % 3 + 2 for a, b in itertools.pairwise(seen)]
    assert sum(follows) >= 0.8 * len(follows) and seen.count(2) >= 2, seen


def test_large_best_effort_frames_arrive_through_sam_ros_fastdds_profile(subscribe):
    # 1280 x 720 rgb8 is 2.7 MB: beyond Fast DDS's default shared-memory segment, where
    # best-effort frames between processes are mostly lost (1 of 30 arrived here)
    images = subscribe(Image, "/image", reliable=False)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DEFAULT_PROFILES_FILE")}
    r = subprocess.run([sys.executable, "-P", "-m", "sam_ros.ros.play", VIDEO, "--frames", "10",
                        "--rate", "10", "--wait"],
                       env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert r.returncode == 0, r.stderr
    assert "share/sam_ros/config/fastdds_large_images.xml" in r.stderr, r.stderr
    deadline = time.monotonic() + 2
    while len(images) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(images) >= 8, (len(images), r.stderr)
    assert (images[0].width, images[0].height) == (1280, 720)


# ------------------------------------------------------------------ exit status

def test_a_missing_source_exits_2_from_the_installed_executable():
    from ament_index_python.packages import get_package_prefix
    exe = os.path.join(get_package_prefix("sam_ros"), "lib", "sam_ros", "play")
    r = subprocess.run([exe, "/no/such/clip.mp4"], capture_output=True, text=True,
                       timeout=TIMEOUT, check=False)
    assert r.returncode == 2, r
    assert "cannot open /no/such/clip.mp4: no such file or directory" in r.stderr, r.stderr


def calibration_file(tmp_path, text, name="camera.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


GOOD_CALIBRATION = """\
image_width: 640
image_height: 360
camera_matrix: {rows: 3, cols: 3, data: [500, 0, 320, 0, 500, 180, 0, 0, 1]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}
rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
projection_matrix: {rows: 3, cols: 4, data: [500, 0, 320, 0, 0, 500, 180, 0, 0, 0, 1, 0]}
"""


@pytest.mark.parametrize("case", [
    "device path", "device index", "not a video", "empty folder", "start past the end",
    "start past a folder", "calibration missing", "calibration key", "calibration shape",
    "calibration aspect"])
def test_what_cannot_be_played_exits_2_naming_it(case, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "clip.mp4").write_text("this is not a video")
    missing_k = calibration_file(tmp_path, GOOD_CALIBRATION.replace("camera_matrix", "cm"),
                                 "k.yaml")
    wrong_p = calibration_file(tmp_path, GOOD_CALIBRATION.replace("rows: 3, cols: 4",
                                                                  "rows: 3, cols: 3"), "p.yaml")
    other_aspect = calibration_file(tmp_path, GOOD_CALIBRATION.replace("height: 360",
                                                                       "height: 480"), "a.yaml")
    argv, message = {
        "device path": (["/dev/video63"], "cannot open camera /dev/video63: no such device"),
        "device index": (["63"], "cannot open camera 63: no such device (/dev/video63"),
        "not a video": ([str(tmp_path / "clip.mp4")],
                        f"cannot open video file {tmp_path / 'clip.mp4'}: OpenCV cannot decode"),
        "empty folder": ([str(tmp_path / "empty")],
                         f"no .jpg or .png images in folder {tmp_path / 'empty'}"),
        "start past the end": ([SHORT_VIDEO, "--start", "70"],
                               f"--start 70 is past the end of video file {SHORT_VIDEO}"),
        "start past a folder": ([str(PHOTOS), "--start", "3"],
                                "--start 3 is past the end of folder"),
        "calibration missing": ([VIDEO, "--calibration", "/no/cam.yaml"],
                                "cannot read calibration /no/cam.yaml: No such file"),
        "calibration key": ([VIDEO, "--calibration", missing_k],
                            f"calibration {missing_k}: 'camera_matrix' is missing"),
        "calibration shape": ([VIDEO, "--calibration", wrong_p],
                              "'projection_matrix' must be 3x4, got rows 3, cols 3"),
        "calibration aspect": ([VIDEO, "--calibration", other_aspect],
                               "is for 640x480 images, the source's are 1280x720"),
    }[case]
    assert play.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("play: ") and message in err, err


def test_bad_arguments_exit_2(capsys):
    for argv in ([VIDEO, "--scale", "0.5", "--width", "10"], [VIDEO, "--rate", "0"],
                 [VIDEO, "--fov", "30", "--calibration", "x.yaml"], [VIDEO, "--start", "-1"]):
        with pytest.raises(SystemExit) as e:
            play.main(argv)
        assert e.value.code == 2, argv
    assert "--scale and --width/--height exclude each other" in capsys.readouterr().err


# ------------------------------------------------------------------ against a fake clock

class FakeClock:
    """Time that passes only when asked: by waiting (the ``stop`` argument of Player.run) or
    by what a fake source charges for a frame."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def is_set(self):
        return False

    def wait(self, seconds):
        self.now += max(0.0, seconds)
        return False


class CostlySource(play.ArraySource):
    """Frames in memory that take ``costs[i]`` seconds of the fake clock to read."""

    def __init__(self, frames, clock, costs):
        super().__init__(frames)
        self.clock, self.costs = clock, costs

    def read(self):
        if self.position < len(self.frames):
            self.clock.now += self.costs[self.position]
        return super().read()


def record(player, clock):
    """Make ``player`` note (clock time, source index) of each frame it publishes."""
    log, publish = [], player.publish

    def noted(msg, now=None):
        log.append((clock(), player.index))
        return publish(msg, now)
    player.publish = noted
    return log


def tiny_frames(count):
    return [np.full((4, 6, 3), i, np.uint8) for i in range(count)]


def test_schedule_is_absolute_and_counts_what_it_could_not_keep_up_with(ros):
    clock = FakeClock()
    costs = [0.03] * 12
    costs[3] = 0.35  # frame 3 takes three and a half periods to read
    player = play.Player(ros.node, CostlySource(tiny_frames(12), clock, costs))
    published = record(player, clock)
    stats = player.run(rate=10, stop=clock, clock=clock)
    player.close()
    t0 = 0.03  # when frame 0 was ready
    times, indices = zip(*published)
    # on the grid t0 + i / 10 (reading taking 0.03 s does not add up), until frame 3 is late;
    # it goes out as soon as it is read, frame 4's slot is then over (skipped, not read),
    # 5 and 6 are late by a read each, and from 7 on the schedule is kept again
    assert indices == (0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11)
    assert times == pytest.approx((t0, t0 + 0.1, t0 + 0.2, 0.58, 0.61, 0.64, t0 + 0.7,
                                   t0 + 0.8, t0 + 0.9, t0 + 1.0, t0 + 1.1))
    assert (stats.published, stats.skipped, stats.passes) == (11, 1, 1)
    assert stats.rate() == pytest.approx(10 / 1.1)


def test_frames_skipped_up_to_the_end_are_counted(ros):
    clock = FakeClock()
    costs = [0.03, 0.85, 0.03, 0.03, 0.03]  # after frame 1, 6 slots are over: 2, 3, 4 and on
    player = play.Player(ros.node, CostlySource(tiny_frames(5), clock, costs))
    published = record(player, clock)
    stats = player.run(rate=10, stop=clock, clock=clock)
    player.close()
    assert [index for _, index in published] == [0, 1]
    assert (stats.published, stats.skipped) == (2, 3)


def test_frames_and_loop_play_a_part_again_and_again(ros):
    player = play.Player(ros.node, play.ArraySource(tiny_frames(4)), frames=2, loop=True)
    played = [player.step() for _ in range(5)]
    player.close()
    assert [f.index for f in played] == [0, 1, 0, 1, 0]
    assert [int(f.rgb[0, 0, 0]) for f in played] == [0, 1, 0, 1, 0]
    assert player.stats.passes == 3
    stamps = [(f.header.stamp.sec, f.header.stamp.nanosec) for f in played]
    assert stamps == sorted(stamps) and {f.header.frame_id for f in played} == {"camera"}


class FakeCamera:
    """Stands in for cv2.VideoCapture on a camera of ``fps``: each read waits (on the fake
    clock) for the next frame, whose pixels hold its number; ``jitter`` says how early or
    late each frame is (seconds, in turn); after ``fail_after`` frames it fails."""

    def __init__(self, target, api, clock=None, fps=30.0, jitter=(0.0,), fail_after=None):
        self.opened_as = (target, api)
        self.clock, self.fps, self.jitter, self.fail_after = clock, fps, jitter, fail_after
        self.count = 0

    def isOpened(self):
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 64, cv2.CAP_PROP_FRAME_HEIGHT: 48,
                cv2.CAP_PROP_FPS: self.fps}.get(prop, 0.0)

    def grab(self):
        return self.read()[0]

    def read(self):
        if self.fail_after is not None and self.count >= self.fail_after:
            return False, None
        if self.clock is not None:
            jitter = self.jitter[self.count % len(self.jitter)]
            self.clock.now = max(self.clock.now, (self.count + 1) / self.fps + jitter)
        self.count += 1
        return True, np.full((48, 64, 3), self.count - 1, np.uint8)

    def release(self):
        pass


def test_what_names_a_camera():
    assert play.camera_target("3") == 3 and play.camera_target(3) == 3
    assert play.camera_target("/dev/video7") == 7  # OpenCV's V4L2 backend opens by index
    assert play.camera_target("/dev/v4l/by-id/none") == "/dev/v4l/by-id/none"  # no such link
    assert play.camera_target("clip.mp4") is None and play.camera_target("./3") is None


def test_a_camera_through_a_fake_video_capture(ros):
    clock = FakeClock()
    camera = play.open_source("/dev/video0", start=2,
                              capture=lambda target, api: FakeCamera(target, api, clock))
    assert camera._cap.opened_as == (0, cv2.CAP_V4L2)  # /dev/videoN: OpenCV's V4L2 index N
    assert camera.live and camera.size == (64, 48) and camera.fps == 30.0
    assert "camera /dev/video0 (64x48, 30 fps)" == camera.description
    assert play.default_rate(camera) is None  # as fast as it delivers
    with pytest.raises(ValueError, match="cannot loop"):
        play.Player(ros.node, camera, loop=True)
    # --rate 10 from a 30 fps camera: the first frame of each slot, every third one
    player = play.Player(ros.node, camera, frames=30, size=(32, 24))
    published = record(player, clock)
    stats = player.run(rate=10, stop=clock, clock=clock)
    player.close()
    assert [index for _, index in published] == list(range(2, 32, 3))  # --start 2 skipped 2
    assert (stats.published, stats.skipped) == (10, 0)


def test_a_camera_at_the_rate_with_jitter_loses_nothing_and_a_slow_one_is_counted(ros):
    clock = FakeClock()
    jittery = play.open_source(0, capture=lambda target, api: FakeCamera(
        target, api, clock, fps=10.0, jitter=(0.0, -0.004, 0.003, -0.001)))
    player = play.Player(ros.node, jittery, frames=20)
    published = record(player, clock)
    stats = player.run(rate=10, stop=clock, clock=clock)
    player.close()
    assert [index for _, index in published] == list(range(20))
    assert (stats.published, stats.skipped) == (20, 0)
    # a 10 fps camera asked for 20 Hz: every other slot gets no frame
    clock = FakeClock()
    slow = play.open_source(0, capture=lambda target, api: FakeCamera(target, api, clock,
                                                                      fps=10.0))
    player = play.Player(ros.node, slow, frames=10)
    published = record(player, clock)
    stats = player.run(rate=20, stop=clock, clock=clock)
    player.close()
    assert [index for _, index in published] == list(range(10))
    assert (stats.published, stats.skipped) == (10, 9)


def test_a_camera_that_stops_delivering_is_an_error(ros):
    dying = play.open_source("0", capture=lambda target, api: FakeCamera(target, api,
                                                                         fail_after=3))
    player = play.Player(ros.node, dying)
    with pytest.raises(play.SourceError, match="camera 0 stopped delivering frames"):
        player.run()
    assert player.stats.published == 3
    player.close()


# ------------------------------------------------------------------ sizes and camera info

def test_output_size_keeps_the_aspect_unless_both_are_given():
    assert play.output_size((1280, 720)) == (1280, 720)
    assert play.output_size((1280, 720), width=320) == (320, 180)
    assert play.output_size((1280, 720), height=90) == (160, 90)
    assert play.output_size((1280, 720), width=100, height=100) == (100, 100)
    assert play.output_size((1280, 720), scale=0.1) == (128, 72)


def test_scaled_camera_info_projects_points_where_the_resized_image_shows_them(tmp_path):
    path = calibration_file(tmp_path, GOOD_CALIBRATION)
    info = play.load_camera_info(path)
    points = np.array([[0.3, -0.2, 2.0], [-1.0, 0.5, 4.0], [0.0, 0.0, 1.0]])

    def project(k):
        uvw = points @ np.reshape(k, (3, 3)).T
        return uvw[:, :2] / uvw[:, 2:]
    for width, height in [(160, 90), (1280, 720), (200, 150)]:
        scaled = play.scale_camera_info(info, width, height)
        sx, sy = width / 640, height / 360
        # where a point seen at (u, v) in the calibrated image is after cv2.resize
        expected = (project(info.k) + 0.5) * [sx, sy] - 0.5
        np.testing.assert_allclose(project(scaled.k), expected)
        assert (scaled.width, scaled.height) == (width, height)
    with pytest.raises(play.CalibrationError, match="another aspect ratio"):
        play.fit_calibration(info, (640, 480), (640, 480), path)


def test_fov_camera_info_spans_the_field_of_view_edge_to_edge():
    info = play.pinhole_camera_info(640, 360, 70.0)
    fx, cx, cy = info.k[0], info.k[2], info.k[5]
    left, right = np.arctan((-0.5 - cx) / fx), np.arctan((639.5 - cx) / fx)
    assert np.degrees(right - left) == pytest.approx(70.0)
    assert (cx, cy, info.k[4]) == (319.5, 179.5, fx)
    assert list(info.p) == [fx, 0, cx, 0, 0, fx, cy, 0, 0, 0, 1, 0]
    with pytest.raises(play.CalibrationError, match="between 0 and 180"):
        play.pinhole_camera_info(640, 360, 180.0)
