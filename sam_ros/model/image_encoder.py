"""SAM 2 image encoder: the hierarchical Hiera trunk, the FPN neck and the wrapper joining them.

Module and parameter names follow Meta's checkpoints (``trunk.blocks.N.attn.qkv`` ...), so an
official ``image_encoder`` state dict loads strictly. The computation is arranged for speed:

* tokens stay channels-last (B, H, W, C) for the whole trunk, so every linear layer sees a
  contiguous input;
* windowed attention costs one copy (into window order); the way back is folded into the
  residual addition, which reads the window-ordered result through a strided view;
* query pooling takes the maximum of strided slices instead of a (copying) max-pool call;
* the interpolated positional embedding is cached per input size in eval mode.
"""

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP

try:  # oneDNN linear layers with fused bias / GELU / residual addition (x86 builds)
    _dnn_linear = torch.ops.mkldnn._linear_pointwise
    _dnn_linear_add = torch.ops.mkldnn._linear_pointwise.binary
except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
    _dnn_linear = _dnn_linear_add = None

# Set to False to run float32 CPU inference through the plain nn.Linear path.
FUSED_CPU_KERNELS = True
# On CPU, single-head windows of at most this many tokens attend through two batched
# matmuls, which beats the flash kernel's per-window overhead at such sizes. (With several
# heads the strided head split would force copies, so those keep the flash kernel.)
SMALL_WINDOW_TOKENS = 64


