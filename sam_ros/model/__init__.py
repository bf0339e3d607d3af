"""SAM 2 / SAM 2.1 in plain PyTorch: build a model, load Meta's checkpoints, predict masks."""

import os

import torch

from .automatic import AutomaticMaskGenerator
from .checkpoint import CheckpointError, detect_variant, load_into, read_state_dict, save_checkpoint
from .configs import VARIANTS, Sam2Config, get_config
from .predictor import SamImagePredictor
from .sam2 import SAM2


# The small SAM 2 trained here on generated video (model card beside it): the default.
BUNDLED_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights",
                                  "sam_ros_mini.pt")


def build_sam2(variant="auto", checkpoint=None, device="cpu", **overrides):
    """Build a SAM 2 model, loading a checkpoint in Meta's format.

    With no arguments this is the bundled ``sam_ros_mini`` model (``BUNDLED_CHECKPOINT``).
    ``variant`` is a name such as ``"sam2.1_hiera_t"`` (see ``VARIANTS``), a ``Sam2Config``,
    or ``"auto"`` to read it off the checkpoint; a named variant without a checkpoint has
    random weights. ``overrides`` change config fields that do not alter the weights'
    shapes (e.g. ``image_size=512``). The model is returned in eval mode on ``device``.
    """
    if checkpoint is None and variant == "auto":
        checkpoint = BUNDLED_CHECKPOINT
    state_dict = None
    if checkpoint is not None:
        state_dict = read_state_dict(checkpoint)
    if variant == "auto":
        variant = detect_variant(state_dict, source=f"checkpoint {os.fspath(checkpoint)}")
    model = SAM2(get_config(variant, **overrides))
    if state_dict is not None:
        load_into(model, state_dict, source=f"checkpoint {os.fspath(checkpoint)}")
    return model.to(torch.device(device)).eval()


__all__ = ["AutomaticMaskGenerator", "BUNDLED_CHECKPOINT", "SAM2", "Sam2Config", "SamImagePredictor", "VARIANTS", "CheckpointError",
           "build_sam2", "get_config", "save_checkpoint", "read_state_dict", "detect_variant",
           "load_into"]
