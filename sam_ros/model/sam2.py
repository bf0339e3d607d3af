"""The SAM 2 network: its modules wired together, and the primitives that the image
predictor and the streaming tracker are built from.

Submodule and parameter names are those of Meta's ``SAM2Base``, so an official
checkpoint's state dict loads strictly. The primitives are stateless: what to remember
between frames is the tracker's business.
"""

from dataclasses import dataclass
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, PositionEmbeddingSine, sine_frequencies
from .configs import Sam2Config
from .image_encoder import FpnNeck, Hiera, ImageEncoder
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .memory import (
    CXBlock,
    Fuser,
    MaskDownSampler,
    MemoryAttention,
    MemoryAttentionLayer,
    MemoryEncoder,
    RoPEAttention,
)
from .prompt_encoder import PromptEncoder
from .transforms import SquareResize

# Logit written into the masks of an object judged absent (as in the reference).
NO_OBJECT_LOGIT = -1024.0
# Logit scale and bias that turn a binary mask prompt into mask logits.
MASK_PROMPT_SCALE, MASK_PROMPT_BIAS = 20.0, -10.0


@dataclass
class ImageFeatures:
    """One encoder pass over a batch of images. SAM (2023) has only ``embed``."""

    embed: torch.Tensor  # B x C x h x w, stride 16
    pos: torch.Tensor | None  # B x C x h x w, sine encoding of ``embed``'s grid
    high_res: List[torch.Tensor] | None  # [B x C/8 x 4h x 4w, B x C/4 x 2h x 2w], decoder-ready

    def float(self):
        """The same features in float32 (after a bfloat16 encoder pass), for the heads."""
        return ImageFeatures(self.embed.float(), None if self.pos is None else self.pos.float(),
                             None if self.high_res is None else [h.float() for h in self.high_res])


def decode_prompts(prompt_encoder, mask_decoder, features, points, boxes, mask_input,
                   multimask_output):
    """Mask logits (B x M x 4h x 4w) and IoU predictions (B x M) for B prompt sets on the
    one image of ``features``: the image-predictor path of both SAM families."""
    sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    low_res, ious, _, _ = mask_decoder(
        image_embeddings=features.embed, image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=multimask_output, repeat_image=sparse.shape[0] > 1,
        high_res_features=features.high_res)
    return low_res, ious


@dataclass
class MaskPrediction:
    """What the SAM heads say about a batch of prompts (one row per object)."""

    low_res_multimasks: torch.Tensor  # B x M x 4h x 4w logits
    high_res_multimasks: torch.Tensor  # B x M x S x S logits
    ious: torch.Tensor  # B x M
    low_res_masks: torch.Tensor  # B x 1 x 4h x 4w, the best of the M
    high_res_masks: torch.Tensor  # B x 1 x S x S
    obj_ptr: torch.Tensor  # B x C
    object_score_logits: torch.Tensor  # B x 1


