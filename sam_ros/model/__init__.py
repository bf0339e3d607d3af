"""SAM 2 / SAM 2.1, SAM (2023) and MobileSAM in plain PyTorch: build a model, load the
official checkpoints, predict masks."""

import os

import torch

from .automatic import AutomaticMaskGenerator
from .checkpoint import CheckpointError, detect_variant, load_into, read_state_dict, save_checkpoint
from .configs import VARIANTS, Sam2Config, SamConfig, get_config
from .hf_format import is_image_only, load_image_only
from .hub import (
    CHECKPOINTS,
    CheckpointFetchError,
    fetch_checkpoint,
    official_checkpoint,
    resolve_checkpoint,
)
from .predictor import SamImagePredictor
from .sam import SAM
from .sam2 import SAM2

# The small SAM 2 trained here on generated video (model card beside it): the default.
BUNDLED_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights",
                                  "sam_ros_mini.pt")


# The model class of each family's config.
MODEL_CLASSES = {Sam2Config: SAM2, SamConfig: SAM}


def build_model(variant="auto", checkpoint=None, device="cpu", **overrides):
    """Build a SAM 2, SAM or MobileSAM model, loading a checkpoint in its official format.

    With no arguments this is the bundled ``sam_ros_mini`` model (``BUNDLED_CHECKPOINT``).
    ``checkpoint`` is a path (an official ``.pt`` / ``.pth``, or a ``transformers``
    ``model.safetensors`` or its folder) or an official name such as ``"sam2.1_hiera_small"``
    (see ``CHECKPOINTS``: taken from the cache, downloaded on first use; ``hub``).
    ``variant`` is a name such as ``"sam2.1_hiera_t"``, ``"sam_vit_b"`` or ``"mobile_sam"``
    (see ``VARIANTS``), a config, or ``"auto"`` to read it off the checkpoint; a named
    variant without a checkpoint has random weights. ``overrides`` change config fields
    (e.g. ``image_size=512`` for SAM 2, whose weights do not depend on it; SAM's position
    embeddings do). The model is returned in eval mode on ``device``.
    """
    return _build(variant, checkpoint, device, overrides, families=tuple(MODEL_CLASSES))


def build_sam2(variant="auto", checkpoint=None, device="cpu", **overrides):
    """``build_model`` for SAM 2 / 2.1 only: a SAM or MobileSAM variant or checkpoint is
    refused with a ``CheckpointError`` (or ``ValueError`` for a variant name)."""
    return _build(variant, checkpoint, device, overrides, families=(Sam2Config,))


def _build(variant, checkpoint, device, overrides, families):
    if checkpoint is None and variant == "auto":
        checkpoint = BUNDLED_CHECKPOINT
    source = None if checkpoint is None else f"checkpoint {os.fspath(checkpoint)}"
    wanted = " or ".join(MODEL_CLASSES[f].__name__ for f in families)
    state_dict = None
    if checkpoint is not None:
        official = None if os.path.exists(checkpoint) else official_checkpoint(checkpoint)
        if official is not None and type(get_config(official.variant)) not in families:
            # said before a download of up to 2.5 GB, not after
            raise CheckpointError(f"{source} is a {official.variant} model, not a {wanted} "
                                  f"one; build it with build_model")
        checkpoint = resolve_checkpoint(checkpoint)
        state_dict = read_state_dict(checkpoint)
    detected = variant == "auto"
    if detected:
        variant = detect_variant(state_dict, source=source)
    config = get_config(variant, **overrides)
    if type(config) not in families:
        if detected:
            raise CheckpointError(f"{source} holds a {config.name} model, not a {wanted} one; "
                                  f"build it with build_model")
        raise ValueError(f"{config.name} is not a {wanted} variant; build it with build_model")
    model = MODEL_CLASSES[type(config)](config)
    if state_dict is not None:
        load = load_image_only if is_image_only(state_dict) else load_into
        load(model, state_dict, source=source)
    return model.to(torch.device(device)).eval()


__all__ = ["AutomaticMaskGenerator", "BUNDLED_CHECKPOINT", "CHECKPOINTS", "SAM", "SAM2",
           "SamConfig", "Sam2Config", "SamImagePredictor", "VARIANTS", "CheckpointError",
           "CheckpointFetchError", "build_model", "build_sam2", "fetch_checkpoint", "get_config",
           "resolve_checkpoint", "save_checkpoint", "read_state_dict", "detect_variant",
           "load_into"]
