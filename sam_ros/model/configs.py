"""The official SAM 2 / SAM 2.1 variants, our small bundled one, and SAM (2023) with its
ViT-B/L/H encoders and MobileSAM's TinyViT, as plain Python data.

SAM 2 names follow Meta's config files (``sam2.1_hiera_t`` ...); SAM's are ``sam_vit_b``,
``sam_vit_l``, ``sam_vit_h`` and ``mobile_sam``. A config fully determines the module tree,
hence the state-dict keys and shapes, so a checkpoint of a variant loads strictly into the
model built from that variant's config.
"""

import dataclasses
from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class TrunkConfig:
    """Hiera trunk: width, heads, blocks per stage, where attention is global."""

    embed_dim: int
    num_heads: int
    stages: Tuple[int, ...]
    global_att_blocks: Tuple[int, ...]
    window_spec: Tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14)

    @property
    def channel_list(self):
        """Output widths of the four stages, deepest first (what the FPN neck consumes)."""
        return tuple(self.embed_dim * 2 ** i for i in reversed(range(len(self.stages))))


@dataclass(frozen=True)
class Sam2Config:
    """Everything that shapes a SAM 2 model. Defaults are the official values."""

    name: str
    trunk: TrunkConfig
    # SAM 2.1 additions: a learned "no object" memory embedding and signed, projected
    # temporal encodings of object pointers.
    sam2_1: bool = True
    image_size: int = 1024
    backbone_stride: int = 16
    d_model: int = 256  # neck, prompt encoder, decoder and memory-attention width
    mem_dim: int = 64  # memory encoder output width
    fpn_top_down_levels: Tuple[int, ...] = (2, 3)
    scalp: int = 1
    # memory attention
    memory_attention_layers: int = 4
    memory_attention_heads: int = 1
    memory_attention_ffn: int = 2048
    rope_theta: float = 10000.0
    # memory encoder
    fuser_layers: int = 2
    # SAM heads
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # tracking behaviour (SAM2Base options of the official configs)
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1

    @property
    def embedding_size(self):
        """Side of the lowest-resolution feature map (64 at 1024)."""
        return self.image_size // self.backbone_stride

    def replace(self, **changes):
        """A copy with some fields changed (e.g. ``image_size=512``)."""
        return dataclasses.replace(self, **changes)


TRUNKS = {
    "t": TrunkConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
    "s": TrunkConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
    "b+": TrunkConfig(112, 2, (2, 3, 16, 3), (12, 16, 20)),
    "l": TrunkConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8),
                     window_pos_embed_bkg_spatial_size=(7, 7)),
}

VARIANTS = {
    f"{family}_hiera_{size}": Sam2Config(
        name=f"{family}_hiera_{size}", trunk=trunk, sam2_1=(family == "sam2.1"))
    for family in ("sam2.1", "sam2")
    for size, trunk in TRUNKS.items()
}

# The small SAM 2 that sam_ros trains on generated video and bundles as its default model
# (same modules, narrower and shallower, 256-pixel input). See sam_ros/model/weights/.
# One mask per prompt, never three candidates: its generated scenes hold no part/whole
# ambiguity to choose from, so the single-mask token gets all of the mask loss, and a
# model this small ranked its candidates badly (the model card has the figures).
MINI = Sam2Config(
    name="sam_ros_mini",
    trunk=TrunkConfig(32, 1, (1, 1, 2, 1), (3,), window_spec=(8, 4, 16, 8),
                      window_pos_embed_bkg_spatial_size=(7, 7)),
    image_size=256, d_model=64, mem_dim=16, memory_attention_layers=2,
    memory_attention_ffn=256, decoder_heads=4, decoder_mlp_dim=256, mask_in_chans=8,
    multimask_output_in_sam=False, multimask_output_for_tracking=False,
    dynamic_multimask_via_stability=False)
VARIANTS[MINI.name] = MINI




# ------------------------------------------------------------------------- SAM (2023)

@dataclass(frozen=True)
class VitConfig:
    """SAM's plain ViT encoder: windowed attention everywhere except ``global_attn_indexes``,
    decomposed relative positions in every block, an absolute position embedding."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class TinyVitConfig:
    """MobileSAM's TinyViT encoder: a convolutional stage, then three windowed-attention
    stages. ``merge_strides`` are the patch-merging strides between stages (MobileSAM keeps
    the last stage at 1/16 of the image: the neck then sees the same grid as SAM's)."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    # TinyViT's ImageNet classifier head: unused by SAM, but the checkpoint carries it.
    num_classes: int = 1000


@dataclass(frozen=True)
class SamConfig:
    """Everything that shapes a SAM (2023) model: an image encoder and SAM's prompt encoder
    and mask decoder (no high-resolution features, no object-score head, IoU as raw
    regression). Only image prompts: SAM has no memory."""

    name: str
    encoder: VitConfig | TinyVitConfig
    image_size: int = 1024
    d_model: int = 256  # neck, prompt encoder and decoder width
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    # SAM's predictor returns three candidate masks unless told otherwise.
    multimask_output: bool = True

    @property
    def embedding_size(self):
        """Side of the image embedding (64 at 1024; both encoders have stride 16)."""
        return self.image_size // 16

    def replace(self, **changes):
        """A copy with some fields changed. Note that SAM's position embeddings are sized
        for ``image_size``: a checkpoint only fits the size it was trained at."""
        return dataclasses.replace(self, **changes)


SAM_ENCODERS = {
    "sam_vit_b": VitConfig(768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": VitConfig(1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": VitConfig(1280, 32, 16, (7, 15, 23, 31)),
    "mobile_sam": TinyVitConfig(),
}
VARIANTS.update({name: SamConfig(name=name, encoder=encoder)
                 for name, encoder in SAM_ENCODERS.items()})


def get_config(variant, **overrides):
    """The config of a named variant (any family), with optional field overrides."""
    if isinstance(variant, (Sam2Config, SamConfig)):
        config = variant
    else:
        try:
            config = VARIANTS[variant]
        except KeyError:
            raise ValueError(
                f"unknown SAM 2 variant (or SAM / MobileSAM variant) {variant!r}; known: "
                f"{', '.join(VARIANTS)}") from None
    return config.replace(**overrides) if overrides else config
