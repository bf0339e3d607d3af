"""SAM (2023) and MobileSAM against their references on the same random weights: Meta's
``segment-anything==1.0`` for ViT-B/L/H, MobileSAM's published code for TinyViT. Also their
checkpoints: strict loading, family detection, and the same clear errors as for SAM 2.

What each case builds: ViT-B in full (12 blocks, image size 1024); ViT-L and ViT-H with two
blocks (one windowed, then one global: the official width, heads and 14-token windows, at
image size 1024); MobileSAM in full. The full ViT-L/H module trees are compared with the
official builders on the meta device.
"""

import dataclasses
import os

import numpy as np
import pytest
import torch

from lab.oracle import (
    IMAGES,
    build_sam_oracle,
    copy_weights,
    import_torchvision,
    oracle_sam_predictor,
    read_image,
)
from sam_ros.model import (
    BUNDLED_CHECKPOINT,
    SAM,
    CheckpointError,
    SamImagePredictor,
    build_model,
    build_sam2,
    detect_variant,
    get_config,
    save_checkpoint,
)
from sam_ros.model.transforms import LongestSideResize

TOL = 1e-4
SHALLOW = {"depth": 2, "global_attn_indexes": (1,)}
CASES = {  # variant -> encoder overrides (none: the official configuration)
    "sam_vit_b": {},
    "sam_vit_l": SHALLOW,
    "sam_vit_h": SHALLOW,
    "mobile_sam": {},
}


def our_model(variant, encoder_overrides):
    config = get_config(variant)
    if encoder_overrides:
        config = config.replace(encoder=dataclasses.replace(config.encoder, **encoder_overrides))
    return SAM(config)


def official_registry(variant):
    import_torchvision()
    if variant == "mobile_sam":
        from mobile_sam import sam_model_registry
        return sam_model_registry["vit_t"]
    from segment_anything import sam_model_registry
    return sam_model_registry[variant.removeprefix("sam_")]


@pytest.mark.parametrize("variant", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_full_vit_module_trees_match_official_builders(variant):
    """Every key and shape of the official models (the checkpoints load strictly into them)."""
    with torch.device("meta"):
        theirs = official_registry(variant)().state_dict()
        mine = SAM(get_config(variant)).state_dict()
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in theirs.items()}
    assert detect_variant(mine) == variant


def sample_image():
    """A real photo at 900 x 600 (W x H): resized to 1024 x 683 and padded, like the 2250 x
    1500 original, with masks a sixth of its size to upscale and compare."""
    import cv2

    return cv2.resize(read_image(IMAGES[0]), (900, 600), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module", params=list(CASES))
def pair(request):
    """(variant, ours, reference, our predictor, reference predictor) with one image set."""
    variant = request.param
    oracle = build_sam_oracle(variant, **CASES[variant])
    ours = copy_weights(oracle, our_model(variant, CASES[variant]))
    mine, theirs = SamImagePredictor(ours), oracle_sam_predictor(oracle)
    image = sample_image()
    with torch.inference_mode():
        mine.set_image(image)
        theirs.set_image(image)
    return variant, ours, oracle, mine, theirs


def test_module_tree_and_image_embedding_match(pair):
    _, ours, oracle, mine, theirs = pair
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in oracle.state_dict().items()}
    embedding = mine.get_image_embedding()
    assert embedding.shape == (1, 256, 64, 64)
    assert (embedding - theirs.get_image_embedding()).abs().max().item() <= TOL


CLICK = {"point_coords": [[500, 375]], "point_labels": [1]}
BOX = {"box": [300, 200, 850, 560]}
PROMPTS = {
    "click": CLICK,
    "click single": {**CLICK, "multimask_output": False},
    "clicks": {"point_coords": [[500, 375], [800, 500]], "point_labels": [1, 0],
               "multimask_output": False},
    "box": BOX,
    "box single": {**BOX, "multimask_output": False},
    "box and clicks": {**BOX, "point_coords": [[500, 375], [700, 450]], "point_labels": [0, 1]},
}


def as_reference_prompt(prompt):
    out = {k: np.asarray(v) if k != "multimask_output" else v for k, v in prompt.items()}
    out.setdefault("multimask_output", True)  # SamPredictor's default; ours: the model's
    return out


def assert_close(mine, theirs, what):
    for name, a, b in zip(("masks", "ious", "low-res logits"), mine, theirs):
        b = b.detach().cpu().numpy() if torch.is_tensor(b) else b
        assert a.shape == b.shape, (what, name)
        assert np.abs(a - b).max() <= TOL, (what, name, float(np.abs(a - b).max()))


