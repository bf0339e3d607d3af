"""The bundled sam_ros_mini really segments and tracks: held-out generated scenes (seeds no
training run draws), scored against their ground truth, with floors that a randomly
initialised model of the same architecture misses by far (each test scores one too, so it
can be seen to fail). The floors sit under what the committed checkpoint scores (one click
0.65, the best of its three candidates 0.68, tracking 0.51; random weights: 0.06, 0.08 and
0.08; for hidden frames see below); issue 5's targets are
far higher (click IoU 0.8, tracked mean IoU 0.75, hidden frames reported hidden) and not
yet met: see the model card. These guard against a checkpoint or a code change that loses
what the model has.
"""


import cv2
import numpy as np
import pytest
import torch

from lab.evaluate import (
    answer_clicks,
    held_out_clips,
    score_clip,
    segment_clip_without_memory,
    summarize,
    target_prompts,
    track_clip_with_memory,
)
from lab.metrics import region_similarity
from lab.samples import PHOTOS, missing
from lab.synthetic import SceneGenerator, find_photos
from lab.train import init_for_training
from sam_ros.model import build_sam2
from sam_ros.tools import segment_image

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

CLICK_CLIPS = 12  # held-out first frames clicked on
CLICK_IOU_FLOOR = 0.60  # mean IoU of the model's answer to one interior click
CANDIDATE_IOU_FLOOR = 0.66  # mean IoU of the best of its three candidate masks for that click
TRACK_CLIPS = 6  # held-out clips of TRACK_FRAMES frames, each hiding a target mid-clip
TRACK_FRAMES = 32
TRACK_IOU_FLOOR = 0.42  # mean J over frames 1.. of every target clicked on frame 0
# Shares of the tracking clips' frames where a target is said hidden / visible, of those
# where it is hidden / shown. The bundled model scores 0.24 / 0.98 here (on 25 hidden
# frames; on evaluate's 60 clips 0.48 / 0.95), random weights 0.0 / 1.0.
SAID_HIDDEN_FLOOR = 0.15
SAID_VISIBLE_FLOOR = 0.7


@pytest.fixture(scope="module")
def generator():
    return SceneGenerator(find_photos(PHOTOS), size=256)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"bundled": build_sam2(), "random": init_for_training(build_sam2("sam_ros_mini"))}


def click_iou(model, clips):
    """Mean IoU over every fully visible target of the clips' first frames (the model's
    answer to one interior click: its one mask, or the best-rated of its candidates)."""
    ious = []
    for clip in clips:
        prediction = segment_clip_without_memory(model, clip)
        ious += [region_similarity(prediction.masks[0, i], clip.masks[0, target])
                 for i, target in enumerate(prediction.targets)]
    return float(np.mean(ious))


def test_a_click_segments_a_held_out_object(generator, models):
    clips = list(held_out_clips(generator, CLICK_CLIPS, 1, occlusion=False))
    scores = {name: click_iou(model, clips) for name, model in models.items()}
    print(f"one click, mean IoU over {CLICK_CLIPS} held-out first frames: {scores}")  # pytest -s
    assert scores["bundled"] >= CLICK_IOU_FLOOR > scores["random"], scores


def test_candidate_masks_offer_a_better_mask_than_the_single_one(generator, models):
    """The bundled model answers with one mask; its three candidates are trained apart
    (``train.py --candidates-only``) and hold a better one than that answer."""
    clips = list(held_out_clips(generator, CLICK_CLIPS, 1, occlusion=False))
    # per target: IoU of the single mask, the best-rated candidate, the best candidate, ...
    rows = {name: np.array([row for clip in clips for row in answer_clicks(model, clip)])
            for name, model in models.items()}
    best = {name: float(r[:, 2].mean()) for name, r in rows.items()}
    single = float(rows["bundled"][:, 0].mean())
    print(f"one click, best of three candidates: {best}; the single mask: {single:.3f}")
    assert best["bundled"] >= CANDIDATE_IOU_FLOOR > best["random"], best
    assert best["bundled"] > single


def test_segment_image_tool_segments_with_the_bundled_model(generator, tmp_path, capsys):
    """The command-line tool, given no checkpoint, answers a click as the bundled model does
    (its single mask, not the best-rated of its candidates)."""
    ious = []
    for clip in held_out_clips(generator, CLICK_CLIPS, 1, occlusion=False):
        image = tmp_path / "frame.png"
        cv2.imwrite(str(image), clip.frames[0][:, :, ::-1])
        targets, _, prompts = target_prompts(clip)
        for target, prompt in zip(targets, prompts):
            [(x, y)] = prompt["points"]
            segment_image.main([str(image), "--point", f"{x},{y}", "--out",
                                str(tmp_path / "overlay.png"), "--mask-out",
                                str(tmp_path / "mask.png")])
            mask = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED) > 0
            ious.append(region_similarity(mask, clip.masks[0, target]))
    assert "sam_ros_mini" in capsys.readouterr().out
    assert np.mean(ious) >= CLICK_IOU_FLOOR, ious


@pytest.fixture(scope="module")
def tracked(generator, models):
    """Each model's ``summarize`` over the held-out tracking clips."""
    clips = list(held_out_clips(generator, TRACK_CLIPS, TRACK_FRAMES))
    return {name: summarize([score_clip(clip, track_clip_with_memory(model, clip))
                             for clip in clips])
            for name, model in models.items()}


def test_tracking_through_an_occlusion(tracked):
    mean_j = {name: summary["J"] for name, summary in tracked.items()}
    print(f"tracking, mean J over {TRACK_CLIPS} x {TRACK_FRAMES} frames: {mean_j}")  # pytest -s
    assert mean_j["bundled"] >= TRACK_IOU_FLOOR > mean_j["random"], mean_j


def test_a_hidden_target_is_reported_hidden(tracked):
    """Both ways at once: a head that always says "hidden" (or "visible") fails one floor."""
    said = {name: (summary["visibility_accuracy"]["hidden"],
                   summary["visibility_accuracy"]["visible"])
            for name, summary in tracked.items()}
    print(f"said hidden on hidden frames, said visible on shown ones: {said}")  # pytest -s
    passes = {name: hidden >= SAID_HIDDEN_FLOOR and visible >= SAID_VISIBLE_FLOOR
              for name, (hidden, visible) in said.items()}
    assert passes == {"bundled": True, "random": False}, said
