"""The streaming tracker against the reference SAM2VideoPredictor (sam2==1.1.0): same random
weights, same real frames, mask logits at the video's resolution compared frame by frame.

The reference's hole filling needs its CUDA extension; on CPU it is skipped (with a
warning), so both sides compare raw logits. Frames are 24 consecutive real frames; the
model runs at image_size 512 to keep CI time reasonable (the memory-attention maths is
the same at any size).
"""

import warnings

import numpy as np
import pytest

from lab.oracle import VIDEOS, build_oracle, copy_weights, oracle_video_state, read_video_frames
from sam_ros.model import SAM2, get_config
from sam_ros.tracker import StreamingTracker

TOL = 1e-3
IMAGE_SIZE = 512
NUM_FRAMES = 24


def make_pair(variant, correction_as_cond=False):
    overrides = ["++model.add_all_frames_to_correct_as_cond=true"] if correction_as_cond else []
    oracle = build_oracle(variant, image_size=IMAGE_SIZE, video=True, overrides=overrides)
    ours = copy_weights(oracle, SAM2(get_config(variant, image_size=IMAGE_SIZE)))
    return oracle, ours


@pytest.fixture(scope="module")
def frames():
    return read_video_frames(VIDEOS[1], count=NUM_FRAMES, start=60)


def prompts_for(frames):
    h, w = frames[0].shape[:2]
    return [
        (1, dict(points=[[0.45 * w, 0.55 * h]], labels=[1])),
        (2, dict(box=[0.1 * w, 0.1 * h, 0.4 * w, 0.5 * h])),
        (3, dict(points=[[0.7 * w, 0.3 * h], [0.75 * w, 0.4 * h]], labels=[1, 0])),
    ]


def oracle_prompt(predictor, state, frame_idx, obj_id, prompt, clear=True):
    box = prompt.get("box")
    return predictor.add_new_points_or_box(
        state, frame_idx=frame_idx, obj_id=obj_id, points=prompt.get("points"),
        labels=prompt.get("labels"), box=None if box is None else np.array(box, np.float32),
        clear_old_points=clear)


def start_both(oracle, model, clip, prompts, folder):
    """The reference's video state and our tracker, both prompted on frame 0."""
    state = oracle_video_state(oracle, clip, IMAGE_SIZE, folder)
    tracker = StreamingTracker(model)
    tracker.step(clip[0])
    for obj_id, prompt in prompts:
        oracle_prompt(oracle, state, 0, obj_id, prompt)
        tracker.add_prompt(obj_id, **prompt)
    return state, tracker


def compare(ours_results, obj_ids, oracle_masks, frame_idx, errors):
    for i, obj_id in enumerate(obj_ids):
        theirs = oracle_masks[i, 0].float().numpy()
        mine = ours_results[obj_id].logits
        assert mine.shape == theirs.shape
        err = float(np.abs(mine - theirs).max())
        errors.append(err)
        assert err <= TOL, f"object {obj_id} frame {frame_idx}: max error {err}"


@pytest.mark.parametrize("variant,num_objects", [("sam2.1_hiera_t", 1), ("sam2.1_hiera_t", 3),
                                                 ("sam2_hiera_t", 3)])
def test_tracking_matches_reference(frames, tmp_path, variant, num_objects):
    oracle, model = make_pair(variant)
    prompts = prompts_for(frames)[:num_objects]
    count = NUM_FRAMES if variant.startswith("sam2.1") else 12
    clip = frames[:count]
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = oracle_video_state(oracle, clip, IMAGE_SIZE, tmp_path / "frames")
        tracker = StreamingTracker(model)
        tracker.step(clip[0])
        for obj_id, prompt in prompts:
            _, obj_ids, masks = oracle_prompt(oracle, state, 0, obj_id, prompt)
            mine = tracker.add_prompt(obj_id, **prompt)
            compare({obj_id: mine}, [obj_id], masks[obj_ids.index(obj_id)][None], 0, errors)
        for frame_idx, obj_ids, masks in oracle.propagate_in_video(state):
            results = tracker.step(clip[frame_idx]) if frame_idx else {
                o: tracker.result(o) for o in obj_ids}
            compare(results, obj_ids, masks, frame_idx, errors)
    assert len(errors) == count * num_objects + num_objects
    print(f"{variant}, {num_objects} objects: max error {max(errors):.2e}")


def test_correction_click_matches_reference(frames, tmp_path):
    """Prompts on frame 0, tracking to frame 10, a correction click there (which becomes
    a conditioning frame), tracking on; the reference is configured to store corrections
    as conditioning frames too, and propagates on from the corrected frame."""
    oracle, model = make_pair("sam2.1_hiera_t", correction_as_cond=True)
    prompts = prompts_for(frames)[:2]
    k = 10
    h, w = frames[0].shape[:2]
    fix = dict(points=[[0.3 * w, 0.6 * h]], labels=[0])
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state, tracker = start_both(oracle, model, frames, prompts, tmp_path / "frames")
        for frame_idx, obj_ids, masks in oracle.propagate_in_video(state, max_frame_num_to_track=k):
            if frame_idx:
                compare(tracker.step(frames[frame_idx]), obj_ids, masks, frame_idx, errors)
        _, obj_ids, masks = oracle_prompt(oracle, state, k, 1, fix)
        mine = tracker.add_prompt(1, **fix)
        compare({1: mine}, [1], masks[obj_ids.index(1)][None], k, errors)
        for frame_idx, obj_ids, masks in oracle.propagate_in_video(state, start_frame_idx=k):
            if frame_idx > k:
                compare(tracker.step(frames[frame_idx]), obj_ids, masks, frame_idx, errors)
    assert len(errors) == 2 * (NUM_FRAMES - 1) + 1
    print(f"correction: max error {max(errors):.2e}")


def test_objects_leaving_and_coming_back_match_reference(frames, tmp_path):
    """Two objects tracked over 16 frames; on frames 6-9 a forward hook on the mask decoder
    (the same on both sides) pushes their object scores to "absent", as the heads of a
    trained model do when an object leaves the view (random heads cannot see it leave), and
    to "present" on the other frames. Both sides must blank the masks of the absent frames,
    carry the absence into memory (the no-object pointer and spatial embedding) and pick
    the objects up again from frame 10, frame for frame."""
    oracle, model = make_pair("sam2.1_hiera_t")
    away, count = range(6, 10), 16
    shift = {"logit": 10.0}  # the score offset of the frame being decoded
    for decoder in (oracle.sam_mask_decoder, model.sam_mask_decoder):
        decoder.register_forward_hook(
            lambda module, inputs, out: (*out[:3], out[3] + shift["logit"]))
    prompts = prompts_for(frames)[:2]
    clip = frames[:count]
    errors, visible = [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state, tracker = start_both(oracle, model, clip, prompts, tmp_path / "frames")
        for frame_idx, obj_ids, masks in oracle.propagate_in_video(state):
            if frame_idx:
                results = tracker.step(clip[frame_idx])
                compare(results, obj_ids, masks, frame_idx, errors)
                visible[frame_idx] = [(r.visible, bool(r.mask.any())) for r in results.values()]
            # the oracle decodes the next frame when the loop asks for it
            shift["logit"] = -10.0 if frame_idx + 1 in away else 10.0
    assert len(errors) == 2 * (count - 1)
    for frame_idx, flags in visible.items():
        expected = (frame_idx not in away,) * 2
        assert flags == [expected, expected], f"frame {frame_idx}: {flags}"
    print(f"leave and return: max error {max(errors):.2e}")
