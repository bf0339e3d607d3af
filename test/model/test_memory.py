"""Memory attention and memory encoder against Meta's reference (sam2==1.1.0) with the same
random weights: state-dict layout, forward outputs (float32 and bfloat16 autocast), gradients,
and the rotary encoding on its own."""

import pytest
import torch

from lab.oracle import build_oracle
from sam_ros.model.common import PositionEmbeddingSine
from sam_ros.model.memory import (
    CXBlock,
    Fuser,
    MaskDownSampler,
    MemoryAttention,
    MemoryAttentionLayer,
    MemoryEncoder,
    RoPEAttention,
    chunked_attention,
    rope_table,
    rotate,
    rotate_,
)

TOL = 1e-4
D_MODEL, MEM_DIM = 256, 64


def max_err(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def oracle():
    return build_oracle("sam2.1_hiera_t")


def build_memory_attention():
    """Ours, with the arguments of configs/sam2.1/sam2.1_hiera_t.yaml."""
    def rope(**extra):
        return RoPEAttention(embedding_dim=D_MODEL, num_heads=1, downsample_rate=1, dropout=0.1,
                             rope_theta=10000.0, feat_sizes=(64, 64), **extra)

    layer = MemoryAttentionLayer(
        activation="relu", cross_attention=rope(rope_k_repeat=True, kv_in_dim=MEM_DIM),
        d_model=D_MODEL, dim_feedforward=2048, dropout=0.1, pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        self_attention=rope())
    return MemoryAttention(d_model=D_MODEL, pos_enc_at_input=True, layer=layer, num_layers=4)


def build_memory_encoder():
    return MemoryEncoder(
        out_dim=MEM_DIM,
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=D_MODEL, kernel_size=7, padding=3, layer_scale_init_value=1e-6,
                            use_dwconv=True), num_layers=2),
        position_encoding=PositionEmbeddingSine(MEM_DIM, temperature=10000, normalize=True),
        in_dim=D_MODEL)


@pytest.fixture(scope="module")
def attention_pair(oracle):
    ours = build_memory_attention().eval()
    ours.load_state_dict(oracle.memory_attention.state_dict(), strict=True)
    return oracle.memory_attention, ours


@pytest.fixture(scope="module")
def encoder_pair(oracle):
    ours = build_memory_encoder().eval()
    ours.load_state_dict(oracle.memory_encoder.state_dict(), strict=True)
    return oracle.memory_encoder, ours


def memory_inputs(side, batch, frames, ptr_tokens, seed=0):
    """Sequence-first inputs as SAM2Base builds them: curr/curr_pos (HW, B, 256),
    memory/memory_pos (frames * HW + ptr_tokens, B, 64)."""
    g = torch.Generator().manual_seed(seed)
    hw = side * side
    m = frames * hw + ptr_tokens
    return dict(curr=torch.randn(hw, batch, D_MODEL, generator=g),
                curr_pos=torch.randn(hw, batch, D_MODEL, generator=g),
                memory=torch.randn(m, batch, MEM_DIM, generator=g),
                memory_pos=torch.randn(m, batch, MEM_DIM, generator=g),
                num_obj_ptr_tokens=ptr_tokens)


def run_reference(ref, inputs):
    # the reference takes one-element lists for curr and curr_pos
    args = dict(inputs, curr=[inputs["curr"]], curr_pos=[inputs["curr_pos"]])
    return ref(**args)


# ------------------------------------------------------------------ state dicts

@pytest.mark.parametrize("name, build", [("memory_attention", build_memory_attention),
                                         ("memory_encoder", build_memory_encoder)])
