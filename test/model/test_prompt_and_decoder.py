"""Prompt encoder and mask decoder against Meta's reference (sam2==1.1.0), same random weights.

The reference heads come from the oracle model (built through ``build_sam2``, so its decoder
has the dynamic multimask-via-stability fallback on). Inputs are random image features of
the real sizes (1024 input, 64 x 64 embedding, 256 / 128 high-res maps).
"""

import pytest
import torch
from torch import nn

from lab.oracle import build_oracle, randomize_
from sam_ros.model.mask_decoder import MaskDecoder, TwoWayTransformer
from sam_ros.model.prompt_encoder import PromptEncoder

TOL = 1e-4


def max_err(a, b):
    if a.numel() == 0:
        return 0.0
    return (a.float() - b.float()).abs().max().item()


# small runs: one thread is faster here (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def build_ours_like(ref_pe, ref_md):
    """Our heads with the constructor arguments read off the reference modules."""
    t = ref_md.transformer
    pe = PromptEncoder(embed_dim=ref_pe.embed_dim,
                       image_embedding_size=ref_pe.image_embedding_size,
                       input_image_size=ref_pe.input_image_size,
                       mask_in_chans=ref_pe.mask_downscaling[3].out_channels)
    md = MaskDecoder(
        transformer_dim=ref_md.transformer_dim,
        transformer=TwoWayTransformer(depth=t.depth, embedding_dim=t.embedding_dim,
                                      num_heads=t.num_heads, mlp_dim=t.mlp_dim),
        num_multimask_outputs=ref_md.num_multimask_outputs,
        iou_head_depth=ref_md.iou_prediction_head.num_layers,
        iou_head_hidden_dim=ref_md.iou_prediction_head.layers[0].out_features,
        use_high_res_features=ref_md.use_high_res_features,
        iou_prediction_use_sigmoid=ref_md.iou_prediction_head.sigmoid_output,
        dynamic_multimask_via_stability=ref_md.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=ref_md.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=ref_md.dynamic_multimask_stability_thresh,
        pred_obj_scores=ref_md.pred_obj_scores,
        pred_obj_scores_mlp=(ref_md.pred_obj_scores
                             and not isinstance(ref_md.pred_obj_score_head, nn.Linear)),
        use_multimask_token_for_obj_ptr=ref_md.use_multimask_token_for_obj_ptr)
    pe.load_state_dict(ref_pe.state_dict(), strict=True)
    md.load_state_dict(ref_md.state_dict(), strict=True)
    return pe.eval(), md.eval()


def reference_and_ours(variant):
    oracle = build_oracle(variant)
    ref_pe, ref_md = oracle.sam_prompt_encoder, oracle.sam_mask_decoder
    pe, md = build_ours_like(ref_pe, ref_md)
    return ref_pe, ref_md, pe, md


@pytest.fixture(scope="module")
def heads():
    return reference_and_ours("sam2.1_hiera_t")


@pytest.fixture(scope="module")
def sam2_heads():
    return reference_and_ours("sam2_hiera_t")


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(1)
    embed = torch.randn(1, 256, 64, 64, generator=g)
    high_res = [0.5 * torch.randn(1, 32, 256, 256, generator=g),
                0.5 * torch.randn(1, 64, 128, 128, generator=g)]
    return embed, high_res


def run_heads(pe, md, embed, high_res, points=None, boxes=None, masks=None, multimask=True,
              repeat_image=False):
    sparse, dense = pe(points=points, boxes=boxes, masks=masks)
    out = md(image_embeddings=embed, image_pe=pe.get_dense_pe(),
             sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
             multimask_output=multimask, repeat_image=repeat_image,
             high_res_features=high_res)
    return (sparse, dense) + tuple(out)


