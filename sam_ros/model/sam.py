"""SAM (2023) and MobileSAM: an image encoder (ViT-B/L/H or TinyViT) with the prompt encoder
and mask decoder that SAM 2 later grew from; our SAM 2 modules build them, with SAM's flags
(no high-resolution features, no object-score head, IoU as a raw regression).

Submodule names are those of Meta's ``Sam`` (``image_encoder``, ``prompt_encoder``,
``mask_decoder``), so official checkpoints load strictly. SAM segments single images: it
answers the image predictor's questions the way ``SAM2`` does, and has no memory to track
with.
"""

from torch import nn

from .configs import SamConfig, TinyVitConfig
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .prompt_encoder import PromptEncoder
from .sam2 import ImageFeatures, decode_prompts
from .tiny_vit import TinyViT
from .transforms import LongestSideResize
from .vit import VitImageEncoder


class SAM(nn.Module):
    """SAM (2023) with a ViT encoder, or MobileSAM with TinyViT (chosen by the config)."""

    has_memory = False
    # SAM's predictor hands low-resolution logits back as they are.
    low_res_logit_limit = None

    def __init__(self, config: SamConfig):
        super().__init__()
        self.config = c = config
        self.image_size = c.image_size
        encoder = TinyViT if isinstance(c.encoder, TinyVitConfig) else VitImageEncoder
        self.image_encoder = encoder(c.encoder, c.image_size, c.d_model)
        size = c.embedding_size
        self.prompt_encoder = PromptEncoder(
            embed_dim=c.d_model, image_embedding_size=(size, size),
            input_image_size=(c.image_size, c.image_size), mask_in_chans=c.mask_in_chans)
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=c.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.d_model,
                                          mlp_dim=c.decoder_mlp_dim, num_heads=c.decoder_heads,
                                          sam1_names=True),
            transformer_dim=c.d_model, iou_head_depth=3, iou_head_hidden_dim=256)

    @property
    def device(self):
        return self.prompt_encoder.no_mask_embed.weight.device

    def input_transform(self, image_hw):
        """How an H x W image becomes this model's input (longest side to S, then padded)."""
        return LongestSideResize(image_hw, self.image_size)

    @property
    def mask_input_size(self):
        """(h, w) of the low-resolution mask logits the prompt encoder takes."""
        return tuple(self.prompt_encoder.mask_input_size)

    @property
    def default_multimask_output(self):
        """Whether the image predictor returns three candidates unless told otherwise."""
        return self.config.multimask_output

    def encode_image(self, images) -> ImageFeatures:
        """Normalised, padded B x 3 x S x S images -> the B x C x S/16 x S/16 embedding."""
        return ImageFeatures(embed=self.image_encoder(images), pos=None, high_res=None)

    def without_memory(self, embed):
        """SAM has no memory: its image embedding is prompted as it is."""
        return embed

    def masks_from_prompts(self, features, points=None, boxes=None, mask_input=None,
                           multimask_output=True):
        """Mask logits and IoU predictions for B prompt sets on one image, as SAM's predictor
        computes them: boxes are their own tokens after the clicks, and clicks get a padding
        token only when there is no box. Arguments as ``SAM2.masks_from_prompts``."""
        return decode_prompts(self.prompt_encoder, self.mask_decoder, features, points, boxes,
                              mask_input, multimask_output)

