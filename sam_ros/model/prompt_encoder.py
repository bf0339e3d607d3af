"""SAM's prompt encoder: clicks and boxes become sparse tokens, a mask prompt a dense map.

Points are encoded by random Fourier features of their normalised position plus a learned
embedding per label; the image grid uses the same features (``get_dense_pe``), so the
decoder can compare click tokens with image locations.
"""

import math

import torch
from torch import nn

from .common import LayerNorm2d


def _at_least_float32(t):
    return t.to(torch.promote_types(t.dtype, torch.float32))


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of 2-D positions: ``[sin(2 pi p G), cos(2 pi p G)]``.

    ``G`` is a fixed 2 x F Gaussian matrix (a buffer, so checkpoints carry it); positions
    are mapped from [0, 1] to [-1, 1] first. The angles are computed in float32 at least,
    also under autocast: at 2 pi times a Gaussian, bfloat16 angles would be off by a
    sizeable fraction of a period.
    """

    def __init__(self, num_pos_feats=64, scale=None):
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix",
                             scale * torch.randn((2, num_pos_feats)))
        self._grid_cache = None

    def encode(self, unit_coords):
        """(..., 2) x/y positions in [0, 1] -> (..., 2F) features in the buffer's dtype."""
        gauss = _at_least_float32(self.positional_encoding_gaussian_matrix)
        xy = 2 * unit_coords.to(gauss.dtype) - 1
        # A two-term product written out: elementwise ops are exempt from autocast, so the
        # angles stay float32 on every device without switching autocast off.
        angles = xy[..., :1] * gauss[0] + xy[..., 1:] * gauss[1]
        angles = 2 * math.pi * angles
        feats = torch.cat((angles.sin(), angles.cos()), dim=-1)
        # A model cast to bfloat16 as a whole gets features of its own dtype.
        return feats.to(self.positional_encoding_gaussian_matrix.dtype)

    def forward(self, size):
        """Features of the pixel centres of an H x W grid, as (2F, H, W).

        The grid depends only on its size and the buffer, so it is cached; the cache is
        keyed on the buffer object and its version counter (``load_state_dict``, ``.to``
        and in-place edits all change one of them) and on inference mode, because a tensor
        made under ``torch.inference_mode`` may not take part in autograd later.
        """
        h, w = int(size[0]), int(size[1])
        gauss = self.positional_encoding_gaussian_matrix
        # An inference tensor has no version counter (and may change in place unseen):
        # no caching for a buffer created under inference mode.
        key = None if gauss.is_inference() else (
            h, w, gauss._version, torch.is_inference_mode_enabled())
        cached = self._grid_cache
        if key is not None and cached is not None and cached[0] is gauss and cached[1] == key:
            return cached[2]
        ys = (torch.arange(h, device=gauss.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=gauss.device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2)
        grid = self.encode(xy).permute(2, 0, 1)
        self._grid_cache = None if key is None else (gauss, key, grid)
        return grid

    def forward_with_coords(self, coords, image_size):
        """(B, N, 2) x/y pixel coordinates in an image of ``image_size`` = (H, W) ->
        (B, N, 2F) features."""
        h, w = image_size
        coords = _at_least_float32(coords)
        unit = torch.stack((coords[..., 0] / w, coords[..., 1] / h), dim=-1)
        return self.encode(unit)


class PromptEncoder(nn.Module):
    """Embeds points, boxes and a low-resolution mask for the mask decoder.

    ``forward`` returns sparse tokens (B, N, C) and a dense map (B, C, h, w) at the size of
    the image embedding. Point labels: 1 positive, 0 negative, 2 / 3 box top-left /
    bottom-right corners, -1 padding ("not a point"); other labels keep the bare position
    features, as in the reference.
    """

    num_point_embeddings = 4

    def __init__(self, embed_dim, image_embedding_size, input_image_size, mask_in_chans,
                 activation=nn.GELU):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        # Mask prompts come at 4x the embedding's resolution; two stride-2 convolutions
        # bring them down, a 1x1 convolution lifts them to the embedding width.
        self.mask_input_size = (4 * self.image_embedding_size[0],
                                4 * self.image_embedding_size[1])
        hidden = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, hidden, kernel_size=2, stride=2),
            LayerNorm2d(hidden),
            activation(),
            nn.Conv2d(hidden, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self):
        """Position features of every image-embedding location, (1, C, h, w).

        The same (cached) tensor is returned on every call: do not modify it in place.
        """
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords, labels, pad):
        """(B, N, 2) pixel coordinates and (B, N) labels -> (B, N (+1 if ``pad``), C).

        Without a box the reference appends one padding point; its position never matters
        because padding tokens are replaced by ``not_a_point_embed``.
        """
        # Shift to pixel centres in float32: a bfloat16 coordinate cannot hold x.5 above 256.
        feats = self.pe_layer.forward_with_coords(_at_least_float32(coords) + 0.5,
                                                  self.input_image_size)
        # One gather of the label embeddings instead of a pass per label value.
        table = torch.cat([e.weight for e in self.point_embeddings], dim=0)
        labels = labels.to(feats.device)
        known = (labels >= 0) & (labels < self.num_point_embeddings)
        index = torch.where(known, labels, torch.zeros_like(labels)).long()
        label_embed = table[index] * known.unsqueeze(-1).to(table.dtype)
        tokens = torch.where((labels == -1).unsqueeze(-1), self.not_a_point_embed.weight,
                             feats + label_embed)
        if pad:
            padding = self.not_a_point_embed.weight.to(tokens.dtype)
            tokens = torch.cat((tokens, padding.expand(tokens.shape[0], 1, -1)), dim=1)
        return tokens

    def embed_boxes(self, boxes):
        """(B, 4) or (B, 1, 4) x0, y0, x1, y1 pixel boxes -> (B, 2, C) corner tokens."""
        corners = (_at_least_float32(boxes) + 0.5).reshape(-1, 2, 2)
        feats = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat((self.point_embeddings[2].weight,
                                  self.point_embeddings[3].weight), dim=0)
        return feats + corner_embed

    def embed_masks(self, masks):
        """(B, 1, 4h, 4w) mask logits -> (B, C, h, w)."""
        return self.mask_downscaling(masks)

    @staticmethod
    def _batch_size(points, boxes, masks):
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(self, points, boxes, masks):
        """Returns ``(sparse, dense)``: (B, N, C) tokens and a (B, C, h, w) map.

        With no mask, ``dense`` is the learned ``no_mask_embed`` broadcast (an expanded
        view with zero strides); the decoder uses that to keep one shared image copy.
        """
        bs = self._batch_size(points, boxes, masks)
        parts = []
        if points is not None:
            coords, labels = points
            parts.append(self.embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            parts.append(self.embed_boxes(boxes))
        if parts:
            sparse = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        else:
            weight = self.not_a_point_embed.weight
            sparse = weight.new_empty((bs, 0, self.embed_dim))

        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
