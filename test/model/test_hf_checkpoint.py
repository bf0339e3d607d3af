"""Hugging Face ``transformers`` SAM 2 and SAM checkpoints (``model.safetensors``) loaded into
our models, with ``transformers`` itself (5.25.0, test-only) as the oracle: the same random
weights saved by ``save_pretrained``, the same image and prompts, the same masks and IoU
scores; and the memory path, module by module, for SAM 2's full (``Sam2VideoModel``) layout."""

import shutil
import warnings

import numpy as np
import pytest
import torch

from lab.oracle import (
    IMAGES,
    build_sam_oracle,
    import_transformers,
    oracle_sam_predictor,
    read_image,
)
from sam_ros.model import (
    SAM,
    SAM2,
    VARIANTS,
    CheckpointError,
    Sam2Config,
    SamImagePredictor,
    build_model,
    build_sam2,
    get_config,
)
from sam_ros.model.hf_format import hf_to_meta, is_hf_checkpoint
from sam_ros.model.transforms import preprocess, to_model_coords

transformers = import_transformers()

TOL = 1e-4
SIZE = 256  # a reduced input (the windows pad; both implementations allow it): fast on CPU


def hf_config(variant, size, video):
    """transformers' config of one of our variants (written from our own config)."""
    c = get_config(variant)
    t = c.trunk
    hiera = transformers.Sam2HieraDetConfig(
        hidden_size=t.embed_dim, num_attention_heads=t.num_heads,
        embed_dim_per_stage=[t.embed_dim * 2 ** i for i in range(4)],
        num_attention_heads_per_stage=[t.num_heads * 2 ** i for i in range(4)],
        blocks_per_stage=list(t.stages), global_attention_blocks=list(t.global_att_blocks),
        window_positional_embedding_background_size=list(t.window_pos_embed_bkg_spatial_size),
        window_size_per_stage=list(t.window_spec), image_size=[size, size])
    vision = transformers.Sam2VisionConfig(
        backbone_config=hiera, backbone_channel_list=list(t.channel_list),
        backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2])
    prompt = transformers.Sam2PromptEncoderConfig(image_size=size)
    if not video:
        return transformers.Sam2Config(vision_config=vision, prompt_encoder_config=prompt)
    return transformers.Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=prompt, image_size=size,
        memory_attention_rope_feat_sizes=[size // 16] * 2,
        enable_occlusion_spatial_embedding=c.sam2_1,
        enable_temporal_pos_encoding_for_object_pointers=c.sam2_1)


def redraw(model, seed=0):
    """Redraw every saved float tensor: a fresh model hides paths behind zeros and ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if tensor.ndim >= 2:
                tensor.copy_(noise / tensor[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                tensor.copy_(1 + 0.1 * noise)
            else:
                tensor.copy_(0.1 * noise)
    return model.eval()


def randomize(model, seed=0):
    """``redraw``; share one positional matrix as SAM 2 does; bias the object-score head to
    "present"."""
    redraw(model, seed)
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding)
        model.mask_decoder.pred_obj_score_head.proj_out.bias.add_(1.0)
    return model.eval()


CASES = {  # name: (variant, saved by Sam2VideoModel (everything) or Sam2Model (images))
    "2.1 tiny, full": ("sam2.1_hiera_t", True),
    "2.0 small, full": ("sam2_hiera_s", True),
    "2.1 tiny, image only": ("sam2.1_hiera_t", False),
}


FULL = [case for case, (_, video) in CASES.items() if video]
IMAGE_ONLY = [case for case, (_, video) in CASES.items() if not video]


@pytest.fixture(scope="module")
def saved(request, tmp_path_factory):
    """(case, transformers model as saved, folder written by save_pretrained)."""
    variant, video = CASES[request.param]
    model_class = transformers.Sam2VideoModel if video else transformers.Sam2Model
    hf = randomize(model_class(hf_config(variant, SIZE, video)))
    folder = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(folder)
    return request.param, hf, folder


@pytest.fixture(scope="module")
def image_oracle(saved):
    """transformers' transformers.Sam2Model read from the saved folder, as a user would."""
    _, _, folder = saved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "a sam2_video checkpoint into transformers.Sam2Model"
        model, info = transformers.Sam2Model.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.fixture(scope="module")