def use_fused(x: torch.Tensor) -> bool:
    """Whether oneDNN's fused linear kernels may stand in for nn.Linear: float32 CPU
    inference only, as they have no autograd formula, autocast does not see them and
    torch.compile cannot lower them (it fuses the plain ops itself)."""
    return (FUSED_CPU_KERNELS and _dnn_linear is not None and x.device.type == "cpu"
            and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def apply_linear(layer: nn.Linear, x: torch.Tensor, fused: bool) -> torch.Tensor:
    """``layer(x)``, through oneDNN (bias added in the GEMM epilogue) when ``fused``."""
    if fused:
        return _dnn_linear(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def fused_gelu_mlp_residual(x: torch.Tensor, hidden_in: torch.Tensor, fc1: nn.Linear,
                            fc2: nn.Linear) -> torch.Tensor:
    """``x + fc2(gelu(fc1(hidden_in)))`` in two oneDNN kernels: fc1 + bias + GELU, then
    fc2 + bias + the residual. Only where ``use_fused`` allows."""
    hidden = _dnn_linear(hidden_in, fc1.weight, fc1.bias, "gelu", [], "none")
    return _dnn_linear_add(hidden, x.contiguous(), fc2.weight, fc2.bias, "add")


# --------------------------------------------------------------------------------------------
# helpers on channels-last token grids
# --------------------------------------------------------------------------------------------

def strided_max_pool(x: torch.Tensor, stride: Tuple[int, int]) -> torch.Tensor:
    """Non-overlapping max pooling of a (N, H, W, C) grid, kernel == stride, floor mode.

    Taking the maximum of the strided sub-grids reads the (possibly strided) input once
    and never forces it contiguous, which a max_pool2d call on a permuted view would do.
    """
    sh, sw = stride
    out_h, out_w = x.shape[1] // sh, x.shape[2] // sw
    pooled = None
    for i in range(sh):
        for j in range(sw):
            part = x[:, i:i + out_h * sh:sh, j:j + out_w * sw:sw]
            pooled = part if pooled is None else torch.maximum(pooled, part)
    return pooled


def to_windows(x: torch.Tensor, size: int) -> Tuple[torch.Tensor, int, int]:
    """(B, H, W, C) -> (B * nh * nw, size, size, C), zero-padding H and W up to multiples
    of ``size``. Returns the windows and the window counts (nh, nw)."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % size, -w % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // size, (w + pad_w) // size
    grid = x.view(b, nh, size, nw, size, c).transpose(2, 3)
    return grid.reshape(b * nh * nw, size, size, c), nh, nw


def add_residual(base: torch.Tensor, delta: torch.Tensor,
                 keep: Optional[torch.Tensor]) -> torch.Tensor:
    """``base + delta`` or, with a per-sample drop-path factor, ``base + delta * keep`` as a
    single fused kernel. ``base`` comes first so that the result takes its memory layout."""
    if keep is None:
        return base + delta
    return torch.addcmul(base, delta, keep.view((-1,) + (1,) * (delta.dim() - 1)))


def add_from_windows(base: torch.Tensor, windows: torch.Tensor, nh: int, nw: int,
                     keep: Optional[torch.Tensor]) -> torch.Tensor:
    """``base`` (B, H, W, C) plus the window-ordered ``windows`` (B * nh * nw, h, w, C)
    put back on the grid and cropped to H x W.

    Without cropping, the grid is only a permuted view of the windows, so the addition
    itself does the reordering and no separate un-windowing copy is made.
    """
    b, h, w, c = base.shape
    wh, ww = windows.shape[1:3]
    grid = windows.view(b, nh, nw, wh, ww, c).transpose(2, 3)  # (B, nh, wh, nw, ww, C)
    if nh * wh == h and nw * ww == w:
        out = add_residual(base.reshape(b, nh, wh, nw, ww, c), grid, keep)
        return out.reshape(b, h, w, c)
    grid = grid.reshape(b, nh * wh, nw * ww, c)[:, :h, :w]
    return add_residual(base, grid, keep)


def drop_path_factors(x: torch.Tensor, prob: float, training: bool) -> Optional[torch.Tensor]:
    """Per-sample stochastic-depth factors (0 or 1 / keep_prob), or None when inactive."""
    if not training or prob <= 0.0:
        return None
    keep_prob = 1.0 - prob
    factors = x.new_empty(x.shape[0]).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        factors.div_(keep_prob)
    return factors


# --------------------------------------------------------------------------------------------
# Hiera
# --------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Strided convolution from pixels to a channels-last token grid."""

    def __init__(self, kernel_size=(7, 7), stride=(4, 4), padding=(3, 3), in_chans=3,
                 embed_dim=768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride,
                              padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A permuted view; the positional-embedding addition makes it contiguous.
        return self.proj(x).permute(0, 2, 3, 1)


class HieraAttention(nn.Module):
    """Multi-head self-attention over a (N, H, W, C) grid whose queries may be max-pooled,
    which halves the resolution at a stage transition while keys/values keep it."""

    def __init__(self, dim: int, dim_out: int, num_heads: int,
                 q_stride: Optional[Tuple[int, int]] = None):
        super().__init__()
        if dim_out % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim_out={dim_out}")
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_stride = tuple(q_stride) if q_stride else None
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        heads, width = self.num_heads, self.dim_out
        fused = use_fused(x)
        # Three strided (N, H, W, C) views of one projection.
        q, k, v = apply_linear(self.qkv, x, fused).split(width, dim=-1)
        if self.q_stride is not None:
            q = strided_max_pool(q, self.q_stride)
        qh, qw = q.shape[1:3]
        # (N, L, heads, hd) -> (N, heads, L, hd): views; SDPA accepts these strides.
        q = q.reshape(n, qh * qw, heads, -1).transpose(1, 2)
        k = k.reshape(n, h * w, heads, -1).transpose(1, 2)
        v = v.reshape(n, h * w, heads, -1).transpose(1, 2)
        if (heads == 1 and h * w <= SMALL_WINDOW_TOKENS and q.device.type == "cpu"
                and q.dtype == torch.float32):
            scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
            out = torch.matmul(scores.softmax(dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return apply_linear(self.proj, out.transpose(1, 2).reshape(n, qh, qw, width), fused)


class HieraBlock(nn.Module):
    """Pre-norm transformer block with optional windowing and query pooling.

    When the width changes, the shortcut is a linear projection of the normalised input
    (pooled like the queries when the resolution halves).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, q_stride: Optional[Tuple[int, int]] = None,
                 window_size: int = 0):
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = tuple(q_stride) if q_stride else None
        self.drop_path_prob = float(drop_path)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = HieraAttention(dim, dim_out, num_heads, q_stride=self.q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2,
                       activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        shortcut = x
        if self.dim != self.dim_out:
            shortcut = apply_linear(self.proj, normed, use_fused(normed))
            if self.q_stride is not None:
                shortcut = strided_max_pool(shortcut, self.q_stride)

        keep = drop_path_factors(x, self.drop_path_prob, self.training)
        if self.window_size > 0:
            windows, nh, nw = to_windows(normed, self.window_size)
            x = add_from_windows(shortcut, self.attn(windows), nh, nw, keep)
        else:
            x = add_residual(shortcut, self.attn(normed), keep)

        keep = drop_path_factors(x, self.drop_path_prob, self.training)
        if keep is None and use_fused(x):
            return fused_gelu_mlp_residual(x, self.norm2(x), *self.mlp.layers)
        return add_residual(x, self.mlp(self.norm2(x)), keep)


class Hiera(nn.Module):
    """Hierarchical vision transformer (Hiera, arXiv:2306.00989) as used by SAM 2.

    Each stage after the first multiplies the width by ``dim_mul`` and heads by ``head_mul``
    and, for the first ``q_pool`` transitions, halves the resolution by pooling queries.
    Attention is windowed (``window_spec`` per stage) except in ``global_att_blocks``.
    The first block of a stage still uses the previous stage's window size.
    forward returns the (B, C, H, W) output of every stage end, highest resolution first
    (only the last one if ``return_interm_layers`` is False).
    """

    def __init__(self, embed_dim: int = 96, num_heads: int = 1, drop_path_rate: float = 0.0,
                 q_pool: int = 3, q_stride: Tuple[int, int] = (2, 2),
                 stages: Tuple[int, ...] = (2, 3, 16, 3), dim_mul: float = 2.0,
                 head_mul: float = 2.0,
                 window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14),
                 window_spec: Tuple[int, ...] = (8, 4, 14, 7),
                 global_att_blocks: Optional[Tuple[int, ...]] = (12, 16, 20),
                 return_interm_layers: bool = True):
        super().__init__()
        stages, window_spec = tuple(stages), tuple(window_spec)
        if len(stages) != len(window_spec):
            raise ValueError("stages and window_spec need one entry per stage")
        ends, total = [], 0
        for count in stages:
            total += count
            ends.append(total - 1)
        if not 0 <= q_pool <= len(ends) - 1:
            raise ValueError(f"q_pool={q_pool} must lie in [0, {len(ends) - 1}]")

        self.window_spec = window_spec
        self.q_stride = tuple(q_stride)
        self.stage_ends = ends
        self.q_pool_blocks = [end + 1 for end in ends[:-1]][:q_pool]
        self.global_att_blocks = tuple(global_att_blocks) if global_att_blocks else ()
        self.return_interm_layers = return_interm_layers
        self.window_pos_embed_bkg_spatial_size = tuple(window_pos_embed_bkg_spatial_size)

        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, embed_dim, *self.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        depth = total
        rates = torch.linspace(0, drop_path_rate, depth).tolist() if depth else []
        self.blocks = nn.ModuleList()
        stage, dim, heads = 0, embed_dim, num_heads
        for i in range(depth):
            window = 0 if i in self.global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in ends:  # first block of a new stage
                dim_out, heads, stage = int(dim * dim_mul), int(heads * head_mul), stage + 1
            self.blocks.append(HieraBlock(
                dim, dim_out, heads, drop_path=rates[i], window_size=window,
                q_stride=self.q_stride if i in self.q_pool_blocks else None))
            dim = dim_out

        returned = ends if return_interm_layers else ends[-1:]
        self._returned = set(returned)
        self.channel_list = [self.blocks[i].dim_out for i in reversed(returned)]
        self._pos_cache = {}

    def _build_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Background embedding resized to (h, w) plus the window embedding tiled over it,
        as a contiguous (1, h, w, C) grid."""
        window = self.pos_embed_window
        c, wh, ww = window.shape[1:]
        if h % wh or w % ww:
            raise ValueError(f"token grid {h}x{w} is not a multiple of the window "
                             f"embedding {wh}x{ww}; use an image size divisible by "
                             f"{4 * wh}")
        grid = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        grid = grid.view(1, c, h // wh, wh, w // ww, ww) + window.view(1, c, 1, wh, 1, ww)
        return grid.view(1, c, h, w).permute(0, 2, 3, 1).contiguous()

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The positional grid, cached per size in eval mode. The key includes the
        parameters' versions and storage, so in-place updates or reloads invalidate it;
        the cache is bypassed whenever gradients must reach the parameters."""
        params = (self.pos_embed, self.pos_embed_window)
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if self.training or needs_grad:
            return self._build_pos_embed(h, w)
        key = (h, w, self.pos_embed.device, self.pos_embed.dtype)
        # Parameters made under inference mode carry no version counter.
        stamp = tuple((-1 if p.is_inference() else p._version, p.data_ptr()) for p in params)
        hit = self._pos_cache.get(key)
        if (hit is None or hit[0] != stamp
                or (hit[1].is_inference() and not torch.is_inference_mode_enabled())):
            with torch.no_grad():
                hit = (stamp, self._build_pos_embed(h, w))
            self._pos_cache[key] = hit
        return hit[1]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.patch_embed(x)
        # Embedding first: the sum then takes its contiguous channels-last layout.
        x = self._pos_embed(x.shape[1], x.shape[2]) + x
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._returned:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


# --------------------------------------------------------------------------------------------
# neck and wrapper
# --------------------------------------------------------------------------------------------

class FpnNeck(nn.Module):
    """Feature pyramid without output convolutions: 1x1 lateral projections to ``d_model``
    and, on ``fpn_top_down_levels`` only, the upsampled coarser level added on top.

    forward takes the trunk's features (highest resolution first) and returns the fused
    features and their positional encodings, both in the same order.
    """

    def __init__(self, position_encoding: nn.Module, d_model: int,
                 backbone_channel_list: Sequence[int], kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, fpn_interp_model: str = "bilinear", fuse_type: str = "sum",
                 fpn_top_down_levels: Optional[Sequence[int]] = None):
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', not {fuse_type!r}")
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = backbone_channel_list
        # convs[j] projects backbone_channel_list[j], i.e. the coarsest level first.
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(
                channels, d_model, kernel_size=kernel_size, stride=stride, padding=padding)))
            for channels in backbone_channel_list)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        levels = range(len(self.convs)) if fpn_top_down_levels is None else fpn_top_down_levels
        self.fpn_top_down_levels = list(levels)

    def forward(self, xs: List[torch.Tensor]):
        count = len(self.convs)
        if len(xs) != count:
            raise ValueError(f"expected {count} feature maps, got {len(xs)}")
        feats, pos = [None] * count, [None] * count
        align = None if self.fpn_interp_model == "nearest" else False
        coarser = None
        for level in reversed(range(count)):
            fused = self.convs[count - 1 - level](xs[level])
            if coarser is not None and level in self.fpn_top_down_levels:
                upsampled = F.interpolate(coarser.float(), scale_factor=2.0,
                                          mode=self.fpn_interp_model, align_corners=align,
                                          antialias=False)
                fused = fused + upsampled
                if self.fuse_type == "avg":
                    fused = fused * 0.5
            feats[level] = coarser = fused
            pos[level] = self.position_encoding(fused).to(fused.dtype)
        return feats, pos


class ImageEncoder(nn.Module):
    """Trunk + neck. ``scalp`` drops that many of the coarsest levels from the outputs.

    forward(sample: (B, 3, H, W)) returns ``vision_features`` (the coarsest kept level),
    ``vision_pos_enc`` and ``backbone_fpn`` (lists, highest resolution first).
    """

    def __init__(self, trunk: nn.Module, neck: nn.Module, scalp: int = 0):
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(f"trunk channels {list(trunk.channel_list)} do not match the "
                             f"neck's {list(neck.backbone_channel_list)}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, sample: torch.Tensor) -> dict:
        feats, pos = self.neck(self.trunk(sample))
        if self.scalp > 0:
            feats, pos = feats[:-self.scalp], pos[:-self.scalp]
        return {"vision_features": feats[-1], "vision_pos_enc": pos, "backbone_fpn": feats}
