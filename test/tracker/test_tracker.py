"""Behaviour of the streaming tracker on real footage: objects added mid-stream, removal,
reset, prompts on past frames, bad prompts, bounded memory. Random weights, small
image_size: these tests check the bookkeeping; parity with the reference is checked in
test_tracker_parity.py."""

import numpy as np
import pytest

from lab.oracle import VIDEOS, randomize_, read_video_frames
from sam_ros.model import SAM2, get_config
from sam_ros.tracker import StreamingTracker, claimed_by

IMAGE_SIZE = 256


@pytest.fixture(scope="module")
def model():
    return randomize_(SAM2(get_config("sam2.1_hiera_t", image_size=IMAGE_SIZE)), seed=3).eval()


@pytest.fixture(scope="module")
def frames():
    return read_video_frames(VIDEOS[2], count=30, start=0)


def click(frame, x=0.5, y=0.5):
    h, w = frame.shape[:2]
    return dict(points=[[w * x, h * y]], labels=[1])


def run(model, frames, script, **options):
    """Feed frames; ``script[i]`` is a list of calls made after frame i."""
    tracker = StreamingTracker(model, **options)
    history = []
    for i, frame in enumerate(frames):
        history.append(tracker.step(frame))
        for call in script.get(i, []):
            call(tracker)
    return tracker, history


def test_objects_added_later_do_not_disturb_the_others(model, frames):
    clip = frames[:10]
    alone_script = {0: [lambda t: t.add_prompt(1, **click(clip[0]))]}
    both_script = dict(alone_script)
    both_script[4] = [lambda t: t.add_prompt(7, box=[100, 80, 500, 400])]
    _, alone = run(model, clip, alone_script)
    tracker, both = run(model, clip, both_script)
    assert tracker.object_ids == [1, 7]
    for i in range(1, 10):
        assert set(both[i]) == ({1} if i <= 4 else {1, 7})
        err = np.abs(both[i][1].logits - alone[i][1].logits).max()
        assert err <= 1e-4, f"frame {i}: object 1 changed by {err}"
    result = both[9][7]
    assert result.mask.shape == clip[0].shape[:2] and result.mask.dtype == bool
    assert result.logits.dtype == np.float32 and result.frame == 9
    assert result.visible == (result.score > 0)
    assert np.array_equal(result.mask, result.logits > 0)


def test_prompt_on_a_past_frame_catches_up_exactly(model, frames):
    clip = frames[:8]
    prompted = []
    _, live = run(model, clip, {3: [lambda t: prompted.append(
        t.add_prompt(2, **click(clip[3], 0.4, 0.6)))]})
    late, _ = run(model, clip[:6], {})
    answer = late.add_prompt(2, **click(clip[3], 0.4, 0.6), frame=3)
    assert answer.frame == 3
    assert np.abs(answer.logits - prompted[0].logits).max() <= 1e-5
    assert np.abs(late.result(2).logits - live[5][2].logits).max() <= 1e-5
    for i in (6, 7):
        assert np.abs(late.step(clip[i])[2].logits - live[i][2].logits).max() <= 1e-5


def test_stamps_name_ring_frames_and_old_frames_are_refused(model, frames):
    tracker = StreamingTracker(model, ring_size=3)
    for i, frame in enumerate(frames[:6]):
        tracker.step(frame, stamp=1000 + i)
    assert tracker.ring_frames == [3, 4, 5]
    assert tracker.frame_for_stamp(1004) == 4
    with pytest.raises(ValueError, match="no frame with stamp 1001"):
        tracker.frame_for_stamp(1001)
    with pytest.raises(ValueError, match="frame 1 has left the ring.*frames 3..5"):
        tracker.add_prompt(1, **click(frames[0]), frame=1)
    assert tracker.add_prompt(1, **click(frames[0]), frame=4).stamp == 1004


