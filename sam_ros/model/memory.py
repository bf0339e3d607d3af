"""Memory attention and memory encoder of SAM 2.

Memory attention conditions the current frame's image tokens on the memories of earlier
frames (spatial memories of ``mem_dim`` channels plus object-pointer tokens); the memory
encoder turns a frame's features and its predicted mask into such a spatial memory.

Module and parameter names follow Meta's checkpoints, so official state dicts load strictly.
"""

import copy
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from .common import Attention, LayerNorm2d

# ----------------------------------------------------------------------------------------
# Rotary position encoding (axial 2-D).
#
# Channel pairs (2p, 2p+1) of a head are rotated by an angle that grows with the token's
# column (first half of the pairs) or row (second half): (a, b) -> (a cos t - b sin t,
# a sin t + b cos t). Tables cover one H*W grid and are broadcast over batch, heads and
# memory frames, never repeated.
#
# Two kernels compute the same rotation. The default multiplies the pairs, viewed as complex
# numbers, by the unit complex table: one fused elementwise pass. On CPU eager PyTorch this
# is ~3.5x faster than the best real-valued form (x * cos + swap(x) * sin needs a swap copy
# and two more passes). The real-valued kernel remains for backends or exporters without
# complex support (set ``RoPEAttention.complex_rope = False``; used automatically on MPS,
# while tracing and during ONNX export).
# ----------------------------------------------------------------------------------------

_ROPE_TABLES = {}


def _rope_angles(head_dim, width, height, theta):
    """(width * height, head_dim / 2) float32 angles, tokens in row-major order."""
    exponents = torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim
    inv_freq = 1.0 / (theta ** exponents)
    token = torch.arange(width * height, dtype=torch.float32)
    col = token % width
    row = torch.div(token, width, rounding_mode="floor")
    return torch.cat((torch.outer(col, inv_freq), torch.outer(row, inv_freq)), dim=-1)


def rope_table(head_dim, width, height, theta, device, dtype=torch.float32, complex_=True):
    """Cached rotation table for a width x height grid, computed lazily.

    ``complex_``: (N, head_dim / 2) unit complex numbers (complex64, or complex128 when
    ``dtype`` is float64); else (2, N, head_dim) real: cos per channel, and sin signed
    (-sin, +sin) per pair. Shared by every module with the same geometry; never module
    state. Built outside inference mode and autograd, so a table first made under
    ``torch.inference_mode`` still serves training later.
    """
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    key = (head_dim, width, height, float(theta), torch.device(device), dtype, complex_)
    table = _ROPE_TABLES.get(key)
    if table is None:
        with torch.inference_mode(False), torch.no_grad():
            angles = _rope_angles(head_dim, width, height, theta).to(dtype)
            cos, sin = angles.cos(), angles.sin()
            if complex_:
                table = torch.complex(cos, sin)
            else:
                table = torch.stack((cos.repeat_interleave(2, dim=-1),
                                     torch.stack((-sin, sin), dim=-1).flatten(-2)))
            table = table.to(device)
        _ROPE_TABLES[key] = table
    return table


def _complex_view(x):
    """``x`` (..., D) as (..., D / 2) complex pairs without a copy, or None if its layout
    does not allow it."""
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(st % 2 for st in x.stride()[:-1]):
        return None
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def rotate(x, table):
    """Rotated copy of ``x`` (..., N, D) with an (N, ...) ``table`` broadcast over the rest.

    Reduced-precision inputs are rotated in the table's precision and rounded once, as the
    reference does.
    """
    if table.is_complex():
        work = x.to(table.real.dtype)
        pairs = _complex_view(work)
        if pairs is None:
            pairs = torch.view_as_complex(work.contiguous().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * table).flatten(-2).to(x.dtype)
    cos_pairs, sin_signed = table
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    out = x * cos_pairs  # promotes to the table's dtype
    # in place is safe for autograd: the product's backward needs its inputs, not its result
    out.addcmul_(swapped, sin_signed)
    return out.to(x.dtype)


