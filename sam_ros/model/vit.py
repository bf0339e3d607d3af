"""SAM (2023)'s image encoder: a plain ViT over 16 x 16 patches (ViTDet style) and a small
convolutional neck down to the prompt width.

Most blocks attend within 14 x 14 windows, a few over the whole grid; every block adds
decomposed relative positions to its attention scores, and the token grid starts with a
learned absolute position embedding. Module and parameter names are those of Meta's
checkpoints (``blocks.N.attn.rel_pos_h`` ...), so an official ``image_encoder`` state dict
loads strictly. Tokens stay channels-last (B, H, W, C) from the patch embedding to the neck;
the windowing helpers and fused kernels are the Hiera encoder's.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock
from .configs import VitConfig
from .image_encoder import (
    PatchEmbed,
    add_from_windows,
    apply_linear,
    fused_gelu_mlp_residual,
    to_windows,
    use_fused,
)


def relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """The (size, size, C) embeddings of every query/key offset along one axis: entry
    [i, j] is row ``i - j + size - 1`` of the (2 size - 1, C) learned table."""
    if table.shape[0] != 2 * size - 1:
        raise ValueError(f"relative position table of {table.shape[0]} rows is for a "
                         f"{(table.shape[0] + 1) // 2}-token axis, not {size}: the ViT "
                         f"encoder only takes the input size it was built for")
    offsets = torch.arange(size, device=table.device)
    return table[offsets[:, None] - offsets[None, :] + size - 1]


class RelPosAttention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with decomposed relative positions
    (MViTv2): the score of query (y, x) against key (y', x') gains q . Rh[y - y'] +
    q . Rw[x - x'], with q before scaling. ``grid_size`` sizes the two tables."""

    def __init__(self, dim: int, num_heads: int, grid_size):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_size[1] - 1, head_dim))

    def position_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The additive (B, heads, HW, HW) score bias for (B, heads, HW, head_dim) queries."""
        b, n, _, c = q.shape
        grid = q.reshape(b, n, h, w, c)
        along_h = torch.einsum("bnyxc,ykc->bnyxk", grid, relative_table(self.rel_pos_h, h))
        along_w = torch.einsum("bnyxc,xkc->bnyxk", grid, relative_table(self.rel_pos_w, w))
        # Contiguous terms make the (large) sum contiguous too, so it views as a matrix.
        bias = along_h.contiguous().unsqueeze(-1) + along_w.contiguous().unsqueeze(-2)
        return bias.view(b, n, h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        fused = use_fused(x)
        qkv = apply_linear(self.qkv, x, fused).view(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, HW, head_dim) views
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias(q, h, w))
        return apply_linear(self.proj, out.transpose(1, 2).reshape(b, h, w, c), fused)


class VitBlock(nn.Module):
    """Pre-norm transformer block; ``window_size`` 0 attends over the whole grid, otherwise
    within zero-padded windows of that side."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 grid_size: int):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        side = window_size if window_size > 0 else grid_size
        self.attn = RelPosAttention(dim, num_heads, (side, side))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        if self.window_size > 0:
            windows, nh, nw = to_windows(normed, self.window_size)
            x = add_from_windows(x, self.attn(windows), nh, nw, None)
        else:
            x = x + self.attn(normed)
        if use_fused(x):
            return fused_gelu_mlp_residual(x, self.norm2(x), self.mlp.lin1, self.mlp.lin2)
        return x + self.mlp(self.norm2(x))


class VitImageEncoder(nn.Module):
    """Patch embedding + absolute positions, ``depth`` ViT blocks, neck.

    forward((B, 3, S, S) normalised images) returns the (B, out_chans, S/16, S/16) embedding.
    """

    def __init__(self, config: VitConfig, image_size: int, out_chans: int):
        super().__init__()
        c = config
        grid = image_size // c.patch_size
        self.img_size = image_size
        self.patch_size = c.patch_size
        self.patch_embed = PatchEmbed(kernel_size=(c.patch_size,) * 2,
                                      stride=(c.patch_size,) * 2, padding=(0, 0),
                                      embed_dim=c.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, c.embed_dim))
        self.blocks = nn.ModuleList(
            VitBlock(c.embed_dim, c.num_heads, c.mlp_ratio,
                     0 if i in c.global_attn_indexes else c.window_size, grid)
            for i in range(c.depth))
        self.neck = nn.Sequential(
            nn.Conv2d(c.embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if x.shape[1:3] != self.pos_embed.shape[1:3]:
            p = self.patch_size
            raise ValueError(f"input of {x.shape[1] * p} x {x.shape[2] * p} pixels; this "
                             f"encoder takes {self.img_size} x {self.img_size}")
        # Embedding first: the sum then takes its contiguous channels-last layout.
        x = self.pos_embed + x
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