def assert_heads_match(ref, ours):
    names = ["sparse", "dense", "masks", "iou", "tokens", "object_score"]
    errors = {}
    for name, a, b in zip(names, ref, ours):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        errors[name] = max_err(a, b)
    print({k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= TOL, errors
    return errors


def clicks(n_sets, n_points, seed, labels=None):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n_sets, n_points, 2, generator=g) * 1023
    if labels is None:
        labels = torch.randint(0, 2, (n_sets, n_points), generator=g, dtype=torch.int32)
    return coords, torch.as_tensor(labels, dtype=torch.int32)


BOX = torch.tensor([[180.0, 240.0, 700.5, 810.0]])


def _case(name):
    """Prompt inputs of each scenario (the mask prompt is 4x the embedding, 256 x 256)."""
    g = torch.Generator().manual_seed(7)
    mask = 4 * torch.randn(1, 1, 256, 256, generator=g)
    one_click = clicks(1, 1, 0, [[1]])
    two_clicks = clicks(1, 2, 1, [[1, 0]])
    cases = {
        "one_click_multimask": dict(points=one_click, multimask=True),
        "one_click_single_dynamic": dict(points=one_click, multimask=False),
        "box_only": dict(boxes=BOX, multimask=False),
        "points_and_box": dict(points=two_clicks, boxes=BOX, multimask=True),
        # Every label: positive, padding, box corners given as points, negative.
        "mixed_labels": dict(points=clicks(1, 5, 2, [[1, -1, 2, 3, 0]]), multimask=False),
        "mask_input": dict(points=two_clicks, masks=mask, multimask=False),
        "no_prompt": dict(multimask=True),
        # Many tokens: heads x tokens exceeds the attention width, the direct path.
        "many_clicks": dict(points=clicks(1, 14, 4), multimask=True),
        "batch3_repeat_multimask": dict(points=clicks(3, 2, 5), multimask=True,
                                        repeat_image=True),
        "batch2_repeat_single": dict(points=clicks(2, 2, 6), multimask=False,
                                     repeat_image=True),
        "batch2_repeat_boxes": dict(boxes=BOX + torch.tensor([[0.0], [-90.0]]),
                                    multimask=True, repeat_image=True),
        "batch2_repeat_masks": dict(points=clicks(2, 1, 8), masks=mask.repeat(2, 1, 1, 1)
                                    * torch.tensor([1.0, -0.5]).view(2, 1, 1, 1),
                                    multimask=False, repeat_image=True),
        "batch2_repeat_many_clicks": dict(points=clicks(2, 12, 9), multimask=True,
                                          repeat_image=True),
    }
    return cases[name]


CASES = ["one_click_multimask", "one_click_single_dynamic", "box_only", "points_and_box",
         "mixed_labels", "mask_input", "no_prompt", "many_clicks", "batch3_repeat_multimask",
         "batch2_repeat_single", "batch2_repeat_boxes", "batch2_repeat_masks",
         "batch2_repeat_many_clicks"]


def test_constructor_arguments_and_state_dict_keys(heads):
    ref_pe, ref_md, pe, md = heads
    assert pe.embed_dim == 256 and pe.image_embedding_size == (64, 64)
    assert pe.input_image_size == (1024, 1024) and pe.mask_input_size == (256, 256)
    assert md.use_high_res_features and md.pred_obj_scores and md.dynamic_multimask_via_stability
    for ref, ours in ((ref_pe, pe), (ref_md, md)):
        theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert mine == theirs
        ref.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("case", CASES)
def test_heads_match_reference(heads, features, case):
    ref_pe, ref_md, pe, md = heads
    embed, high_res = features
    kwargs = _case(case)
    with torch.no_grad():
        ref = run_heads(ref_pe, ref_md, embed, high_res, **kwargs)
        ours = run_heads(pe, md, embed, high_res, **kwargs)
    assert_heads_match(ref, ours)
    b = ours[0].shape[0]
    m = 3 if kwargs["multimask"] else 1
    assert ours[2].shape == (b, m, 256, 256) and ours[3].shape == (b, m)
    assert ours[4].shape == (b, m, 256) and ours[5].shape == (b, 1)


@pytest.mark.parametrize("case", ["one_click_single_dynamic", "batch2_repeat_masks"])
def test_sam2_tiny_heads_match_reference(sam2_heads, features, case):
    """SAM 2 (not 2.1) tiny: same head configuration, its own random weights."""
    ref_pe, ref_md, pe, md = sam2_heads
    test_constructor_arguments_and_state_dict_keys(sam2_heads)
    kwargs = _case(case)
    with torch.no_grad():
        assert_heads_match(run_heads(ref_pe, ref_md, *features, **kwargs),
                           run_heads(pe, md, *features, **kwargs))


@pytest.mark.parametrize("case", ["batch3_repeat_multimask", "batch2_repeat_masks",
                                  "batch2_repeat_many_clicks"])
def test_all_prompts_upscaled_at_once_match_reference(heads, features, case):
    """The GPU's way (one batched upscaling pass for every prompt set), checked here on CPU."""
    ref_pe, ref_md, pe, md = heads
    kwargs = _case(case)
    md.per_prompt_upscaling = False
    try:
        with torch.no_grad():
            assert_heads_match(run_heads(ref_pe, ref_md, *features, **kwargs),
                               run_heads(pe, md, *features, **kwargs))
    finally:
        md.per_prompt_upscaling = None


def test_separate_images_without_repeat(heads, features):
    """B prompt sets over B different images (the tracker's per-object memory-conditioned
    features), repeat_image=False; high-res features per image too."""
    ref_pe, ref_md, pe, md = heads
    embed, (s0, s1) = features
    embed2 = torch.cat([embed, embed.flip(-1)])
    high_res2 = [torch.cat([s0, s0.flip(-2)]), torch.cat([s1, -s1])]
    kwargs = dict(points=clicks(2, 2, 11), multimask=False)
    with torch.no_grad():
        ref = run_heads(ref_pe, ref_md, embed2, high_res2, **kwargs)
        ours = run_heads(pe, md, embed2, high_res2, **kwargs)
    assert_heads_match(ref, ours)


def test_dense_positional_encoding_and_its_cache(heads):
    ref_pe, _, pe, _ = heads
    assert max_err(ref_pe.get_dense_pe(), pe.get_dense_pe()) <= 1e-5
    # The cached grid must follow a reloaded buffer.
    state = {k: v.clone() for k, v in pe.state_dict().items()}
    try:
        changed = dict(state)
        changed["pe_layer.positional_encoding_gaussian_matrix"] = 2 * state[
            "pe_layer.positional_encoding_gaussian_matrix"]
        pe.load_state_dict(changed)
        ref_pe.load_state_dict(changed)
        assert max_err(ref_pe.get_dense_pe(), pe.get_dense_pe()) <= 1e-5
    finally:
        pe.load_state_dict(state)
        ref_pe.load_state_dict(state)
    assert max_err(ref_pe.get_dense_pe(), pe.get_dense_pe()) <= 1e-5
    # A model built under inference mode has inference-tensor buffers (no version counter).
    with torch.inference_mode():
        fresh = PromptEncoder(256, (64, 64), (1024, 1024), 16)
        fresh.load_state_dict(pe.state_dict())
        for _ in range(2):
            assert max_err(ref_pe.get_dense_pe(), fresh.get_dense_pe()) <= 1e-5


def test_dynamic_multimask_selection_both_branches(heads):
    """The stability fallback on hand-made logits: stable, unstable, empty and tied rows."""
    _, ref_md, _, md = heads
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 4, 32, 32, generator=g) * 5
    logits[0, 0] = 8.0  # all far above +delta: stability 1, keep token 0
    logits[1, 0] = 0.04 * (2 * torch.rand(32, 32, generator=g) - 1)  # all inside +-delta
    logits[2, 0] = -3.0  # empty at both thresholds: stability defined as 1
    logits[3, 0, :16] = 1.0  # half the pixels in (-delta, +delta)
    logits[3, 0, 16:] = 0.01
    iou = torch.rand(4, 4, generator=g)
    iou[3, 1:] = 0.5  # a tie: the first candidate wins
    ref_masks, ref_iou = ref_md._dynamic_multimask_via_stability(logits, iou)
    masks, iou_out = md._dynamic_multimask_via_stability(logits, iou)
    assert torch.equal(masks, ref_masks) and torch.equal(iou_out, ref_iou)
    assert torch.equal(masks[0, 0], logits[0, 0]) and torch.equal(masks[2, 0], logits[2, 0])
    best = iou[1, 1:].argmax() + 1
    assert torch.equal(masks[1, 0], logits[1, best]) and torch.equal(masks[3, 0], logits[3, 1])


