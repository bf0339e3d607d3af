"""MobileSAM's image encoder: TinyViT (arXiv:2207.10666) distilled from SAM's ViT-H, with
SAM's neck on top.

A stride-4 convolutional stem, a stage of inverted-residual convolutions, then three stages
of windowed attention (a learned bias per head and window offset, no other positions) each
followed by a depthwise convolution and an MLP. Patch merging between stages changes the
width and, except before the last stage, halves the resolution, so the neck sees the same
1/16 grid as SAM's. Module and parameter names are those of MobileSAM's checkpoint
(``layers.N.blocks.M.attn.attention_biases`` ...), including TinyViT's unused classifier
head, so ``mobile_sam.pt`` loads strictly. Attention stages keep tokens channels-last
(B, H, W, C) and share the Hiera encoder's windowing helpers and fused kernels.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .configs import TinyVitConfig
from .image_encoder import (
    add_from_windows,
    apply_linear,
    fused_gelu_mlp_residual,
    to_windows,
    use_fused,
)


class ConvBN(nn.Module):
    """A bias-free convolution followed by batch normalisation."""

    def __init__(self, in_chans, out_chans, kernel_size=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups,
                           bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x):
        return self.bn(self.c(x))


class ConvStem(nn.Module):
    """Two stride-2 3 x 3 convolutions: pixels to a 1/4-resolution NCHW feature map."""

    def __init__(self, in_chans, embed_dim):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, embed_dim // 2, 3, 2, 1), nn.GELU(),
                                 ConvBN(embed_dim // 2, embed_dim, 3, 2, 1))

    def forward(self, x):
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual on NCHW maps: 1 x 1 expansion, 3 x 3 depthwise, 1 x 1 projection,
    and a GELU after the residual sum."""

    def __init__(self, dim, expand_ratio):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x):
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class PatchMerging(nn.Module):
    """NCHW -> NCHW at the next stage's width: 1 x 1, strided 3 x 3 depthwise, 1 x 1."""

    def __init__(self, dim, out_dim, stride):
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x):
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


def window_offset_index(window):
    """(N, N) index of each pair of a window's N = window^2 positions into a table of
    offsets, ``|dy| * window + |dx|`` (TinyViT's numbering: offsets in order of first
    appearance, scanning pairs row-major from the first position)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class WindowAttention(nn.Module):
    """Multi-head self-attention over (B, N, C) window tokens, with its own input LayerNorm
    and a learned score bias per head and per offset between two positions."""

    def __init__(self, dim, num_heads, window):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", window_offset_index(window),
                             persistent=False)

    def forward(self, x):
        b, n, c = x.shape
        fused = use_fused(x)
        # Each head's slice of the projection is laid out [q | k | v].
        qkv = apply_linear(self.qkv, self.norm(x), fused).view(b, n, self.num_heads, -1)
        q, k, v = (t.transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return apply_linear(self.proj, out.transpose(1, 2).reshape(b, n, c), fused)


class TinyVitMlp(nn.Module):
    """LayerNorm, then two linear layers with a GELU between them."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyVitBlock(nn.Module):
    """Windowed attention (residual), a depthwise convolution, an MLP (residual), over a
    channels-last (B, H, W, C) grid. The grid is zero-padded to whole windows *before* the
    attention's LayerNorm, so padding tokens take part as keys, as in TinyViT."""

    def __init__(self, dim, num_heads, window, mlp_ratio, local_conv_size):
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = TinyVitMlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2,
                                 groups=dim)

    def forward(self, x):
        windows, nh, nw = to_windows(x, self.window)
        attended = self.attn(windows.flatten(1, 2)).view(windows.shape)
        x = add_from_windows(x, attended, nh, nw, None)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if use_fused(x):
            return fused_gelu_mlp_residual(x, self.mlp.norm(x), self.mlp.fc1, self.mlp.fc2)
        return x + self.mlp(x)


class TinyVitStage(nn.Module):
    """A stage's blocks and the patch merging that leads to the next stage (if any)."""

    def __init__(self, blocks, downsample=None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class TinyViT(nn.Module):
    """Stem, stages, neck. forward((B, 3, S, S) normalised images) returns the
    (B, out_chans, S/16, S/16) embedding."""

    def __init__(self, config: TinyVitConfig, image_size: int, out_chans: int):
        super().__init__()
        c = config
        dims = c.embed_dims
        if not len(dims) == len(c.depths) == len(c.num_heads) == len(c.window_sizes) \
                == len(c.merge_strides) + 1 >= 2:
            raise ValueError("TinyViT needs two stages or more, with one width, depth, head "
                             "count and window size per stage and one merge stride between "
                             "stages")
        self.img_size = image_size
        self.patch_embed = ConvStem(3, dims[0])
        self.layers = nn.ModuleList()
        for i, depth in enumerate(c.depths):
            merge = None
            if i + 1 < len(dims):
                merge = PatchMerging(dims[i], dims[i + 1], c.merge_strides[i])
            if i == 0:
                blocks = [MBConv(dims[0], c.mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [TinyVitBlock(dims[i], c.num_heads[i], c.window_sizes[i], c.mlp_ratio,
                                       c.local_conv_size) for _ in range(depth)]
            self.layers.append(TinyVitStage(blocks, merge))
        # TinyViT's ImageNet classifier: carried by the checkpoint, never run by SAM.
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], c.num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x):
        x = self.patch_embed(x)
        convolutional, *attentional = self.layers
        for block in convolutional.blocks:
            x = block(x)
        x = convolutional.downsample(x).permute(0, 2, 3, 1)
        for stage in attentional:
            for block in stage.blocks:
                x = block(x)
            if stage.downsample is not None:
                x = stage.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.neck(x.permute(0, 3, 1, 2))
