"""The node as a ROS user drives it: the real `ros2 launch` and `ros2` command line (built
from the upstream sources by tools/setup_ros.sh --cli), each in a process of its own, in a
DDS domain of this module's own. What each test pins was broken before (issue 32): the
launch file's auto_start re-activated the node after every deactivate; a Segment answer
printed a whole mask; a past-frame prompt could not reach back past the CLI's start-up;
float16 and an unusable device were accepted; a text file as checkpoint said IndexError; a
shut-down node kept its process and told callers to configure it.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from lab.samples import VIDEOS

DOMAIN = str(90 + os.getpid() % 10)
ENV = dict(os.environ, ROS_DOMAIN_ID=DOMAIN)
CAMERA = "/cli/camera"
CLI_TIMEOUT = 60.0
WAIT = 120.0  # node start-up and model loading on a loaded 2-core machine

pytestmark = pytest.mark.skipif(shutil.which("ros2") is None, reason="no ros2 command: run "
                                "tools/setup_ros.sh --cli and source tools/ros_env.sh")


def ros2(*args, timeout=CLI_TIMEOUT, check=True):
    """Run ``ros2 ARGS`` to its end; its stdout (stderr after it)."""
    r = subprocess.run(["ros2", *args], env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    out = r.stdout + r.stderr
    assert not check or r.returncode == 0, f"ros2 {' '.join(args)} -> {r.returncode}:\n{out}"
    return out


class Background:
    """A long-running command (``ros2 launch``, ``ros2 run``) with its output in a file."""

    def __init__(self, args, log):
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(args, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self):
        return self.log.read_text()

    def wait_for_output(self, pattern, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in the output of {self.proc.args}:\n"
                             f"{self.output()[-4000:]}")

    def stop(self):
        """Ctrl-C to the process group (what a terminal sends); its exit status."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module", autouse=True)
def daemon():
    """The ros2 daemon of this module's domain: started first (a cold daemon answers with
    nothing while it discovers), stopped at the end."""
    ros2("daemon", "start")
    yield
    ros2("daemon", "stop", check=False)


def launch(tmp_path, *args):
    node = Background(["ros2", "launch", "sam_ros", "sam_ros.launch.py", f"image:={CAMERA}",
                       *args], tmp_path / "launch.log")
    node.wait_for_output(r"sam_ros_node-\d+\]: process started|process started")
    return node


def lifecycle_state():
    return ros2("lifecycle", "get", "/sam_ros").split()[0]