def test_training_mode_forward_and_gradients(heads, features):
    """In training the fallback is off; outputs and every parameter's gradient match."""
    ref_pe, ref_md, pe, md = heads
    embed, high_res = features
    points = clicks(2, 3, 12)
    grads = []
    try:
        for e, d in ((ref_pe, ref_md), (pe, md)):
            e.train(), d.train()
            e.zero_grad(), d.zero_grad()
            image = embed.clone().requires_grad_(True)
            out = run_heads(e, d, image, high_res, points=points, multimask=False,
                            repeat_image=True)
            masks, iou, tokens, obj = out[2:]
            loss = masks.sigmoid().mean() + iou.sum() + tokens.square().mean() + obj.sum()
            loss.backward()
            named = dict(e.named_parameters(prefix="pe"))
            named.update(d.named_parameters(prefix="md"))
            grads.append((out, image.grad, {k: p.grad for k, p in named.items()}))
    finally:
        for m in heads:
            m.eval()
    (ref_out, ref_image_grad, ref_grads), (our_out, our_image_grad, our_grads) = grads
    assert_heads_match([t.detach() for t in ref_out], [t.detach() for t in our_out])
    scale = ref_image_grad.abs().max().item()
    assert max_err(ref_image_grad, our_image_grad) <= 1e-4 * max(scale, 1.0)
    assert ref_grads.keys() == our_grads.keys()
    for name, ref_grad in ref_grads.items():
        ours = our_grads[name]
        assert (ref_grad is None) == (ours is None), name
        if ref_grad is not None:
            tol = 1e-4 * max(ref_grad.abs().max().item(), 1.0)
            assert max_err(ref_grad, ours) <= tol, (name, max_err(ref_grad, ours))