def rotate_(x, table):
    """Rotate ``x`` in place (inference only: autograd must not need ``x``)."""
    pairs = _complex_view(x) if table.is_complex() and x.dtype == table.real.dtype else None
    if pairs is not None:
        pairs.mul_(table)
    else:
        x.copy_(rotate(x, table))
    return x


# Key stride of the sample that estimates each score row's maximum (see chunked_attention).
_SHIFT_SAMPLE_STRIDE = 16


def chunked_attention(q, k, v, chunk_elems=1 << 23):
    """Softmax attention for CPU inference, in query chunks of plain matrix products.

    Used for bfloat16: the CPU's fused SDPA kernel runs bfloat16 no faster than float32,
    while bfloat16 matrix products run about twice as fast. Their scores come out rounded to
    bfloat16, an error proportional to each score's size; to keep the scores that matter
    (those near the row maximum) accurate, each query row is shifted by an estimate of its
    maximum (taken on a strided sample of keys) inside the product itself: ``q`` gets an
    extra column ``-shift`` and ``k`` an extra column of ones. Softmax ignores the shift.
    Float32 scores need no shift.

    ``v`` may be narrower than ``q``/``k``. Shapes: q (..., N, d), k (..., L, d),
    v (..., L, dv) -> (..., N, dv).
    """
    lead = q.shape[:-2]
    q = (q * q.shape[-1] ** -0.5).reshape(-1, *q.shape[-2:])
    k = k.reshape(-1, *k.shape[-2:])
    v = v.reshape(-1, *v.shape[-2:])
    num_keys = k.shape[-2]
    shifted = q.dtype in (torch.bfloat16, torch.float16)
    # right-hand operands are laid out (batch, inner, keys) once, up front: bmm would
    # otherwise copy a transposed view on every call
    if shifted:
        ones = k.new_ones(k.shape[0], 1, num_keys)
        keys_t = torch.cat((k.transpose(1, 2), ones), dim=1)
        stride = _SHIFT_SAMPLE_STRIDE if num_keys >= 64 * _SHIFT_SAMPLE_STRIDE else 1
        sample_t = k[:, ::stride].transpose(1, 2).contiguous()
    else:
        keys_t = k.transpose(1, 2).contiguous()
    # one batch entry (object, head) at a time: batched, a tracked frame of 3 objects took
    # 2.6x one object's (bench/bench_tracker.py, 2-core CPU, 1024 px); one at a time 2.2x
    chunk = max(16, chunk_elems // max(num_keys, 1))
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
    for b in range(q.shape[0]):
        for start in range(0, q.shape[1], chunk):
            q_chunk = q[b:b + 1, start:start + chunk]
            if shifted:
                shift = torch.bmm(q_chunk, sample_t[b:b + 1]).amax(dim=-1, keepdim=True)
                q_chunk = torch.cat((q_chunk, -shift), dim=-1)
            scores = torch.softmax(torch.bmm(q_chunk, keys_t[b:b + 1]), dim=-1)
            torch.bmm(scores, v[b:b + 1], out=out[b:b + 1, start:start + chunk])
    return out.reshape(*lead, *out.shape[-2:])


class RoPEAttention(Attention):
    """Attention whose queries and keys carry an axial rotary encoding of their grid position.

    Queries are one feature map of H*W tokens. Keys are either the same grid (self-attention)
    or, with ``rope_k_repeat``, several frames of that grid one after another (cross-attention
    to spatial memories); each frame is rotated like the queries. The last
    ``num_k_exclude_rope`` keys (object pointers) have no position and are left unrotated.

    Set ``use_chunked_cpu_attention = False`` to always use PyTorch's fused attention, and
    ``complex_rope = False`` for the real-valued rotation kernel.
    """

    use_chunked_cpu_attention = True
    chunked_cpu_dtypes = (torch.bfloat16,)
    complex_rope = True

    def __init__(self, embedding_dim, num_heads, downsample_rate=1, dropout=0.0, kv_in_dim=None,
                 rope_theta=10000.0, rope_k_repeat=False, feat_sizes=(64, 64)):
        super().__init__(embedding_dim, num_heads, downsample_rate=downsample_rate,
                         dropout=dropout, kv_in_dim=kv_in_dim)
        self.embedding_dim = embedding_dim
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.head_dim = self.internal_dim // num_heads
        if self.head_dim % 4:
            raise ValueError("axial RoPE needs a head width divisible by 4")
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)  # (width, height), as in the reference

    def grid_size(self, num_tokens):
        """(width, height) of the query grid: ``feat_sizes`` if it fits, else a square."""
        width, height = self.feat_sizes
        if width * height == num_tokens:
            return width, height
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"cannot place {num_tokens} query tokens on a square grid")
        return side, side

    def table(self, num_tokens, device, dtype):
        """RoPE table for ``num_tokens`` queries on ``device``, for inputs of ``dtype``."""
        width, height = self.grid_size(num_tokens)
        return rope_table(self.head_dim, width, height, self.rope_theta, device, dtype,
                          complex_=self._complex_kernel(device))

    def _complex_kernel(self, device):
        if not self.complex_rope or torch.device(device).type == "mps":
            return False
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        onnx = sys.modules.get("torch.onnx")  # not imported: not exporting either
        return not (onnx is not None and onnx.is_in_onnx_export())

    def rotate_keys(self, k, table, num_k_exclude_rope, in_place=False):
        """Rotate the positional keys of (B, heads, L, d) ``k``, frame by frame.

        ``in_place`` (inference only) rotates inside ``k`` itself, which also spares copying
        the unrotated object-pointer keys.
        """
        num_q = table.shape[-2] if not table.is_complex() else table.shape[0]
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope <= 0:
            return k
        if num_rope != num_q:
            if not self.rope_k_repeat or num_rope % num_q:
                raise ValueError(f"{num_rope} rotary keys do not match {num_q} queries")
        spatial = k[..., :num_rope, :] if num_k_exclude_rope else k
        # view the keys as (..., frames, H*W, d) so one table serves every frame
        frames = spatial.unflatten(-2, (num_rope // num_q, num_q))
        if in_place:
            rotate_(frames, table)
            return k
        rotated = rotate(frames, table).flatten(-3, -2)
        if num_k_exclude_rope:
            rotated = torch.cat((rotated, k[..., num_rope:, :]), dim=-2)
        return rotated

    def _fold_values(self):
        """Whether attending to the raw values and projecting afterwards is cheaper."""
        return self.num_heads == 1 and self.kv_in_dim < self.internal_dim

    def _chunked(self, q, k, v):
        """Whether to use ``chunked_attention``: bfloat16 CPU inference without dropout.

        There, plain bfloat16 products beat fused SDPA (~2x on the attention itself, ~1.6x
        on the whole memory attention at 1024 px). They also allow values narrower than the
        keys: with one head, the attention weights are shared by all value channels and
        softmax(s) @ (m W^T + b) == (softmax(s) @ m) W^T + b, so cross-attention attends to
        the 64-channel memory itself and projects afterwards, saving 3/4 of the
        weighted-sum work (see ``_fold_values``).
        """
        if not self.use_chunked_cpu_attention or q.device.type != "cpu":
            return False
        if q.dtype not in self.chunked_cpu_dtypes or (self.training and self.dropout_p > 0):
            return False
        return not (torch.is_grad_enabled()
                    and (q.requires_grad or k.requires_grad or v.requires_grad))

    def forward(self, q, k, v, num_k_exclude_rope=0):
        q = self.q_proj(q)
        k = self.k_proj(k)
        chunked = self._chunked(q, k, v)
        fold = chunked and self._fold_values()
        if fold:
            v = v.to(q.dtype).unsqueeze(1)  # the raw memory as the single head's values
        else:
            v = self.split_heads(self.v_proj(v))
        q, k = self.split_heads(q), self.split_heads(k)
        table = self.table(q.shape[-2], q.device, q.dtype)
        # q and k are this call's own projections: without autograd, rotate them in place
        in_place = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))
        q = rotate_(q, table) if in_place else rotate(q, table)
        k = self.rotate_keys(k, table, num_k_exclude_rope, in_place=in_place)
        if not chunked:
            return self.attend(q, k, v)
        out = chunked_attention(q, k, v)
        if fold:
            out = self.v_proj(out)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