def wait_state(state, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ros2("lifecycle", "get", "/sam_ros", check=False).split()[:1] == [state]:
            return
        time.sleep(0.5)
    raise AssertionError(f"/sam_ros never {state}; it is {lifecycle_state()}")


def play(tmp_path):
    return Background(["ros2", "run", "sam_ros", "play", str(VIDEOS[0]), "--loop", "--width",
                       "320", "--rate", "5", "--ros-args", "-r", f"image:={CAMERA}"],
                      tmp_path / "play.log")


def test_auto_start_then_every_transition_by_hand(tmp_path):
    node = launch(tmp_path)
    try:
        wait_state("active")
        assert "Transitioning successful" in ros2("lifecycle", "set", "/sam_ros", "deactivate")
        time.sleep(2.0)  # auto_start re-activated it about 20 ms later
        assert lifecycle_state() == "inactive"
        ros2("lifecycle", "set", "/sam_ros", "cleanup")
        assert lifecycle_state() == "unconfigured"
        ros2("lifecycle", "set", "/sam_ros", "configure")
        time.sleep(2.0)  # a manual configure must not activate by itself
        assert lifecycle_state() == "inactive"
        ros2("lifecycle", "set", "/sam_ros", "activate")
        assert lifecycle_state() == "active"
        assert "Transitioning successful" in ros2("lifecycle", "set", "/sam_ros", "shutdown")
        node.proc.wait(timeout=WAIT)  # the node process ends, and with it the launch
        assert re.search(r"sam_ros_node-\d+\]: process has finished cleanly", node.output())
    finally:
        node.stop()


def test_parameters_from_the_command_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n" * 20)
    node = launch(tmp_path, "auto_start:=false", "device:=cuda")
    try:
        wait_state("unconfigured")
        out = ros2("param", "set", "/sam_ros", "dtype", "float16", check=False)
        assert "Setting parameter failed" in out and "float32, bfloat16" in out, out
        assert "failed" in ros2("lifecycle", "set", "/sam_ros", "configure", check=False)
        node.wait_for_output(r"configure failed: device 'cuda'")
        ros2("param", "set", "/sam_ros", "device", "cpu")
        ros2("param", "set", "/sam_ros", "checkpoint", str(text))
        assert "failed" in ros2("lifecycle", "set", "/sam_ros", "configure", check=False)
        node.wait_for_output(re.escape(str(text)) + r".*not a SAM 2 checkpoint|"
                             + re.escape(str(text)) + r".*(corrupt|not a checkpoint)")
        assert "IndexError" not in node.output()
        ros2("param", "set", "/sam_ros", "checkpoint", "")
        ros2("lifecycle", "set", "/sam_ros", "configure")
        out = ros2("param", "set", "/sam_ros", "checkpoint", "/x.pt", check=False)
        assert "Setting parameter failed" in out and "cleanup" in out, out
        assert "Set parameter successful" in ros2("param", "set", "/sam_ros",
                                                  "publish_overlay", "false")
        assert "read at configure" in ros2("param", "describe", "/sam_ros", "image_size")
    finally:
        node.stop()


def test_segment_from_the_command_line(tmp_path):
    node = launch(tmp_path)
    camera = play(tmp_path)
    try:
        wait_state("active")
        # a stamp the node saw, then a prompt on it from a new CLI process, seconds later
        out = ros2("topic", "echo", "/sam_ros/tracks", "--once", "--field", "header.stamp",
                   timeout=WAIT)
        sec = re.search(r"^sec: (\d+)", out, re.MULTILINE).group(1)
        nanosec = re.search(r"^nanosec: (\d+)", out, re.MULTILINE).group(1)
        time.sleep(3.0)
        out = ros2("service", "call", "/sam_ros/segment", "sam_ros/srv/Segment",
                   f"{{points: [160, 90], labels: [1], label: cup, "
                   f"stamp: {{sec: {sec}, nanosec: {nanosec}}}}}")
        assert "success=True" in out and "object_id=1" in out, out
        assert len(out) < 3000, f"{len(out)} characters printed"  # no mask unless asked
        assert f"sec={sec}" in out
        out = ros2("topic", "echo", "/sam_ros/tracks", "--once", "--field", "objects",
                   timeout=WAIT)
        assert "id=1" in out and "label='cup'" in out, out
        out = ros2("service", "call", "/sam_ros/remove", "sam_ros/srv/RemoveObject",
                   "{object_id: 1}")
        assert "success=True" in out, out
        out = ros2("service", "call", "/sam_ros/reset", "std_srvs/srv/Trigger")
        assert "success=True" in out, out
    finally:
        camera.stop()
        node.stop()


def readme_blocks():
    """The `ros2 ...` command lines of README.md's code blocks, block by block, verbatim."""
    from lab.samples import DATA

    blocks, current = [], []
    for line in (DATA.parent / "README.md").read_text().splitlines() + [""]:
        if line.startswith("    ") and line.strip():
            if line.strip().startswith("ros2 "):
                current.append(line.strip())
        elif current and not line.startswith("    "):
            blocks.append(current)
            current = []
    return blocks


BACKGROUND = ("ros2 launch ", "ros2 run sam_ros play ")


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda b: b[0][:40])
def test_readme_commands_run_as_printed(block, tmp_path):
    """Every `ros2` command line in README's code blocks, run as printed, in order, each
    block in a shell: the launch file and the player in the background, the rest to their
    end, each succeeding (exit status 0, `success=True`, a transition that succeeds)."""
    background = []
    try:
        for i, command in enumerate(block):
            if command.startswith(BACKGROUND):
                background.append(Background(["bash", "-c", command], tmp_path / f"{i}.log"))
                if command.startswith("ros2 launch "):
                    wait_state("active")
                else:  # until the player's frames come through the node
                    ros2("topic", "echo", "/sam_ros/tracks", "--once", timeout=WAIT)
                continue
            r = subprocess.run(["bash", "-c", command], env=ENV, capture_output=True,
                               text=True, timeout=WAIT)
            out = r.stdout + r.stderr
            assert r.returncode == 0, f"{command} -> {r.returncode}:\n{out}"
            assert "success=False" not in out and "Transitioning failed" not in out, out
            if "lifecycle set" in command:
                assert "Transitioning successful" in out, out
        for process in background:
            assert process.proc.poll() in (None, 0), process.output()[-3000:]
    finally:
        for process in reversed(background):
            process.stop()