def ours(saved):
    """Our model, built from the saved folder with variant auto."""
    _, _, folder = saved
    return build_sam2("auto", checkpoint=folder, image_size=SIZE)


PROMPTS = [  # coordinates as fractions of the image's width and height
    {"point_coords": [[0.45, 0.5]], "point_labels": [1]},
    {"point_coords": [[0.45, 0.5], [0.6, 0.3]], "point_labels": [1, 0], "multimask_output": False},
    {"box": [0.3, 0.25, 0.8, 0.7]},
    {"box": [0.3, 0.25, 0.8, 0.7], "point_coords": [[0.5, 0.5]], "point_labels": [0]},
]


def in_pixels(prompt, w, h):
    prompt = dict(prompt)
    if "point_coords" in prompt:
        prompt["point_coords"] = np.array(prompt["point_coords"]) * [w, h]
    if "box" in prompt:
        prompt["box"] = np.array(prompt["box"]) * [w, h, w, h]
    return prompt


@pytest.mark.parametrize("saved", list(CASES), indirect=True)
def test_predictions_match_transformers(saved, image_oracle, ours):
    case, _, _ = saved
    variant, video = CASES[case]
    # an image-only save cannot tell SAM 2.1 from SAM 2 (their image paths are the same)
    assert ours.config.name == (variant if video else variant.replace("sam2.1", "sam2"))
    assert ours.has_memory == video
    image = read_image(IMAGES[1])  # 800 x 534
    h, w = image.shape[:2]
    predictor = SamImagePredictor(ours)
    predictor.set_image(image)
    with torch.no_grad():
        embeddings = image_oracle.get_image_embeddings(preprocess(image, SIZE))
    assert (predictor.get_image_embedding() - embeddings[-1]).abs().max() <= TOL
    for prompt in PROMPTS:
        prompt = in_pixels(prompt, w, h)
        masks, ious, low_res = predictor.predict(**prompt, return_logits=True)
        inputs = {}
        if "point_coords" in prompt:
            points = torch.tensor(prompt["point_coords"], dtype=torch.float32)
            inputs["input_points"] = to_model_coords(points, (h, w), SIZE)[None, None]
            inputs["input_labels"] = torch.tensor(prompt["point_labels"])[None, None]
        if "box" in prompt:
            box = torch.tensor(prompt["box"], dtype=torch.float32).view(2, 2)
            inputs["input_boxes"] = to_model_coords(box, (h, w), SIZE).view(1, 1, 4)
        with torch.no_grad():
            out = image_oracle(image_embeddings=embeddings, multimask_output=prompt.get(
                "multimask_output", True), **inputs)
        assert (out.object_score_logits > 0).all()  # else our masks are the "absent" logit
        theirs = out.pred_masks[0, 0].clamp(-32, 32).numpy()  # we clamp fed-back logits
        assert low_res.shape == theirs.shape
        assert np.abs(low_res - theirs).max() <= TOL, prompt
        assert np.abs(ious - out.iou_scores[0, 0].numpy()).max() <= TOL, prompt
        assert masks.shape[-2:] == (h, w)


