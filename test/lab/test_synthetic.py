"""The synthetic clip generator: shapes, determinism, masks that agree with visibility, and the
occlusion events that training and evaluation rely on (full disappearance then reappearance)."""


import cv2
import numpy as np
import pytest

from lab.samples import IMAGES as PHOTOS
from lab.samples import missing
from lab.synthetic import APPEARANCES, TRAIN_SEED_LIMIT, Clip, SceneGenerator, test_seed

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture(scope="module")
def gen():
    return SceneGenerator(PHOTOS, size=256)


def zero_runs(visibility):
    """(first frame, length) of each run of frames with visibility exactly 0."""
    runs, start = [], None
    for t, v in enumerate(list(visibility) + [1.0]):
        if v == 0 and start is None:
            start = t
        elif v != 0 and start is not None:
            runs.append((start, t - start))
            start = None
    return runs


def test_shapes_and_dtypes(gen):
    clip = gen.clip(0, num_frames=8, num_targets=2)
    assert isinstance(clip, Clip) and clip.seed == 0
    assert clip.frames.shape == (8, 256, 256, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (8, 2, 256, 256) and clip.masks.dtype == bool
    assert clip.visibility.shape == (8, 2) and clip.visibility.dtype == np.float32
    counts = {gen.clip(seed, num_frames=2).masks.shape[1] for seed in range(12)}
    assert counts <= {1, 2, 3} and len(counts) > 1
    small = SceneGenerator(PHOTOS[:1], size=96).clip(3, num_frames=3)
    assert small.frames.shape[1:] == (96, 96, 3) and small.masks.shape[2:] == (96, 96)


def test_deterministic(gen):
    a, b = gen.clip(5, num_frames=6), gen.clip(5, num_frames=6)
    for field in ("frames", "masks", "visibility"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    # Photos given as RGB arrays instead of paths make the same clips.
    arrays = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in PHOTOS]
    assert np.array_equal(SceneGenerator(arrays).clip(5, num_frames=6).frames, a.frames)
    c = gen.clip(6, num_frames=6)
    assert not np.array_equal(a.frames, c.frames)


def test_each_target_says_how_it_looks(gen):
    """One of ``APPEARANCES`` per target, the same for the same seed, and every kind
    drawn about equally often (each texture kind is one draw in four)."""
    seen = []
    for seed in range(40):
        clip = gen.clip(seed, num_frames=1)
        assert len(clip.appearance) == clip.masks.shape[1]
        assert set(clip.appearance) <= set(APPEARANCES)
        assert gen.clip(seed, num_frames=1).appearance == clip.appearance
        seen += clip.appearance
    counts = [seen.count(look) for look in APPEARANCES]
    assert min(counts) >= len(seen) / 8, dict(zip(APPEARANCES, counts))


@pytest.mark.parametrize("occlusion", [None, True, False])
def test_masks_agree_with_visibility(gen, occlusion):
    for seed in range(4):
        clip = gen.clip(seed, num_frames=12, num_targets=3, occlusion=occlusion)
        pixels = clip.masks.sum((2, 3))
        # A pixel shows at most one target; visibility is 0 exactly when nothing of it shows.
        assert clip.masks.sum(1).max() <= 1
        assert np.array_equal(clip.visibility == 0, pixels == 0)
        assert (clip.visibility >= 0).all() and (clip.visibility <= 1).all()
        # Fully visible targets keep about their size from one frame to the next.
        both = (clip.visibility[1:] == 1) & (clip.visibility[:-1] == 1)
        ratio = pixels[1:][both] / pixels[:-1][both]
        assert ((ratio > 0.8) & (ratio < 1.25)).all()


@pytest.mark.parametrize("num_frames, seeds", [(40, range(5)), (12, range(6)), (8, range(10))])
def test_forced_occlusion(gen, num_frames, seeds):
    for seed in seeds:
        clip = gen.clip(test_seed(seed), num_frames=num_frames, occlusion=True)
        v = clip.visibility[:, 0]
        assert v[0] >= 0.9, (seed, v)
        good = [(start, length) for start, length in zero_runs(v)
                if 2 <= length <= 6 and start >= 1 and (v[start + length :] > 0.5).sum() >= 3]
        assert good, (seed, v)
        start, length = good[0]
        assert not clip.masks[start : start + length, 0].any()


def test_no_occlusion(gen):
    for seed in range(6):
        clip = gen.clip(seed, num_frames=20, occlusion=False)
        assert (clip.visibility[:, 0] >= 0.5).all(), (seed, clip.visibility[:, 0])


def test_seeds_and_arguments(gen):
    assert test_seed(0) >= TRAIN_SEED_LIMIT and test_seed(7) == TRAIN_SEED_LIMIT + 7
    assert gen.clip(2**40, num_frames=2).seed == 2**40
    with pytest.raises(ValueError):
        gen.clip(-1)
    with pytest.raises(ValueError):
        gen.clip(0, num_frames=7, occlusion=True)