@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompts_match_reference(pair, name):
    _, _, _, mine, theirs = pair
    prompt = PROMPTS[name]
    ours = mine.predict(**prompt, return_logits=True)
    assert_close(ours, theirs.predict(**as_reference_prompt(prompt), return_logits=True), name)
    expected = 3 if prompt.get("multimask_output", True) else 1
    assert ours[0].shape == (expected, 600, 900) and ours[2].shape == (expected, 256, 256)
    masks, _, _ = mine.predict(**prompt)
    assert masks.dtype == bool and np.array_equal(masks, ours[0] > 0)


def test_mask_input_matches_reference(pair):
    """A low-resolution mask fed back, alone and with a click, as in iterative refinement."""
    _, _, _, mine, theirs = pair
    _, _, low_res = mine.predict(**PROMPTS["click single"])
    for prompt in ({"mask_input": low_res},
                   {"mask_input": low_res, "point_coords": [[520, 380]], "point_labels": [1],
                    "multimask_output": False}):
        ours = mine.predict(**prompt, return_logits=True)
        assert_close(ours, theirs.predict(**as_reference_prompt(prompt), return_logits=True),
                     sorted(prompt))


def test_batched_boxes_match_reference(pair):
    """Several boxes at once (the reference's ``predict_torch``), with and without clicks."""
    _, _, _, mine, theirs = pair
    boxes = np.array([[100, 100, 500, 400], [300, 200, 850, 560]], np.float32)
    clicks = np.array([[[400, 300]], [[700, 450]]], np.float32)
    shape = theirs.original_size
    box_input = torch.as_tensor(theirs.transform.apply_boxes(boxes, shape), dtype=torch.float)
    click_input = torch.as_tensor(theirs.transform.apply_coords(clicks, shape),
                                  dtype=torch.float)
    labels = torch.ones(2, 1, dtype=torch.int)
    with torch.no_grad():
        for multimask in (True, False):
            ours = mine.predict(box=boxes, multimask_output=multimask, return_logits=True)
            reference = theirs.predict_torch(None, None, boxes=box_input,
                                             multimask_output=multimask, return_logits=True)
            assert_close(ours, reference, f"boxes, multimask {multimask}")
        ours = mine.predict(box=boxes, point_coords=clicks, point_labels=[[1], [1]],
                            multimask_output=False, return_logits=True)
        reference = theirs.predict_torch(click_input, labels, boxes=box_input,
                                         multimask_output=False, return_logits=True)
        assert_close(ours, reference, "boxes and clicks")


@pytest.mark.parametrize("hw", [(1500, 2250), (2250, 1500), (300, 200), (1024, 1024)])
def test_framing_matches_reference(hw):
    """SAM's longest-side resize, padding, point mapping and mask cropping, on real pixels."""
    import cv2

    import_torchvision()
    from segment_anything.modeling import ImageEncoderViT, Sam
    from segment_anything.utils.transforms import ResizeLongestSide

    image = cv2.resize(read_image(IMAGES[1]), hw[::-1], interpolation=cv2.INTER_AREA)
    ours = LongestSideResize(hw, 1024)
    reference = ResizeLongestSide(1024)
    resized = torch.as_tensor(reference.apply_image(image)).permute(2, 0, 1)[None]
    # Only the reference's pixel statistics and framing are used: no blocks, no heads.
    sam = Sam(ImageEncoderViT(img_size=1024, depth=0, embed_dim=16), torch.nn.Identity(),
              torch.nn.Identity())
    assert torch.equal(ours.image(image), sam.preprocess(resized))

    points = np.array([[0, 0], [hw[1] - 1, hw[0] - 1], [hw[1] / 3, hw[0] / 2]], np.float32)
    assert np.allclose(ours.points(torch.from_numpy(points)).numpy(),
                       reference.apply_coords(points, hw), atol=1e-4)
    logits = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    expected = sam.postprocess_masks(logits, tuple(resized.shape[-2:]), hw)
    assert (ours.masks(logits) - expected).abs().max().item() <= 1e-6


def test_multimask_default_and_validation(pair):
    _, ours, _, mine, _ = pair
    masks, ious, low_res = mine.predict(point_coords=[[500, 375]], point_labels=[1])
    assert masks.shape[0] == ious.shape[0] == low_res.shape[0] == 3
    with pytest.raises(ValueError, match="outside the 900x600 image"):
        mine.predict(point_coords=[[950, 10]], point_labels=[1])
    with pytest.raises(ValueError, match="mask_input must be 1 x 256 x 256"):
        mine.predict(mask_input=np.zeros((1, 64, 64)))
    with pytest.raises(ValueError, match="no image set"):
        SamImagePredictor(ours).predict(point_coords=[[1, 1]], point_labels=[1])