def test_state_dict_matches_reference_both_ways(oracle, name, build):
    theirs_module = getattr(oracle, name)
    ours = build()
    theirs = {k: tuple(v.shape) for k, v in theirs_module.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs
    ours.load_state_dict(theirs_module.state_dict(), strict=True)
    theirs_module.load_state_dict(ours.state_dict(), strict=True)


def test_rope_tables_are_not_state(attention_pair):
    _, ours = attention_pair
    assert not any("freq" in k or "rope" in k for k in ours.state_dict())
    assert len(list(ours.buffers())) == 0


# ------------------------------------------------------------------ memory encoder

@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
def test_memory_encoder_matches_reference(encoder_pair, skip_mask_sigmoid):
    ref, ours = encoder_pair
    g = torch.Generator().manual_seed(3)
    pix_feat = torch.randn(1, D_MODEL, 64, 64, generator=g)
    masks = 8 * torch.randn(1, 1, 1024, 1024, generator=g)
    if skip_mask_sigmoid:  # as SAM2Base feeds it: scaled and shifted probabilities
        masks = torch.sigmoid(masks) * 20.0 - 10.0
    with torch.no_grad():
        expected = ref(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
        got = ours(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    assert got["vision_features"].shape == (1, MEM_DIM, 64, 64)
    assert max_err(got["vision_features"], expected["vision_features"]) <= TOL
    assert len(got["vision_pos_enc"]) == 1
    assert max_err(got["vision_pos_enc"][0], expected["vision_pos_enc"][0]) <= TOL


def test_memory_encoder_bfloat16_autocast(encoder_pair):
    ref, ours = encoder_pair
    g = torch.Generator().manual_seed(13)
    pix_feat = torch.randn(1, D_MODEL, 32, 32, generator=g)
    masks = torch.sigmoid(8 * torch.randn(1, 1, 512, 512, generator=g)) * 20.0 - 10.0
    with torch.no_grad():
        exact = ref(pix_feat, masks, skip_mask_sigmoid=True)["vision_features"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            theirs = ref(pix_feat, masks, skip_mask_sigmoid=True)["vision_features"]
            mine = ours(pix_feat, masks, skip_mask_sigmoid=True)["vision_features"]
    assert mine.dtype == theirs.dtype
    err_ref, err_ours = max_err(theirs, exact), max_err(mine, exact)
    assert err_ours <= 1.5 * err_ref + 1e-3, (err_ours, err_ref)


def test_memory_encoder_batch(encoder_pair):
    """Two objects at once equal one at a time."""
    _, ours = encoder_pair
    g = torch.Generator().manual_seed(4)
    pix_feat = torch.randn(2, D_MODEL, 16, 16, generator=g)
    masks = torch.randn(2, 1, 256, 256, generator=g)
    with torch.no_grad():
        both = ours(pix_feat, masks)["vision_features"]
        second = ours(pix_feat[1:], masks[1:])["vision_features"]
    assert max_err(both[1:], second) <= 1e-5


# ------------------------------------------------------------------ rotary encoding

@pytest.mark.parametrize("complex_", [True, False])
def test_rotate_matches_reference_rope(complex_):
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    g = torch.Generator().manual_seed(5)
    head_dim, side, frames = 64, 8, 3
    q = torch.randn(2, 2, side * side, head_dim, generator=g)
    k = torch.randn(2, 2, frames * side * side, head_dim, generator=g)
    cis = compute_axial_cis(dim=head_dim, end_x=side, end_y=side)
    q_ref, k_ref = apply_rotary_enc(q, k, freqs_cis=cis, repeat_freqs_k=True)

    table = rope_table(head_dim, side, side, 10000.0, "cpu", complex_=complex_)
    attn = RoPEAttention(128, 2, rope_k_repeat=True, feat_sizes=(side, side))
    assert max_err(rotate(q, table), q_ref) <= 1e-5
    assert max_err(rotate_(q.clone(), table), q_ref) <= 1e-5
    assert max_err(rotate(q.bfloat16(), table), q_ref) <= 0.03
    assert max_err(attn.rotate_keys(k, table, 0), k_ref) <= 1e-5
    # the last keys (object pointers) stay as they are, in place or not
    k_ptr = torch.cat((k, torch.randn(2, 2, 5, head_dim, generator=g)), dim=2)
    for in_place in (False, True):
        got = attn.rotate_keys(k_ptr.clone(), table, 5, in_place=in_place)
        assert max_err(got[:, :, :-5], k_ref) <= 1e-5
        assert torch.equal(got[:, :, -5:], k_ptr[:, :, -5:])


def test_real_and_complex_rope_kernels_agree(attention_pair):
    _, ours = attention_pair
    inputs = memory_inputs(16, 2, 2, 8, seed=11)
    with torch.no_grad():
        default = ours(**inputs)
        RoPEAttention.complex_rope = False
        try:
            real = ours(**inputs)
        finally:
            RoPEAttention.complex_rope = True
    assert max_err(default, real) <= 1e-5


# ------------------------------------------------------------------ memory attention

@pytest.mark.parametrize("side, batch, frames, ptr_tokens", [
    (32, 2, 3, 16),  # several objects, several frames, object pointers
    (32, 1, 1, 0),   # one memory frame, no pointers
    (64, 1, 2, 8),   # the real 1024-pixel feature grid
])
def test_memory_attention_matches_reference(attention_pair, side, batch, frames, ptr_tokens):
    ref, ours = attention_pair
    inputs = memory_inputs(side, batch, frames, ptr_tokens)
    with torch.no_grad():
        expected = run_reference(ref, inputs)
        got = ours(**inputs)
    assert got.shape == (side * side, batch, D_MODEL)
    err = max_err(got, expected)
    assert err <= TOL, err


def test_memory_attention_batch_equals_single(attention_pair):
    """Each object attends only to its own memory."""
    _, ours = attention_pair
    inputs = memory_inputs(16, 3, 2, 8, seed=6)
    with torch.no_grad():
        both = ours(**inputs)
        single = ours(**{k: v[:, 2:3] if torch.is_tensor(v) else v for k, v in inputs.items()})
    assert max_err(both[:, 2:3], single) <= 1e-5


def test_memory_attention_gradients_match_reference(attention_pair):
    ref, ours = attention_pair
    inputs = memory_inputs(16, 2, 2, 8, seed=7)
    grads = []
    for model, run in ((ref, run_reference), (ours, lambda m, x: m(**x))):
        model.zero_grad()
        x = {k: v.clone().requires_grad_(True) if torch.is_tensor(v) else v
             for k, v in inputs.items()}
        run(model, x).square().mean().backward()
        grads.append([x["curr"].grad, x["memory"].grad,
                      model.layers[0].cross_attn_image.k_proj.weight.grad,
                      model.layers[3].self_attn.q_proj.weight.grad])
    model.zero_grad()
    ref.zero_grad()
    for theirs, mine in zip(*grads):
        scale = theirs.abs().max().item()
        assert max_err(mine, theirs) <= 1e-4 * max(scale, 1.0)


def test_memory_attention_trains_after_inference_mode(attention_pair):
    """RoPE tables first built under inference_mode must still serve autograd later."""
    _, ours = attention_pair
    inputs = memory_inputs(8, 1, 1, 4, seed=8)  # a grid size no other test uses
    with torch.inference_mode():
        ours(**inputs)
    x = inputs["curr"].clone().requires_grad_(True)
    ours(**dict(inputs, curr=x)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    ours.zero_grad()


def test_bfloat16_autocast_is_as_accurate_as_reference(attention_pair):
    """Under CPU bfloat16 autocast ours takes its own chunked attention path; it must stay
    as close to the float32 result as the reference's bfloat16 run is."""
    ref, ours = attention_pair
    inputs = memory_inputs(32, 2, 3, 16, seed=9)
    with torch.no_grad():
        exact = run_reference(ref, inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            theirs = run_reference(ref, inputs)
            mine = ours(**inputs)
    assert mine.dtype == theirs.dtype
    err_ref, err_ours = max_err(theirs, exact), max_err(mine, exact)
    assert err_ours <= 1.5 * err_ref + 1e-3, (err_ours, err_ref)


def test_chunked_attention_matches_sdpa():
    g = torch.Generator().manual_seed(10)
    q = torch.randn(2, 1, 300, 64, generator=g)
    k = 2 * torch.randn(2, 1, 1000, 64, generator=g)
    v = torch.randn(2, 1, 1000, 24, generator=g)  # narrower values are allowed
    scores = (q @ k.transpose(-1, -2)) / 8
    expected = torch.softmax(scores.double(), -1) @ v.double()
    got = chunked_attention(q, k, v, chunk_elems=64 * 1000)  # several chunks
    assert max_err(got, expected) <= 1e-5
    got_bf16 = chunked_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), chunk_elems=64 * 1000)
    exact_bf16_inputs = torch.softmax(
        (q.bfloat16().double() @ k.bfloat16().double().transpose(-1, -2)) / 8, -1
    ) @ v.bfloat16().double()
    assert max_err(got_bf16, exact_bf16_inputs) <= 0.03


def test_memory_attention_trains_with_dropout():
    """Training mode (dropout 0.1 everywhere) runs forward and backward; the bfloat16
    chunked path stays off while dropout is active."""
    torch.manual_seed(0)
    ours = build_memory_attention().train()
    inputs = memory_inputs(8, 2, 2, 4, seed=12)
    x = inputs["curr"].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(**dict(inputs, curr=x))
    out.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in ours.parameters())
