"""The training recipe runs, learns and writes a checkpoint that loads like Meta's; the
bundled model is the default. Quality on held-out video is the evaluation command's job
(``python -m lab.evaluate``), not a test: see the model card."""

import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lab import train
from lab.samples import PHOTOS
from lab.synthetic import MAX_TARGETS, SceneGenerator, find_photos
from sam_ros.model import BUNDLED_CHECKPOINT, build_sam2, detect_variant, read_state_dict
from sam_ros.tracker import StreamingTracker


def training_options(*argv):
    """train.py's options: its defaults, changed by ``argv``."""
    return train.parse_args(["--out", "unused.pt", "--photos", str(PHOTOS), *argv])


def test_bundled_model_is_the_default():
    model = build_sam2()
    assert model.config.name == "sam_ros_mini" and model.image_size == 256
    assert detect_variant(read_state_dict(BUNDLED_CHECKPOINT)) == "sam_ros_mini"
    assert Path(BUNDLED_CHECKPOINT).stat().st_size < 10 * 2 ** 20
    # trained, not the zeros a fresh model starts with
    assert model.no_mem_embed.abs().sum() > 0


def test_training_command_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "mini.pt"
    train.main(["--out", str(out), "--photos", str(PHOTOS), "--steps", "2", "--batch", "1",
                "--frames", "8", "--workers", "0", "--log-every", "0"])
    model = build_sam2("auto", checkpoint=out)
    assert model.config.name == "sam_ros_mini"


