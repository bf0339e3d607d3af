"""Building blocks shared by several SAM 2 modules.

Parameter names mirror Meta's checkpoints (``layers.N``, ``q_proj`` ...), so that official
state dicts load strictly into the modules built from these blocks.
"""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """A stack of linear layers with an activation between them (none after the last)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers, activation=nn.ReLU,
                 sigmoid_output=False):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x):
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them, named as in SAM (2023)'s
    checkpoints (``lin1``, ``lin2``; SAM 2 names the same thing ``MLP.layers``)."""

    def __init__(self, embedding_dim, mlp_dim, activation=nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation()

    def forward(self, x):
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor."""

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class Attention(nn.Module):
    """Multi-head attention whose inner width may be reduced by ``downsample_rate``.

    Keys and values may come from a different width (``kv_in_dim``), as in the
    memory cross-attention where memories are narrower than image tokens.
    """

    def __init__(self, embedding_dim, num_heads, downsample_rate=1, dropout=0.0, kv_in_dim=None):
        super().__init__()
        kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide {self.internal_dim}")
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def split_heads(self, x):
        """(B, N, C) -> (B, heads, N, C / heads)."""
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attend(self, q, k, v):
        """Attention over head-split tensors, then the output projection."""
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))

    def forward(self, q, k, v):
        q = self.split_heads(self.q_proj(q))
        k = self.split_heads(self.k_proj(k))
        v = self.split_heads(self.v_proj(v))
        return self.attend(q, k, v)


def sine_frequencies(num_feats, temperature, device):
    """Wavelengths of the sine/cosine encoding: pairs of channels share one frequency."""
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_feats)


def interleave_sin_cos(angles):
    """Even channels take sin, odd channels cos, of the same angle table (last axis)."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """DETR-style 2-D sine encoding of a feature map's grid, normalised to [0, 2*pi].

    The encoding depends only on the map's size, so it is computed once per size and cached.
    """

    def __init__(self, num_pos_feats, temperature=10000, normalize=True, scale=None):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache = {}

    def grid(self, height, width, device):
        """The (C, H, W) encoding of an H x W grid."""
        key = (height, width, str(device))
        if key not in self._cache:
            y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
            if self.normalize:
                eps = 1e-6
                y = y / (y[-1:] + eps) * self.scale
                x = x / (x[-1:] + eps) * self.scale
            freqs = sine_frequencies(self.num_pos_feats, self.temperature, device)
            pos_y = interleave_sin_cos(y[:, None] / freqs)  # (H, C/2)
            pos_x = interleave_sin_cos(x[:, None] / freqs)  # (W, C/2)
            pos = torch.cat((pos_y[:, None, :].expand(height, width, -1),
                             pos_x[None, :, :].expand(height, width, -1)), dim=-1)
            self._cache[key] = pos.permute(2, 0, 1).contiguous()
        return self._cache[key]

    @torch.no_grad()
    def forward(self, x):
        pos = self.grid(x.shape[-2], x.shape[-1], x.device)
        return pos.unsqueeze(0).expand(x.shape[0], -1, -1, -1).to(x.dtype)


PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast(device, precision):
    """The autocast context for a precision name ("float32" runs without autocast).

    bfloat16 is the fast path on CPUs with AMX and on GPUs; weights stay float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
