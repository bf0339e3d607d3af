"""SamImagePredictor against the reference SAM2ImagePredictor on real images, and its
handling of bad prompts."""

import numpy as np
import pytest
import torch

from lab.oracle import (
    IMAGES,
    VIDEOS,
    build_oracle,
    copy_weights,
    oracle_image_predictor,
    read_image,
    read_video_frames,
)
from sam_ros.model import SAM2, SamImagePredictor, get_config
from sam_ros.model.transforms import preprocess

TOL = 1e-4


@pytest.fixture(scope="module")
def predictors():
    oracle = build_oracle("sam2.1_hiera_t")
    ours = copy_weights(oracle, SAM2(get_config("sam2.1_hiera_t")))
    return SamImagePredictor(ours), oracle_image_predictor(oracle)


def test_preprocessing_matches_reference_transform(predictors):
    _, reference = predictors
    image = read_image(IMAGES[1])
    theirs = reference._transforms(image)[None]
    assert (preprocess(image, 1024) - theirs).abs().max().item() <= 1e-6


PROMPTS = [
    dict(point_coords=[[500, 375]], point_labels=[1]),
    dict(point_coords=[[500, 375], [620, 300]], point_labels=[1, 0], multimask_output=False),
    dict(box=[300, 200, 800, 600]),
    dict(box=[300, 200, 800, 600], point_coords=[[500, 375]], point_labels=[0]),
    dict(box=[[100, 100, 400, 300], [300, 200, 800, 600]]),
]


@pytest.mark.parametrize("source", ["image", "video"])
def test_predictions_match_reference(predictors, source):
    ours, reference = predictors
    if source == "image":
        image = read_image(IMAGES[2])
    else:
        image = read_video_frames(VIDEOS[0], count=1, start=10)[0]
    with torch.inference_mode():
        ours.set_image(image)
        reference.set_image(image)
    assert (ours.get_image_embedding() - reference.get_image_embedding()).abs().max() <= TOL
    h, w = image.shape[:2]
    for prompt in PROMPTS:
        mine = ours.predict(**prompt, return_logits=True)
        theirs = reference.predict(**prompt, return_logits=True)
        for a, b in zip(mine, theirs):
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= TOL, prompt
        assert mine[0].shape[-2:] == (h, w)
        masks, _, _ = ours.predict(**prompt)
        assert masks.dtype == bool and np.array_equal(masks, mine[0] > 0)
    # a low-resolution mask fed back, as in iterative refinement
    _, _, low_res = ours.predict(**PROMPTS[0], multimask_output=False)
    refine = dict(point_coords=[[520, 380]], point_labels=[1], mask_input=low_res,
                  multimask_output=False, return_logits=True)
    for a, b in zip(ours.predict(**refine), reference.predict(**refine)):
        assert np.abs(a - b).max() <= TOL


def test_bad_prompts_raise_clear_errors(predictors):
    ours, _ = predictors
    fresh = SamImagePredictor(ours.model)
    with pytest.raises(ValueError, match="no image set"):
        fresh.predict(point_coords=[[1, 1]], point_labels=[1])
    ours.set_image(np.zeros((48, 64, 3), np.uint8))
    cases = [
        (dict(point_coords=[[np.nan, 3]], point_labels=[1]), "NaN"),
        (dict(point_coords=[[1, 2, 3]], point_labels=[1]), "N x 2"),
        (dict(point_coords=[[1, 2], [3, 4]], point_labels=[1]), "2 points"),
        (dict(point_coords=[[1, 2]]), "together"),
        (dict(point_coords=[[70, 2]], point_labels=[1]), "outside the 64x48 image"),
        (dict(box=[10, 10, 5, 20]), "x_min <= x_max"),
        (dict(point_coords=[[1, 2]], point_labels=[5]), "1 \\(foreground\\) or 0"),
        (dict(box=[1, 2, 3]), "box must be"),
        (dict(box=[1, 2, np.inf, 4]), "NaN or infinite"),
        (dict(), "empty prompt"),
        (dict(mask_input=np.zeros((1, 64, 64))), "mask_input must be"),
    ]
    for prompt, message in cases:
        with pytest.raises(ValueError, match=message):
            ours.predict(**prompt)
    for image, message in [(np.zeros((4, 4), np.uint8), "H x W x 3"),
                           (np.zeros((4, 4, 3), np.float32), "uint8")]:
        with pytest.raises(ValueError, match=message):
            ours.set_image(image)