# ----------------------------------------------------------------------------------------
# Memory attention
# ----------------------------------------------------------------------------------------

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}


def _add_pos(x, pos, enabled):
    return x + pos if enabled and pos is not None else x


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: self-attention over the frame, cross-attention to memory, then an MLP.

    Works batch-first: ``tgt`` (B, HW, d_model), ``memory`` (B, M, mem_dim).
    """

    def __init__(self, activation, cross_attention, d_model, dim_feedforward, dropout,
                 pos_enc_at_attn, pos_enc_at_cross_attn_keys, pos_enc_at_cross_attn_queries,
                 self_attention):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation_str = activation
        self.activation = _ACTIVATIONS[activation]
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def _self_attention(self, tgt, query_pos):
        x = self.norm1(tgt)
        qk = _add_pos(x, query_pos, self.pos_enc_at_attn)
        return tgt + self.dropout1(self.self_attn(qk, qk, x))

    def _cross_attention(self, tgt, memory, query_pos, pos, num_k_exclude_rope):
        x = self.norm2(tgt)
        q = _add_pos(x, query_pos, self.pos_enc_at_cross_attn_queries)
        k = _add_pos(memory, pos, self.pos_enc_at_cross_attn_keys)
        if isinstance(self.cross_attn_image, RoPEAttention):
            out = self.cross_attn_image(q, k, memory, num_k_exclude_rope=num_k_exclude_rope)
        elif num_k_exclude_rope > 0:
            raise ValueError("num_k_exclude_rope needs a RoPEAttention cross-attention")
        else:
            out = self.cross_attn_image(q, k, memory)
        return tgt + self.dropout2(out)

    def forward(self, tgt, memory, pos=None, query_pos=None, num_k_exclude_rope=0):
        tgt = self._self_attention(tgt, query_pos)
        tgt = self._cross_attention(tgt, memory, query_pos, pos, num_k_exclude_rope)
        x = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(x)


class MemoryAttention(nn.Module):
    """A stack of ``num_layers`` copies of ``layer`` followed by a final LayerNorm.

    ``forward`` takes and returns sequence-first tensors, like the reference:
    ``curr`` (HW, B, d_model) (or a one-element list of it), ``curr_pos`` the same shape,
    ``memory``/``memory_pos`` (M, B, mem_dim) whose last ``num_obj_ptr_tokens`` rows are
    object-pointer tokens; returns (HW, B, d_model).
    """

    def __init__(self, d_model, pos_enc_at_input, layer, num_layers, batch_first=True):
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first

    def forward(self, curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        if isinstance(curr, (list, tuple)):
            if len(curr) != 1 or not isinstance(curr_pos, (list, tuple)) or len(curr_pos) != 1:
                raise ValueError("curr and curr_pos lists must hold exactly one tensor each")
            curr, curr_pos = curr[0], curr_pos[0]
        if curr.shape[1] != memory.shape[1]:
            raise ValueError("curr and memory must have the same batch size (dim 1)")

        x = curr
        if self.pos_enc_at_input and curr_pos is not None:
            x = x + 0.1 * curr_pos
        if self.batch_first:
            # batch-first and contiguous once, rather than a strided copy inside every layer
            x, curr_pos, memory, memory_pos = (
                None if t is None else t.transpose(0, 1).contiguous()
                for t in (x, curr_pos, memory, memory_pos))
        for layer in self.layers:
            x = layer(x, memory, pos=memory_pos, query_pos=curr_pos,
                      num_k_exclude_rope=num_obj_ptr_tokens)
        x = self.norm(x)
        return x.transpose(0, 1) if self.batch_first else x


# ----------------------------------------------------------------------------------------
# Memory encoder
# ----------------------------------------------------------------------------------------

# The encoder works on channels-last tensors (NCHW shape, NHWC memory): the depthwise 7x7
# convolution runs much faster that way on CPU (oneDNN), LayerNorm over channels and the
# pointwise linears read them without copies, and 1x1 convolutions become plain GEMMs.


def _channel_layer_norm(x, norm):
    """``LayerNorm2d`` of an NCHW tensor through the fused channels-last kernel."""
    x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, norm.eps)
    return x.permute(0, 3, 1, 2)


def _pointwise(conv, x):
    """A 1x1 ``conv`` as a linear over channels; the result is channels-last."""
    if (conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0)
            or conv.groups != 1 or conv.dilation != (1, 1)):
        return conv(x)
    return F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)


class MaskDownSampler(nn.Module):
    """Shrinks a mask by ``total_stride`` in conv steps of ``stride``, each multiplying the
    channels by stride**2 (conv, LayerNorm2d, activation), then projects to ``embed_dim``."""

    def __init__(self, embed_dim=256, kernel_size=4, stride=4, padding=0, total_stride=16,
                 activation=nn.GELU):
        super().__init__()
        steps = int(math.log2(total_stride) // math.log2(stride))
        if stride ** steps != total_stride:
            raise ValueError("total_stride must be a power of stride")
        self.encoder = nn.Sequential()
        channels = 1
        for _ in range(steps):
            wider = channels * stride ** 2
            self.encoder.append(nn.Conv2d(channels, wider, kernel_size=kernel_size,
                                          stride=stride, padding=padding))
            self.encoder.append(LayerNorm2d(wider))
            self.encoder.append(activation())
            channels = wider
        self.encoder.append(nn.Conv2d(channels, embed_dim, kernel_size=1))

    def forward(self, x):
        last = len(self.encoder) - 1
        for i, module in enumerate(self.encoder):
            if isinstance(module, LayerNorm2d):
                x = _channel_layer_norm(x, module)
            elif i == last and isinstance(module, nn.Conv2d):
                x = _pointwise(module, x)
            else:
                x = module(x)
        return x


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, pointwise MLP (as linears), layer scale,
    residual. ``drop_path`` is the stochastic-depth rate, active only in training."""

    def __init__(self, dim, kernel_size=7, padding=3, drop_path=0.0, layer_scale_init_value=1e-6,
                 use_dwconv=True):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding,
                                groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma = None
        self.drop_path = drop_path

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels-last for norm and linears
        y = F.layer_norm(y, (y.shape[-1],), self.norm.weight, self.norm.bias, self.norm.eps)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma
        y = y.permute(0, 3, 1, 2)
        if self.training and self.drop_path > 0.0:
            keep = 1.0 - self.drop_path
            mask = y.new_empty((y.shape[0], 1, 1, 1)).bernoulli_(keep)
            y = y * mask / keep
        return x + y