def test_a_ring_that_spans_a_time_spreads_its_older_frames(model, frames):
    """With ring_span, the newest half of the ring stays dense and the older half thins out
    over the span; nothing older than the span is kept, and the ring never holds more than
    ring_size frames."""
    tracker = StreamingTracker(model, ring_size=6, ring_span=2.0)
    for i, frame in enumerate(frames[:25]):  # 10 frames a second
        tracker.step(frame, stamp=i, time=0.1 * i)
        assert len(tracker.ring_frames) <= 6
    ring = tracker.ring_frames
    assert ring[-3:] == [22, 23, 24], ring  # the newest half, as it came
    assert 14 <= 24 - ring[0] <= 20, ring  # back over most of the span, not beyond it
    assert np.diff(ring[:3]).min() >= 6, ring  # the older half spread: 2 s / 3 apart
    with pytest.raises(ValueError, match="was not kept in the ring"):
        tracker.add_prompt(1, **click(frames[0]), frame=next(
            i for i in range(ring[0], 24) if i not in ring))


def test_a_prompt_on_a_thinned_ring_tracks_through_the_kept_frames(model, frames):
    """A prompt on an old frame of a spanning ring decodes it, tracks the object through the
    kept frames only (reading no memory that tracking left before the prompt), and the
    stream goes on from there; memory stays bounded by what the ring can read."""
    tracker = StreamingTracker(model, ring_size=4, ring_span=20.0)
    for i, frame in enumerate(frames[:12]):
        tracker.step(frame, time=float(i))
    tracker.add_prompt(1, **click(frames[0]), frame=tracker.latest_frame)
    for i in range(12, 20):
        tracker.step(frames[i], time=float(i))
    ring = tracker.ring_frames
    old = ring[0]
    answer = tracker.add_prompt(1, **click(frames[old], 0.4, 0.6), frame=old)
    assert answer.frame == old
    memory = tracker._objects[1]
    assert sorted(t for t in memory.recent if t > old) == [
        t for t in ring if t > old and t not in memory.cond]
    results = tracker.step(frames[20], time=20.0)
    assert set(results) == {1} and results[1].frame == 20
    for t, entry in memory.recent.items():
        assert entry.low_res is None or t in tracker.ring_frames


def test_segment_once_answers_without_tracking(model, frames):
    tracker = StreamingTracker(model, ring_size=3)
    for frame in frames[:3]:
        tracker.step(frame)
    tracker.add_prompt(4, **click(frames[2]))
    once = tracker.segment_once(**click(frames[1], 0.3, 0.3), frame=1)
    assert once.obj_id is None and once.frame == 1
    assert tracker.object_ids == [4]
    fresh = StreamingTracker(model, ring_size=3)
    for frame in frames[:2]:
        fresh.step(frame)
    first = fresh.add_prompt(9, **click(frames[1], 0.3, 0.3))  # a new object's first answer
    assert np.abs(once.logits - first.logits).max() <= 1e-5


def test_refine_remove_reset(model, frames):
    tracker = StreamingTracker(model)
    with pytest.raises(ValueError, match="no frame yet"):
        tracker.add_prompt(1, **click(frames[0]))
    tracker.step(frames[0])
    first = tracker.add_prompt(1, **click(frames[0]))
    refined = tracker.add_prompt(1, points=[[100, 100]], labels=[0])
    assert refined.frame == first.frame and not np.array_equal(refined.logits, first.logits)
    tracker.add_prompt(2, **click(frames[0], 0.2, 0.2))
    assert set(tracker.step(frames[1])) == {1, 2}
    tracker.remove(1)
    assert set(tracker.step(frames[2])) == {2}
    with pytest.raises(ValueError, match="unknown object id 1"):
        tracker.remove(1)
    tracker.reset()
    assert tracker.step(frames[3]) == {}
    assert tracker.add_prompt(5, **click(frames[3])).obj_id == 5