class SAM2(nn.Module):
    """SAM 2 (image encoder, SAM heads, memory encoder, memory attention, object pointers)."""

    # What the image predictor and the tracker ask of a model (``sam.SAM`` answers too).
    # It can track objects through video; False after loading an image-only checkpoint
    # (transformers' Sam2Model), whose memory path holds no trained weights.
    has_memory = True
    # Low-resolution logits that the image predictor hands back for reuse as a mask prompt
    # are clamped like the reference's, so that they cannot saturate the prompt encoder.
    low_res_logit_limit = 32.0

    def __init__(self, config: Sam2Config):
        super().__init__()
        self.config = config
        c = config
        size = c.embedding_size
        self.image_size = c.image_size
        self.hidden_dim = c.d_model
        self.mem_dim = c.mem_dim
        self.num_maskmem = c.num_maskmem

        trunk = Hiera(
            embed_dim=c.trunk.embed_dim, num_heads=c.trunk.num_heads, stages=c.trunk.stages,
            global_att_blocks=c.trunk.global_att_blocks, window_spec=c.trunk.window_spec,
            window_pos_embed_bkg_spatial_size=c.trunk.window_pos_embed_bkg_spatial_size)
        neck = FpnNeck(
            position_encoding=PositionEmbeddingSine(c.d_model), d_model=c.d_model,
            backbone_channel_list=list(c.trunk.channel_list),
            fpn_top_down_levels=list(c.fpn_top_down_levels), fpn_interp_model="nearest")
        self.image_encoder = ImageEncoder(trunk=trunk, neck=neck, scalp=c.scalp)

        def rope_attention(**extra):
            return RoPEAttention(
                embedding_dim=c.d_model, num_heads=c.memory_attention_heads, downsample_rate=1,
                dropout=0.1, rope_theta=c.rope_theta, feat_sizes=(size, size), **extra)

        layer = MemoryAttentionLayer(
            activation="relu", d_model=c.d_model, dim_feedforward=c.memory_attention_ffn,
            dropout=0.1, pos_enc_at_attn=False, pos_enc_at_cross_attn_keys=True,
            pos_enc_at_cross_attn_queries=False, self_attention=rope_attention(),
            cross_attention=rope_attention(rope_k_repeat=True, kv_in_dim=c.mem_dim))
        self.memory_attention = MemoryAttention(
            d_model=c.d_model, pos_enc_at_input=True, layer=layer,
            num_layers=c.memory_attention_layers)
        self.memory_encoder = MemoryEncoder(
            out_dim=c.mem_dim,
            mask_downsampler=MaskDownSampler(embed_dim=c.d_model, kernel_size=3, stride=2,
                                             padding=1, total_stride=c.backbone_stride),
            fuser=Fuser(CXBlock(dim=c.d_model, kernel_size=7, padding=3,
                                layer_scale_init_value=1e-6, use_dwconv=True),
                        num_layers=c.fuser_layers),
            position_encoding=PositionEmbeddingSine(c.mem_dim), in_dim=c.d_model)

        # Memory and object-pointer parameters (zeros here; a checkpoint fills them).
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(c.num_maskmem, 1, 1, c.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c.d_model))
        self.no_obj_embed_spatial = (
            nn.Parameter(torch.zeros(1, c.mem_dim)) if c.sam2_1 else None)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)

        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=c.d_model, image_embedding_size=(size, size),
            input_image_size=(c.image_size, c.image_size), mask_in_chans=c.mask_in_chans)
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=c.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.d_model,
                                          mlp_dim=c.decoder_mlp_dim, num_heads=c.decoder_heads),
            transformer_dim=c.d_model, iou_head_depth=3, iou_head_hidden_dim=256,
            use_high_res_features=True, iou_prediction_use_sigmoid=True,
            pred_obj_scores=True, pred_obj_scores_mlp=True,
            use_multimask_token_for_obj_ptr=True,
            dynamic_multimask_via_stability=c.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=c.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=c.dynamic_multimask_stability_thresh)
        self.obj_ptr_proj = MLP(c.d_model, c.d_model, c.d_model, 3)
        # SAM 2.1 projects the pointers' temporal encoding to the memory width; SAM 2
        # uses none.
        self.obj_ptr_tpos_proj = nn.Linear(c.d_model, c.mem_dim) if c.sam2_1 else nn.Identity()

    @property
    def device(self):
        return self.no_mem_embed.device

    # ------------------------------------------------------------------ image

    def encode_image(self, images) -> ImageFeatures:
        """Normalised B x 3 x S x S images -> features for the heads and the memory."""
        out = self.image_encoder(images)
        fpn, pos = out["backbone_fpn"], out["vision_pos_enc"]
        high_res = [self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1])]
        return ImageFeatures(embed=fpn[-1], pos=pos[-1], high_res=high_res)

    def input_transform(self, image_hw):
        """How an H x W image becomes this model's input (SAM 2 stretches it to a square)."""
        return SquareResize(image_hw, self.image_size)

    @property
    def mask_input_size(self):
        """(h, w) of the low-resolution mask logits the prompt encoder takes."""
        return tuple(self.sam_prompt_encoder.mask_input_size)

    @property
    def default_multimask_output(self):
        """Whether the image predictor returns three candidates unless told otherwise."""
        return self.config.multimask_output_in_sam

    def masks_from_prompts(self, features, points=None, boxes=None, mask_input=None,
                           multimask_output=True):
        """Mask logits and IoU predictions for B prompt sets on one image (features after
        ``without_memory``), as SAM 2's image predictor computes them: box corners become
        points labelled 2 and 3, ahead of the clicks. ``points``: (B x P x 2 model-input
        pixels, B x P labels) or None; ``boxes``: B x 4 or None; ``mask_input``: B x 1 x
        ``mask_input_size`` logits or None."""
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([2, 3], dtype=torch.int32, device=boxes.device)
            corner_labels = corner_labels.expand(corners.shape[0], 2)
            if points is None:
                points = (corners, corner_labels)
            else:
                points = (torch.cat([corners, points[0]], dim=1),
                          torch.cat([corner_labels, points[1].to(torch.int32)], dim=1))
        return decode_prompts(self.sam_prompt_encoder, self.sam_mask_decoder, features, points,
                              None, mask_input, multimask_output)

    def without_memory(self, embed):
        """Image features of a frame that has no memory to attend to (first prompt, image
        mode): SAM 2 adds a learned "no memory" embedding instead of memory attention."""
        return embed + self.no_mem_embed.view(1, -1, 1, 1)

    # ------------------------------------------------------------ SAM heads

    def use_multimask(self, is_init_cond_frame, num_points):
        """Whether the heads should return three candidate masks (ambiguous prompts)."""
        c = self.config
        return (c.multimask_output_in_sam
                and (is_init_cond_frame or c.multimask_output_for_tracking)
                and c.multimask_min_pt_num <= num_points <= c.multimask_max_pt_num)

    def predict_masks(self, embed, high_res, points=None, labels=None, mask_input=None,
                      multimask=False) -> MaskPrediction:
        """Prompt encoder + mask decoder for B prompts over B feature maps.

        ``points`` are B x P x 2 in model-input pixels with B x P ``labels`` (1 fg, 0 bg,
        2/3 box corners, -1 padding); ``mask_input`` is B x 1 x H x W logits at any size.
        """
        b = embed.shape[0]
        if points is None:
            points = embed.new_zeros(b, 1, 2)
            labels = torch.full((b, 1), -1, dtype=torch.int32, device=embed.device)
        size = self.sam_prompt_encoder.mask_input_size
        if mask_input is not None and mask_input.shape[-2:] != size:
            mask_input = F.interpolate(mask_input.float(), size=size, mode="bilinear",
                                       align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(points, labels), boxes=None,
                                                masks=mask_input)
        low_res_multi, ious, tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=embed, image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask, repeat_image=False, high_res_features=high_res)
        present = object_score_logits > 0
        low_res_multi = torch.where(present[:, :, None, None], low_res_multi,
                                    NO_OBJECT_LOGIT).float()
        high_res_multi = F.interpolate(low_res_multi, size=(self.image_size, self.image_size),
                                       mode="bilinear", align_corners=False)
        token = tokens[:, 0]
        if multimask:
            best = ious.argmax(dim=-1)
            rows = torch.arange(b, device=embed.device)
            low_res, high_res_mask = (low_res_multi[rows, best, None],
                                      high_res_multi[rows, best, None])
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        else:
            low_res, high_res_mask = low_res_multi, high_res_multi
        obj_ptr = self.gate_object_pointer(self.obj_ptr_proj(token), present.float())
        return MaskPrediction(low_res_multi, high_res_multi, ious, low_res, high_res_mask,
                              obj_ptr, object_score_logits)

    def gate_object_pointer(self, obj_ptr, present):
        """Replace the pointer of an absent object by the learned "no object" pointer."""
        return present * obj_ptr + (1 - present) * self.no_obj_ptr

    def mask_as_prediction(self, embed, high_res, mask) -> MaskPrediction:
        """A mask prompt taken as the answer itself: logits +-10 from the binary mask; the
        object pointer still comes from the heads, prompted with the downsampled mask."""
        mask = mask.float()
        high_res_mask = mask * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        low_res = F.interpolate(high_res_mask, size=(mask.shape[-2] // 4, mask.shape[-1] // 4),
                                mode="bilinear", align_corners=False, antialias=True)
        ious = mask.new_ones(mask.shape[0], 1)
        heads = self.predict_masks(embed, high_res, mask_input=self.mask_downsample(mask))
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        object_score_logits = MASK_PROMPT_SCALE * present + MASK_PROMPT_BIAS
        obj_ptr = self.gate_object_pointer(heads.obj_ptr, present)
        return MaskPrediction(low_res, high_res_mask, ious, low_res, high_res_mask, obj_ptr,
                              object_score_logits)

    # --------------------------------------------------------------- memory

    def encode_memory(self, embed, high_res_masks, object_score_logits, binarize):
        """A frame's memory: its image features fused with its predicted mask.

        Returns (features B x mem_dim x h x w, position encoding of the same shape).
        """
        if binarize:
            mask = (high_res_masks > 0).float()
        else:
            mask = torch.sigmoid(high_res_masks)
        mask = mask * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        out = self.memory_encoder(embed, mask, skip_mask_sigmoid=True)
        features, pos = out["vision_features"], out["vision_pos_enc"][-1]
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).float()
            no_object = self.no_obj_embed_spatial[..., None, None]
            features = features + absent[:, :, None, None] * no_object
        return features, pos

    def attend_memory(self, embed, pos, memory, memory_pos, num_obj_ptr_tokens):
        """Condition B frames' features on their memories.

        ``embed``/``pos``: B x C x h x w; ``memory``/``memory_pos``: M x B x mem_dim, the
        last ``num_obj_ptr_tokens`` of which are object-pointer tokens (no rotary encoding).
        """
        b, c, h, w = embed.shape
        curr = embed.flatten(2).permute(2, 0, 1)
        curr_pos = pos.flatten(2).permute(2, 0, 1)
        out = self.memory_attention(curr=curr, curr_pos=curr_pos, memory=memory,
                                    memory_pos=memory_pos, num_obj_ptr_tokens=num_obj_ptr_tokens)
        return out.permute(1, 2, 0).reshape(b, c, h, w)

    def assemble_memory(self, spatial, pointers=None, pointer_offsets=None):
        """Memory tokens and their position encodings for B objects, sequence first.

        ``spatial``: a list of ``(features B x mem_dim x h x w, slot B)`` where ``slot`` is
        each object's temporal slot of that memory (0 for a conditioning frame, else
        1..num_maskmem-1 counting up towards the current frame). ``pointers``: P x B x C
        object pointers with ``pointer_offsets`` (P x B, frames before the current one).
        Returns ``(memory M x B x mem_dim, memory_pos M x B x mem_dim, num_ptr_tokens)``.
        """
        memory, memory_pos = [], []
        for features, slot in spatial:
            b = features.shape[0]
            grid = self.memory_encoder.position_encoding(features[:1]).float()
            grid = grid.flatten(2).permute(2, 0, 1)  # HW x 1 x mem_dim
            index = self.num_maskmem - 1 - torch.as_tensor(slot, device=features.device)
            tpos = self.maskmem_tpos_enc[index.expand(b)].view(1, b, self.mem_dim)
            memory.append(features.float().flatten(2).permute(2, 0, 1))
            memory_pos.append(grid + tpos)
        num_ptr_tokens = 0
        if pointers is not None and pointers.shape[0] > 0:
            p, b, c = pointers.shape
            if self.config.sam2_1:
                # SAM 2.1: signed frame offsets, sine-encoded at full width, then projected.
                scale = self.config.max_obj_ptrs_in_encoder - 1
                ptr_pos = self.obj_ptr_tpos_proj(
                    sine_1d(pointer_offsets.float() / scale, self.hidden_dim))
            else:
                ptr_pos = pointers.new_zeros(p, b, self.mem_dim)
            # Each C-wide pointer becomes C / mem_dim tokens of the memory width.
            split = c // self.mem_dim
            pointers = pointers.reshape(p, b, split, self.mem_dim).permute(0, 2, 1, 3)
            memory.append(pointers.flatten(0, 1))
            memory_pos.append(ptr_pos.repeat_interleave(split, dim=0))
            num_ptr_tokens = p * split
        return torch.cat(memory), torch.cat(memory_pos), num_ptr_tokens


def sine_1d(positions, dim, temperature=10000):
    """Sine/cosine encoding of scalar positions: ``[sin(x / f_i)..., cos(x / f_i)...]``."""
    angles = positions.unsqueeze(-1) / sine_frequencies(dim // 2, temperature, positions.device)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