@pytest.mark.parametrize("saved", FULL, indirect=True)
def test_memory_path_matches_transformers(saved, ours):
    case, hf, _ = saved
    variant, _ = CASES[case]
    side = SIZE // 16
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(1, 256, side, side, generator=gen)
    masks = torch.randn(1, 1, SIZE, SIZE, generator=gen) * 10
    tokens = torch.randn(5, 2, 256, generator=gen)
    with torch.no_grad():
        mine = ours.memory_encoder(features, masks, skip_mask_sigmoid=True)["vision_features"]
        theirs, _ = hf.memory_encoder(features, masks)
        assert (mine - theirs).abs().max() <= TOL
        curr = torch.randn(side * side, 1, 256, generator=gen)
        curr_pos = torch.randn(side * side, 1, 256, generator=gen)
        pointers = 8  # object-pointer tokens (no rotary encoding) after one frame's memory
        memory = torch.randn(side * side + pointers, 1, 64, generator=gen)
        memory_pos = torch.randn(memory.shape, generator=gen)
        mine = ours.memory_attention(curr=curr, curr_pos=curr_pos, memory=memory,
                                     memory_pos=memory_pos, num_obj_ptr_tokens=pointers)
        theirs = hf.memory_attention(curr, memory, curr_pos, memory_pos, pointers)
        assert (mine - theirs[0].transpose(0, 1)).abs().max() <= TOL  # theirs: 1 x B x HW x C
        assert (ours.obj_ptr_proj(tokens) - hf.object_pointer_proj(tokens)).abs().max() <= TOL
        if get_config(variant).sam2_1:
            theirs = hf.temporal_positional_encoding_projection_layer(tokens)
            assert torch.equal(ours.obj_ptr_tpos_proj(tokens), theirs)
            assert torch.equal(ours.no_obj_embed_spatial, hf.occlusion_spatial_embedding_parameter)
    pairs = [(ours.no_mem_embed, hf.no_memory_embedding),
             (ours.no_mem_pos_enc, hf.no_memory_positional_encoding),
             (ours.maskmem_tpos_enc, hf.memory_temporal_positional_encoding),
             (ours.no_obj_ptr, hf.no_object_pointer),
             (ours.mask_downsample.weight, hf.mask_downsample.weight)]
    for mine, theirs in pairs:
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("saved", IMAGE_ONLY, indirect=True)
def test_image_only_save_refuses_to_track(saved, ours):
    from sam_ros.tracker import StreamingTracker
    with pytest.raises(ValueError, match="no memory to track with.*image-only"):
        StreamingTracker(ours)


@pytest.mark.parametrize("saved", FULL[:1], indirect=True)
def test_found_by_content_and_bad_files(saved, tmp_path):
    _, hf, folder = saved
    # the file itself, under any name: recognised by its header
    renamed = tmp_path / "weights.bin"
    shutil.copy(folder / "model.safetensors", renamed)
    assert is_hf_checkpoint(renamed) and is_hf_checkpoint(folder)
    assert build_sam2(checkpoint=renamed, image_size=SIZE).config.name == "sam2.1_hiera_t"
    # cut short
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(renamed.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="cut.safetensors: truncated or corrupt safetensors"):
        build_sam2(checkpoint=cut)
    # another model's safetensors
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError,
                       match="not a SAM 2 or SAM checkpoint in Hugging Face.s layout"):
        build_sam2(checkpoint=other)
    # untied positional matrices cannot be one SAM 2 matrix
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["shared_image_embedding.positional_embedding"] += 1
    with pytest.raises(CheckpointError, match="positional matrices .* differ"):
        hf_to_meta(state)


@pytest.mark.parametrize("variant", [name for name, config in VARIANTS.items()
                                     if isinstance(config, Sam2Config) and name != "sam_ros_mini"])
def test_every_official_layout_converts(variant):
    """All eight official architectures: transformers' full layout (built without memory,
    on the meta device) renames to exactly our keys and shapes."""
    with torch.device("meta"):
        hf = transformers.Sam2VideoModel(hf_config(variant, 1024, True))
    state = hf.state_dict()
    state.pop("shared_image_embedding.positional_embedding")  # meta tensors cannot compare
    converted = hf_to_meta(state)
    expected = {k: v.shape for k, v in SAM2(get_config(variant)).state_dict().items()}
    assert {k: v.shape for k, v in converted.items()} == expected


# ------------------------------------------------------------------ SAM (2023)