def test_bad_prompts_raise_clear_errors(model, frames):
    tracker = StreamingTracker(model)
    tracker.step(frames[0])
    h, w = frames[0].shape[:2]
    cases = [
        (dict(points=[[np.nan, 1]], labels=[1]), "NaN"),
        (dict(points=[[1, 1], [2, 2]], labels=[1]), "2 points"),
        (dict(points=[[w + 5, 1]], labels=[1]), "outside"),
        (dict(points=[[1, 1]], labels=[3]), "1 \\(foreground\\) or 0"),
        (dict(), "empty prompt"),
        (dict(box=[5, 5, 1, 1]), "x_min <= x_max"),
        (dict(box=[[0, 0, 5, 5], [1, 1, 9, 9]]), "one object per prompt"),
        (dict(mask=np.zeros((4, 4), bool)), "mask must be H x W"),
        (dict(mask=np.zeros((h, w), bool)), "mask is empty"),
        (dict(points=[[1, 1]], labels=[1], mask=np.ones((h, w), bool)), "not both"),
        (dict(points=[[1, 1]], labels=[1], frame=99), "not a frame of the stream"),
    ]
    for prompt, message in cases:
        with pytest.raises(ValueError, match=message):
            tracker.add_prompt(1, **prompt)
    with pytest.raises(ValueError, match="obj_id must be an integer"):
        tracker.add_prompt("a", **click(frames[0]))
    assert tracker.object_ids == []
    # the tracker still works after the errors
    assert tracker.add_prompt(1, **click(frames[0])).frame == 0


def test_mask_prompt_is_taken_as_the_answer(model, frames):
    tracker = StreamingTracker(model)
    tracker.step(frames[0])
    h, w = frames[0].shape[:2]
    mask = np.zeros((h, w), bool)
    mask[h // 4: h // 2, w // 4: w // 2] = True
    result = tracker.add_prompt(3, mask=mask)
    assert result.visible and result.score == pytest.approx(10.0)
    assert (result.mask == mask).mean() > 0.97


def test_memory_stays_bounded(model, frames):
    tracker = StreamingTracker(model, ring_size=4, max_cond_frames=3)
    tracker.step(frames[0])
    tracker.add_prompt(1, **click(frames[0]))
    for i in range(1, 30):
        tracker.step(frames[i])
        if i % 5 == 0:
            tracker.add_prompt(1, **click(frames[i], 0.3 + 0.02 * i, 0.5))
    memory = tracker._objects[1]
    cfg = model.config
    assert sorted(memory.cond) == [0, 20, 25]  # the first prompt and the latest ones
    with_features = [t for t, e in memory.recent.items() if e.features is not None]
    assert len(memory.recent) <= cfg.max_obj_ptrs_in_encoder - 1 + 4
    assert min(with_features) >= 29 - 3 - (cfg.num_maskmem - 1)
    assert all(e.low_res is None for t, e in memory.recent.items() if t < 26)
    assert len(tracker._ring) == 4


def test_a_pixel_two_masks_claim_goes_to_the_higher_logit():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, :, :3] = True
    masks[1, :, 2:] = True  # overlaps mask 0 on column 2
    logits = np.where(masks, 1.0, -1.0).astype(np.float32)
    logits[1, :2, 2] = 3.0  # mask 1 surer on rows 0-1 of column 2, a tie on rows 2-3
    logits[2] = 5.0  # highest everywhere, but its mask is empty: it claims nothing
    winner = claimed_by(masks, logits)
    assert winner.shape == (4, 5)
    assert (winner[:, :2] == 0).all() and (winner[:, 3:] == 1).all()
    assert winner[:, 2].tolist() == [1, 1, 0, 0]  # a tie goes to the lower index
    masks[:, :, 4] = False
    assert (claimed_by(masks, logits)[:, 4] == -1).all()  # no mask: no one
    assert (claimed_by(np.zeros((0, 4, 5), bool), np.zeros((0, 4, 5))) == -1).all()
    with pytest.raises(ValueError, match="must both be N x H x W"):
        claimed_by(masks, logits[:2])


def test_each_pixel_goes_to_the_highest_logit_among_the_masks_covering_it():
    """Against the rule written out per pixel, on masks that overlap, nest, miss one another
    or are empty, with integer logits so that ties happen."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        masks = np.zeros((int(rng.integers(1, 6)), 40, 60), bool)
        for mask in masks:
            if rng.random() < 0.8:
                y, x = rng.integers(0, 40), rng.integers(0, 60)
                part = mask[y:y + rng.integers(1, 40), x:x + rng.integers(1, 60)]
                part[:] = rng.random(part.shape) < 0.9
        logits = rng.integers(-3, 4, masks.shape).astype(np.float32)
        highest = np.argmax(np.where(masks, logits, -np.inf), axis=0)  # the lower index on a tie
        assert np.array_equal(claimed_by(masks, logits),
                              np.where(masks.any(axis=0), highest, -1))
