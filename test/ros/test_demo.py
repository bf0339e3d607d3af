"""The end-to-end demo (sam_ros.ros.demo) in miniature: the installed node in its own
process, a short generated scene, a random-weights sam_ros_mini. Checks the plumbing (exit
status, the contact sheet, figures.json), not the masks.

Needs the built workspace, as test_node.py does (SAM_ROS_REQUIRE_ROS=1 turns a missing build
into a failure). It plays the demo's own data, installed with the package.
"""

import json
import os
import subprocess
import sys
import warnings

import pytest


def run_demo(out, *args, **env):
    # a DDS domain of its own: the demo's node must not meet other tests' nodes
    env = dict(os.environ, ROS_DOMAIN_ID=str(200 + os.getpid() % 30), **env)
    return subprocess.run([sys.executable, "-P", "-m", "sam_ros.ros.demo", "--out", str(out),
                           *args],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def random_mini(tmp_path_factory):
    from sam_ros.model import build_sam2, save_checkpoint
    path = tmp_path_factory.mktemp("ckpt") / "mini_random.pt"
    save_checkpoint(build_sam2("sam_ros_mini"), path)
    return str(path)


def node_log_tail(out):
    """The end of the node's log, enough to hold every thread's stack dump."""
    return (out / "node.log").read_text()[-12000:]


def known_flake(r, out):
    """Why this demo run failed in one of the two known, unexplained ways; None otherwise.

    Lost frames: in 2 of 4 full-suite runs on one machine (never alone), the node received
    only 2 of the 12 frames, so no track had the object. A likely path, fixed in 12202e7:
    while the worker held the tracker lock, the diagnostics timer waited for it and held up
    the camera callback's group. What held the worker up for seconds is not known.
    Unclean node exit: 3 of 5 full-suite runs on 2026-11-27 (never alone): the node exited
    with 1 (a Ctrl-C during the executor's wait-set set-up, handled since in main) or was
    killed after hanging 20 s on shutdown (cause unknown: its log ended at "active"; it now
    logs each shutdown step and, before it is killed, every thread's stack).
    """
    try:
        figures = json.loads((out / "figures.json").read_text())
        scene = figures["scenes"]["generated"]
        lost = scene["node"]["frames_in"] < scene["frames_published"]
    except (OSError, ValueError, KeyError):
        return None
    if r.returncode != 0 and lost:
        return "frames lost between the demo and the node. The demo's output:\n" + r.stdout
    if r.returncode == 0 and figures["node_exit_status"] != 0:
        return f"node exit status {figures['node_exit_status']}. Its log:\n" + node_log_tail(out)
    return None


def test_demo_runs_end_to_end(random_mini, tmp_path):
    args = ("--frames", "12", "--scenes", "generated", "--checkpoint", random_mini)
    r = run_demo(tmp_path, *args)
    flake = known_flake(r, tmp_path)
    if flake:
        # One retry, said aloud (a warning, so that CI's summary shows it) until full-suite
        # runs show both flakes gone; any other failure, or a second flake, fails.
        warnings.warn(f"retried once: {flake}")
        r = run_demo(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    figures = json.loads((tmp_path / "figures.json").read_text())
    import cv2
    sheet = cv2.imread(str(tmp_path / "generated.png"))
    assert sheet is not None and sheet.shape[0] > 0
    assert figures["node_exit_status"] == 0, node_log_tail(tmp_path)
    assert list(figures["scenes"]) == ["generated"]
    fig = figures["scenes"]["generated"]
    assert fig["frames_published"] == 12
    assert set(fig["node"]) == {"frames_in", "processed", "dropped"}
    assert 0 < fig["tracks_received"] <= fig["node"]["processed"] <= 12
    assert fig["tracks_with_object"] > 0
    assert fig["prompt"]["success"] and fig["prompt"]["object_id"] == 1
    latency = fig["latency_ms"]
    assert latency["median"] > 0 and latency["p95"] >= latency["median"]
    for key in ("processing_fps", "scored_frames", "mean_iou", "mean_iou_target_shown",
                "hidden_frames", "hidden_flagged_not_visible", "sheet"):
        assert key in fig, key
    assert 0.0 <= fig["mean_iou"] <= 1.0
    assert "IoU vs ground truth" in r.stdout


def test_demo_fails_when_the_node_cannot_configure(tmp_path):
    r = run_demo(tmp_path, "--frames", "12", "--scenes", "real",
                 "--checkpoint", str(tmp_path / "missing.pt"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed to configure" in r.stderr and "missing.pt" in r.stderr


def test_demo_says_it_ran_the_bundled_model_and_why(tmp_path):
    """Without Meta's model (offline, nothing cached) the demo runs the bundled one and says
    so, and why, and how to get the real one: on its first line, in figures.json and on
    every contact sheet (a title band above the tiles)."""
    out = tmp_path / "out"
    r = run_demo(out, "--frames", "8", "--scenes", "generated", "--offline",
                 SAM_ROS_HOME=str(tmp_path / "empty_cache"))
    assert r.returncode == 0, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    for words in ("BUNDLED sam_ros_mini", "--offline", "fetch sam2.1_hiera_tiny"):
        assert words in first, first
    figures = json.loads((out / "figures.json").read_text())
    assert figures["model"] == first and figures["checkpoint"] == "bundled sam_ros_mini"
    import cv2
    sheet = cv2.imread(str(out / "generated.png"))
    assert (sheet[:5, :, :] == 32).all()  # the title band, above the first row of tiles