@pytest.mark.parametrize("pixel_loss", train.PIXEL_LOSSES)
def test_training_steps_lower_the_loss_on_a_batch(pixel_loss):
    torch.manual_seed(0)
    model = train.init_for_training(build_sam2("sam_ros_mini")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = SceneGenerator(find_photos(PHOTOS), size=256)
    clips = [generator.clip(seed, num_frames=3, num_targets=1, occlusion=False)
             for seed in (11, 12)]
    frames = torch.stack([torch.from_numpy(c.frames) for c in clips])
    targets = torch.stack([torch.from_numpy(c.masks) for c in clips])
    options = training_options("--image-odds", "1", "--pixel-loss", pixel_loss)
    losses = []
    for step in range(12):
        # the same prompts every step: only the weights change
        rng, points = np.random.default_rng(0), torch.Generator().manual_seed(0)
        loss, _ = train.clip_loss(model, frames, targets, options, rng, points)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_candidates_only_trains_the_candidates_and_leaves_the_rest():
    """``--candidates-only`` lowers the candidates' loss and changes their hypernetworks and
    their rows of the IoU head, nothing else: the bundled model's single mask, its IoU
    estimate, its object score and its tracking stay bit for bit."""
    torch.manual_seed(0)
    model = build_sam2().train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW(train.candidate_parameters(model), lr=1e-3)
    generator = SceneGenerator(find_photos(PHOTOS), size=256)
    clips = [generator.clip(seed, num_frames=1, num_targets=2, occlusion=False)
             for seed in (11, 12)]
    frames = torch.stack([torch.from_numpy(c.frames) for c in clips])
    targets = torch.stack([torch.from_numpy(c.masks) for c in clips])
    options = training_options("--candidates-only")
    losses = []
    for step in range(10):
        # the same clicks every step: only the weights change
        loss, _ = train.train_step(model, optimizer, frames, targets, options,
                                   np.random.default_rng(0), torch.Generator().manual_seed(0))
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses
    changed = {name for name, value in model.state_dict().items()
               if not torch.equal(value, before[name])}
    rating = ("sam_mask_decoder.iou_prediction_head.layers.2.weight",
              "sam_mask_decoder.iou_prediction_head.layers.2.bias")
    trained = ("sam_mask_decoder.output_hypernetworks_mlps.1.",
               "sam_mask_decoder.output_hypernetworks_mlps.2.",
               "sam_mask_decoder.output_hypernetworks_mlps.3.", *rating)
    assert changed and all(name.startswith(trained) for name in changed), changed
    assert all(any(name.startswith(prefix) for name in changed) for prefix in trained)
    # the last layer's row 0 rates the single mask
    assert all(torch.equal(model.state_dict()[name][0], before[name][0]) for name in rating)


def test_freeze_encoder_trains_all_but_the_image_encoder():
    """``--freeze-encoder``: the image encoder stays bit for bit and gets no gradient (its
    backward is the time saved); the memory path and the heads learn."""
    torch.manual_seed(0)
    model = build_sam2().train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    options = training_options("--freeze-encoder", "--frames", "3")
    optimizer = torch.optim.AdamW(train.trained_parameters(model, options), lr=1e-3)
    generator = SceneGenerator(find_photos(PHOTOS), size=256)
    clips = [generator.clip(seed, num_frames=3, num_targets=2, occlusion=False)
             for seed in (11, 12)]
    frames = torch.stack([torch.from_numpy(c.frames) for c in clips])
    targets = torch.stack([torch.from_numpy(c.masks) for c in clips])
    for step in range(2):
        train.train_step(model, optimizer, frames, targets, options,
                         np.random.default_rng(step), torch.Generator().manual_seed(step))
    changed = {name for name, value in model.state_dict().items()
               if not torch.equal(value, before[name])}
    assert not any(name.startswith("image_encoder.") for name in changed), changed
    for module in ("memory_attention.", "memory_encoder.", "sam_mask_decoder."):
        assert any(name.startswith(module) for name in changed), module
    assert all(p.grad is None for p in model.image_encoder.parameters())
    with pytest.raises(SystemExit):  # --candidates-only freezes more already
        training_options("--freeze-encoder", "--candidates-only")


def test_clicks_land_inside_their_regions_and_anywhere_when_empty():
    regions = torch.zeros(3, 8, 8, dtype=torch.bool)
    regions[0, 2, 5] = regions[0, 6, 1] = True  # two pixels
    regions[1, 7, 7] = True  # the last pixel
    generator = torch.Generator().manual_seed(0)
    drawn = torch.stack([train.sample_points(regions, generator) for _ in range(200)])
    assert {tuple(p) for p in drawn[:, 0].int().tolist()} == {(5, 2), (1, 6)}
    assert {tuple(p) for p in drawn[:, 1].int().tolist()} == {(7, 7)}
    assert len({tuple(p) for p in drawn[:, 2].int().tolist()}) > 20  # empty: anywhere


def test_noisy_boxes_frame_each_mask_up_to_bounded_noise():
    truth = torch.zeros(3, 64, 64, dtype=torch.bool)
    truth[0, 10:20, 30:41] = True  # x 30..40, y 10..19
    truth[1, 0:64, 5:6] = True  # a one-pixel-wide column
    truth[2, 50, 60] = True  # a single pixel
    boxes, labels = train.noisy_boxes(truth, torch.Generator().manual_seed(0))
    exact = torch.tensor([[30, 10, 40, 19], [5, 0, 5, 63], [60, 50, 60, 50]]).float()
    assert boxes.shape == (3, 2, 2) and labels.tolist() == [[2, 3]] * 3
    moved = (boxes.view(3, 4) - exact).abs()
    assert (moved <= 20).all() and (boxes >= 0).all() and (boxes <= 63).all()
    assert (moved[0] > 0).all()  # noise scales with the side ...
    assert torch.equal(boxes.view(3, 4)[2], exact[2])  # ... so a point stays put
    assert boxes[1, :, 0].tolist() == [5.0, 5.0]  # and so does a column's x


def test_frames_encoded_in_chunks_match_one_pass(monkeypatch):
    model = build_sam2("sam_ros_mini").eval()
    images = torch.randn(5, 3, model.image_size, model.image_size)
    with torch.no_grad():
        whole = model.encode_image(images)
        monkeypatch.setattr(train, "ENCODE_CHUNK", 2)
        chunked = train.encode_frames(model, images)
    for a, b in [(whole.embed, chunked.embed), (whole.pos, chunked.pos),
                 *zip(whole.high_res, chunked.high_res)]:
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_hidden_weight_scales_the_object_score_loss_where_the_object_is_absent():
    out = types.SimpleNamespace(high_res_multimasks=torch.randn(2, 3, 16, 16),
                                ious=torch.rand(2, 3), object_score_logits=torch.randn(2, 1))
    truth = torch.zeros(2, 16, 16, dtype=torch.bool)
    truth[0, 4:9, 4:9] = True
    present = truth.flatten(1).any(1)  # object 0 shows, object 1 is hidden
    plain, _ = train.prediction_loss(out, truth, present, hidden_weight=1.0)
    weighted, _ = train.prediction_loss(out, truth, present, hidden_weight=4.0)
    hidden_score = torch.nn.functional.binary_cross_entropy_with_logits(
        out.object_score_logits[1, 0], torch.tensor(0.0))
    # the loss is a mean over the two objects; only the hidden one's score term grows
    assert torch.isclose(weighted - plain, 3.0 * hidden_score / 2, atol=1e-5)


def test_focal_alpha_weighs_target_pixels_against_background_ones():
    # an undecided mask (every logit 0) over a target that fills a quarter of the image
    out = types.SimpleNamespace(high_res_multimasks=torch.zeros(1, 1, 16, 16),
                                ious=torch.zeros(1, 1), object_score_logits=torch.zeros(1, 1))
    truth = torch.zeros(1, 16, 16, dtype=torch.bool)
    truth[0, :8, :8] = True
    loss = {alpha: train.prediction_loss(out, truth, truth.flatten(1).any(1), "focal",
                                         focal_alpha=alpha)[0] for alpha in (0.25, 0.75)}
    # each pixel costs alpha_t * ln 2 * (1 - 0.5)^2: moving weight from the background
    # (three quarters of the pixels) to the target lowers the mean
    per_pixel = train.FOCAL_WEIGHT * math.log(2) * 0.25
    expected = per_pixel * ((0.75 - 0.25) * 0.25 + (0.25 - 0.75) * 0.75)
    assert torch.isclose(loss[0.75] - loss[0.25], torch.tensor(expected), atol=1e-5)


def test_clip_stream_puts_the_tracked_target_first_and_pads_the_others():
    stream = iter(train.ClipStream(find_photos(PHOTOS), 64, frames=3, seed=0))
    for _ in range(6):
        frames, masks = next(stream)
        assert frames.shape == (3, 64, 64, 3) and masks.shape == (3, MAX_TARGETS, 64, 64)
        assert masks[0, 0].any()  # the tracked target shows where it is prompted
        shown = masks.flatten(2).any(-1).any(0)  # targets that show on some frame
        # the clip's real targets come first; the padding is empty on every frame
        assert not (~shown[:-1] & shown[1:]).any(), shown
        # targets are disjoint: a pixel shows one object, the front one
        assert int(masks.sum(1).max()) <= 1


def test_training_tracks_a_clip_as_the_streaming_tracker_does(monkeypatch, one_thread):
    """The model learns on the path it is used on: one click on frame 0, then memory on
    every later frame, gives the same masks in ``clip_loss`` as in ``StreamingTracker``
    (on one thread, where a batch of frames and a single frame sum in the same order)."""
    model = build_sam2().eval()  # trained weights: random ones hardly move a mask
    clip = SceneGenerator(find_photos(PHOTOS), size=model.image_size).clip(
        5, num_frames=10, num_targets=1, occlusion=True)
    prompts, masks = [], []
    first_prompt, prediction_loss = train.first_prompt, train.prediction_loss

    def recorded_prompt(*args):
        prompts.append(first_prompt(*args))
        return prompts[-1]

    def recorded_loss(out, *args, **kwargs):
        masks.append(out.high_res_masks[0, 0])
        return prediction_loss(out, *args, **kwargs)

    monkeypatch.setattr(train, "PROMPT_ODDS", (1.0, 0.0, 0.0, 0.0))  # always one click
    monkeypatch.setattr(train, "first_prompt", recorded_prompt)
    monkeypatch.setattr(train, "prediction_loss", recorded_loss)
    options = training_options("--correct-odds", "0", "--image-odds", "0")
    with torch.no_grad():
        train.clip_loss(model, torch.from_numpy(clip.frames)[None],
                        torch.from_numpy(clip.masks)[None], options,
                        np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert len(prompts) == 1 and len(masks) == len(clip.frames)
    (points, labels), = prompts

    tracker = StreamingTracker(model, memory_dtype=torch.float32)
    for index, image in enumerate(clip.frames):
        result = tracker.step(image).get(0)
        if index == 0:
            result = tracker.add_prompt(0, points=points[0].numpy(), labels=labels[0].numpy())
        # within float rounding; storing memories in bfloat16 (the default) is 2e-3 off
        assert torch.allclose(torch.from_numpy(result.logits), masks[index], atol=1e-4), index
    # a mask that moves with its target, not one the memory path leaves unchanged
    shown = [(m > 0).float() for m in masks]
    assert shown[0].sum() > 0 and any((s - shown[0]).abs().sum() > 0 for s in shown[1:])