def test_bfloat16_autocast_close_to_reference(heads, features):
    """Under CPU autocast both implementations round differently; ours must stay as close
    to the float32 answer as the reference's own bfloat16 run is."""
    ref_pe, ref_md, pe, md = heads
    embed, high_res = features
    kwargs = dict(points=clicks(3, 2, 13), multimask=True, repeat_image=True)
    with torch.no_grad():
        exact = run_heads(ref_pe, ref_md, embed, high_res, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_bf16 = run_heads(ref_pe, ref_md, embed, high_res, **kwargs)
            ours_bf16 = run_heads(pe, md, embed, high_res, **kwargs)
    for i in range(2, 6):
        assert torch.isfinite(ours_bf16[i].float()).all()
        ref_err = max_err(exact[i], ref_bf16[i])
        our_err = max_err(exact[i], ours_bf16[i])
        assert our_err <= 2 * ref_err + 0.02 * exact[i].abs().max().item(), (i, our_err, ref_err)


@pytest.mark.parametrize("pred_obj_scores,high_res,obj_mlp", [(False, False, False),
                                                             (True, False, False)])
def test_other_decoder_configurations(pred_obj_scores, high_res, obj_mlp):
    """Without an object-score head (logit 10.0) and without high-res features (plain
    upscaling), against reference decoders built directly."""
    from sam2.modeling.sam.mask_decoder import MaskDecoder as RefMaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer as RefTransformer

    args = dict(transformer_dim=256, num_multimask_outputs=3, iou_head_depth=3,
                iou_head_hidden_dim=256, use_high_res_features=high_res,
                pred_obj_scores=pred_obj_scores, pred_obj_scores_mlp=obj_mlp)
    ref = RefMaskDecoder(transformer=RefTransformer(depth=2, embedding_dim=256, num_heads=8,
                                                   mlp_dim=2048), **args)
    randomize_(ref, seed=5).eval()
    ours = MaskDecoder(transformer=TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8,
                                                     mlp_dim=2048), **args)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    g = torch.Generator().manual_seed(2)
    embed = torch.randn(1, 256, 32, 32, generator=g)
    pe = torch.randn(1, 256, 32, 32, generator=g)
    sparse = torch.randn(2, 3, 256, generator=g)
    dense = torch.randn(1, 256, 1, 1, generator=g).expand(2, -1, 32, 32)
    with torch.no_grad():
        for multimask in (True, False):
            a = ref(embed, pe, sparse, dense, multimask, True)
            b = ours(embed, pe, sparse, dense, multimask, True)
            assert max(max_err(x, y) for x, y in zip(a, b)) <= TOL
    if not pred_obj_scores:
        assert torch.equal(b[3], torch.full((2, 1), 10.0))