def hf_sam_config(variant):
    """transformers' SamConfig of one of our SAM ViT variants (written from our own config)."""
    e = get_config(variant).encoder
    vision = transformers.SamVisionConfig(
        hidden_size=e.embed_dim, num_hidden_layers=e.depth, num_attention_heads=e.num_heads,
        global_attn_indexes=list(e.global_attn_indexes), window_size=e.window_size)
    return transformers.SamConfig(vision_config=vision.to_dict())


@pytest.fixture(scope="module")
def sam_saved(tmp_path_factory):
    """transformers' SamModel of SAM ViT-B (the full network), random weights, as saved by
    save_pretrained; and ours, built from the saved folder with variant auto."""
    hf = transformers.SamModel(hf_sam_config("sam_vit_b"))
    redraw(hf)
    folder = tmp_path_factory.mktemp("hf_sam")
    hf.save_pretrained(folder)
    return hf, folder, build_model("auto", checkpoint=folder)


# transformers' SAM and Meta's differ by up to 2e-4 on these mask logits (of magnitude up to
# 3.4), however loaded; ours and Meta's by 5e-6. So: transformers within this, Meta within TOL.
HF_SAM_TOL = 5e-4


def test_sam_predictions_match_transformers_and_meta(sam_saved):
    hf, folder, ours = sam_saved
    assert ours.config.name == "sam_vit_b" and is_hf_checkpoint(folder)
    meta = build_sam_oracle("sam_vit_b")
    meta.load_state_dict(ours.state_dict(), strict=True)  # the converted weights, Meta's names
    image = read_image(IMAGES[1])  # 800 x 534: resized to 1024 x 684, then padded
    h, w = image.shape[:2]
    transform = ours.input_transform((h, w))
    predictor, reference = SamImagePredictor(ours), oracle_sam_predictor(meta.eval())
    predictor.set_image(image)
    reference.set_image(image)
    with torch.no_grad():
        embeddings = hf.get_image_embeddings(transform.image(image))
    assert (predictor.get_image_embedding() - embeddings).abs().max() <= TOL
    for prompt in PROMPTS:
        prompt = in_pixels(prompt, w, h)
        masks, ious, low_res = predictor.predict(**prompt, return_logits=True)
        multimask = prompt.get("multimask_output", True)
        _, meta_ious, meta_low_res = reference.predict(
            **{k: np.asarray(v) for k, v in prompt.items() if k != "multimask_output"},
            multimask_output=multimask, return_logits=True)
        inputs = {}
        if "point_coords" in prompt:
            points = transform.points(torch.tensor(prompt["point_coords"], dtype=torch.float32))
            inputs["input_points"] = points[None, None]
            inputs["input_labels"] = torch.tensor(prompt["point_labels"])[None, None]
        if "box" in prompt:
            box = transform.points(torch.tensor(prompt["box"], dtype=torch.float32).view(2, 2))
            inputs["input_boxes"] = box.view(1, 1, 4)
        with torch.no_grad():
            out = hf(image_embeddings=embeddings, multimask_output=multimask, **inputs)
        theirs = out.pred_masks[0, 0].numpy()
        assert low_res.shape == theirs.shape == meta_low_res.shape
        assert np.abs(low_res - meta_low_res).max() <= TOL, prompt
        assert np.abs(ious - meta_ious).max() <= TOL, prompt
        assert np.abs(low_res - theirs).max() <= HF_SAM_TOL, prompt
        assert np.abs(ious - out.iou_scores[0, 0].numpy()).max() <= HF_SAM_TOL, prompt
        assert masks.shape[-2:] == (h, w)


@pytest.mark.parametrize("variant", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_every_sam_layout_converts(variant):
    """transformers' SamModel of each size (meta device) renames to exactly our keys."""
    with torch.device("meta"):
        state = transformers.SamModel(hf_sam_config(variant)).state_dict()
        expected = {k: v.shape for k, v in SAM(get_config(variant)).state_dict().items()}
    # as save_pretrained writes it: the prompt encoder's matrix is the image's, saved once
    state.pop("prompt_encoder.shared_embedding.positional_embedding")
    assert {k: v.shape for k, v in hf_to_meta(state).items()} == expected