class Fuser(nn.Module):
    """Optional 1x1 input projection followed by ``num_layers`` copies of ``layer``."""

    def __init__(self, layer, num_layers, dim=None, input_projection=False):
        super().__init__()
        self.proj = nn.Identity()
        if input_projection:
            if dim is None:
                raise ValueError("input_projection needs dim")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, x):
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Fuses a frame's features with its (downsampled) mask into a spatial memory.

    ``forward(pix_feat (B, in_dim, H, W), masks (B, 1, 16H, 16W) logits or probabilities)``
    returns ``{"vision_features": (B, out_dim, H, W), "vision_pos_enc": [(B, out_dim, H, W)]}``.
    """

    def __init__(self, out_dim, mask_downsampler, fuser, position_encoding, in_dim=256):
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj = nn.Identity()
        if out_dim != in_dim:
            self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat, masks, skip_mask_sigmoid=False):
        if not skip_mask_sigmoid:
            # probabilities rather than logits: closer to the binary masks seen in training
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = _pointwise(self.pix_feat_proj, pix_feat.to(masks.device)) + masks
        x = self.fuser(x)
        x = _pointwise(self.out_proj, x) if isinstance(self.out_proj, nn.Conv2d) else x
        x = x.contiguous()  # callers may .view() it, as they could the reference's
        pos = self.position_encoding(x).to(x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}