def test_streaming_tracker_refuses_an_image_only_model():
    from sam_ros.tracker.streaming import StreamingTracker

    with pytest.raises(ValueError, match="mobile_sam has no memory to track with.*SAM 2"):
        StreamingTracker(build_model("mobile_sam"))


# ------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def sam_files(tmp_path_factory):
    """Bare state dicts of the reference models, as Meta and MobileSAM publish them: ViT-B
    (its keys and shapes from the official builder, a distinct value in each tensor) and
    MobileSAM (the official builder's initial weights)."""
    folder = tmp_path_factory.mktemp("sam_ckpt")
    with torch.device("meta"):
        layout = official_registry("sam_vit_b")().state_dict()
    states = {"sam_vit_b": {k: torch.full(v.shape, i / len(layout), dtype=v.dtype)
                            for i, (k, v) in enumerate(layout.items())},
              "mobile_sam": official_registry("mobile_sam")().state_dict()}
    files = {}
    for variant, state in states.items():
        path = folder / f"{variant}.pth"
        torch.save(state, path)
        files[variant] = (path, state)
    return files


def test_official_layout_loads_strictly_and_is_detected(sam_files):
    for variant, (path, state) in sam_files.items():
        assert not isinstance(torch.load(path, weights_only=True).get("model"), dict)
        model = build_model("auto", checkpoint=path)
        assert isinstance(model, SAM) and model.config.name == variant and not model.training
        for key, value in state.items():
            assert torch.equal(model.state_dict()[key], value), key
    path, _ = sam_files["mobile_sam"]
    assert build_model("mobile_sam", checkpoint=path).config.name == "mobile_sam"


def test_save_checkpoint_writes_the_bare_layout(tmp_path):
    model = build_model("mobile_sam")
    path = tmp_path / "again.pt"
    save_checkpoint(model, path)
    raw = torch.load(path, weights_only=True)
    assert "model" not in raw and set(raw) == set(model.state_dict())
    assert build_model("auto", checkpoint=path).config.name == "mobile_sam"


def test_detects_every_family():
    for variant in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam"):
        with torch.device("meta"):  # keys and shapes are all detection reads
            state = SAM(get_config(variant)).state_dict()
        assert detect_variant(state) == variant
    for variant in ("sam2.1_hiera_t", "sam2_hiera_t"):
        assert detect_variant(build_model(variant).state_dict()) == variant
    bundled = torch.load(BUNDLED_CHECKPOINT, weights_only=True)["model"]
    assert detect_variant(bundled) == "sam_ros_mini"


def test_wrong_family_is_named(sam_files):
    path, _ = sam_files["sam_vit_b"]
    with pytest.raises(CheckpointError) as info:
        build_model("sam2.1_hiera_t", checkpoint=path)
    message = str(info.value)
    assert "sam_vit_b.pth does not fit sam2.1_hiera_t" in message
    assert "missing keys" in message and "unexpected keys" in message
    assert "it looks like sam_vit_b" in message
    with pytest.raises(CheckpointError, match="does not fit sam_vit_b.*looks like sam_ros_mini"):
        build_model("sam_vit_b", checkpoint=BUNDLED_CHECKPOINT)
    mobile, _ = sam_files["mobile_sam"]
    with pytest.raises(CheckpointError, match="does not fit sam_vit_b.*looks like mobile_sam"):
        build_model("sam_vit_b", checkpoint=mobile)
    # build_sam2 stays SAM 2 only.
    with pytest.raises(CheckpointError, match="holds a sam_vit_b model, not a SAM2 one"):
        build_sam2("auto", checkpoint=path)
    with pytest.raises(ValueError, match="sam_vit_b is not a SAM2 variant"):
        build_sam2("sam_vit_b")
    # SAM's position embeddings are sized for 1024: another size is a shape mismatch.
    with pytest.raises(CheckpointError, match="wrong shape.*image_encoder.pos_embed"):
        build_model("sam_vit_b", checkpoint=path, image_size=512)


def test_truncated_and_code_needing_files_are_refused(sam_files, tmp_path):
    path, _ = sam_files["mobile_sam"]
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: truncated or corrupt"):
        build_model("auto", checkpoint=cut)

    class RunsCodeWhenUnpickled:
        def __reduce__(self):
            return (print, ("this would run at load time",))

    evil = tmp_path / "evil.pth"
    torch.save({"image_encoder.pos_embed": RunsCodeWhenUnpickled()}, evil)
    with pytest.raises(CheckpointError, match="evil.pth: refused.*need code"):
        build_model("sam_vit_b", checkpoint=evil)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(CheckpointError, match="not a SAM 2 checkpoint, nor a SAM or MobileSAM"):
        build_model("auto", checkpoint=other)
