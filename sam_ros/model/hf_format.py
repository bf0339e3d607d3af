"""SAM 2 and SAM checkpoints in Hugging Face ``transformers``' format, read into Meta's names.

``transformers`` saves a model as a ``model.safetensors`` (beside a ``config.json``) whose
tensors are named after its own modules. For SAM 2, ``Sam2VideoModel`` holds the whole
network (what the Hub's ``facebook/sam2.1-hiera-*`` repositories carry), ``Sam2Model`` only
the image path (image encoder, prompt encoder, mask decoder and the "no memory" embedding).
For SAM (2023), ``SamModel`` is what ``facebook/sam-vit-base`` / ``-large`` / ``-huge`` and
the models fine-tuned from them carry. The tensors are the same as in Meta's checkpoints;
only their names differ, except that the random-Fourier positional matrix is kept twice
(once for the image, once for the prompts) where Meta has one, and SAM 2's point
embeddings are one 4 x C matrix where Meta has four 1 x C embeddings.
"""

import os
import re
from collections import defaultdict

from .checkpoint import CheckpointError, load_into

WEIGHTS_FILE = "model.safetensors"

# Keys of an image-only (``Sam2Model``) file are a subset of the full network's: these
# Meta-named entries exist only for tracking (memory and object pointers).
MEMORY_KEY_PREFIXES = ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc",
                       "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
                       "obj_ptr_proj.", "obj_ptr_tpos_proj.", "mask_downsample.")

_IMAGE_PE = "shared_image_embedding.positional_embedding"
_PROMPT_PE = "prompt_encoder.shared_embedding.positional_embedding"
_POINT_EMBED = "prompt_encoder.point_embed.weight"

# Whole-name renames (Hugging Face -> Meta) of the parameters held by the model itself.
_TOP_LEVEL = {
    "no_memory_embedding": "no_mem_embed",
    "no_memory_positional_encoding": "no_mem_pos_enc",
    "memory_temporal_positional_encoding": "maskmem_tpos_enc",
    "no_object_pointer": "no_obj_ptr",
    "occlusion_spatial_embedding_parameter": "no_obj_embed_spatial",
}

# Renames of name pieces, applied in this order to every key (after the MLP and mask
# down-sampler renumbering below). Patterns are anchored where a piece could recur. First
# what differs between the families (SAM 2's modules sit under other names), then what they
# share, whatever the prefix.
_SAM2_NAMES = [
    (r"^vision_encoder\.backbone\.", "image_encoder.trunk."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.", "memory_encoder.fuser."),
    (r"(\.fuser\.layers\.\d+)\.scale$", r"\1.gamma"),
    (r"(\.fuser\.layers\.\d+)\.depthwise_conv\.", r"\1.dwconv."),
    (r"(\.fuser\.layers\.\d+)\.pointwise_conv(\d)\.", r"\1.pwconv\2."),
    (r"(\.fuser\.layers\.\d+)\.layer_norm\.", r"\1.norm."),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
]
_SAM_NAMES = [
    (r"^vision_encoder\.layers\.", "image_encoder.blocks."),
    (r"^vision_encoder\.neck\.conv(\d)\.", lambda m: f"image_encoder.neck.{2 * int(m[1]) - 2}."),
    (r"^vision_encoder\.neck\.layer_norm(\d)\.",
     lambda m: f"image_encoder.neck.{2 * int(m[1]) - 1}."),
    (r"^vision_encoder\.", "image_encoder."),
    (r"^prompt_encoder\.point_embed\.(\d+)\.", r"prompt_encoder.point_embeddings.\1."),
]
_SHARED_NAMES = [
    (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
    (r"(prompt_encoder\.)shared_embedding\.positional_embedding$",
     r"\1pe_layer.positional_encoding_gaussian_matrix"),
    (r"(prompt_encoder\.)mask_embed\.conv1\.", r"\1mask_downscaling.0."),
    (r"(prompt_encoder\.)mask_embed\.layer_norm1\.", r"\1mask_downscaling.1."),
    (r"(prompt_encoder\.)mask_embed\.conv2\.", r"\1mask_downscaling.3."),
    (r"(prompt_encoder\.)mask_embed\.layer_norm2\.", r"\1mask_downscaling.4."),
    (r"(prompt_encoder\.)mask_embed\.conv3\.", r"\1mask_downscaling.6."),
    (r"(mask_decoder\.)upscale_conv1\.", r"\1output_upscaling.0."),
    (r"(mask_decoder\.)upscale_layer_norm\.", r"\1output_upscaling.1."),
    (r"(mask_decoder\.)upscale_conv2\.", r"\1output_upscaling.3."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"\.o_proj\.", ".out_proj."),
    (r"(\.layers\.\d+|\.blocks\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
]
_SAM2_RULES = [(re.compile(p), r) for p, r in _SAM2_NAMES + _SHARED_NAMES]
_SAM_RULES = [(re.compile(p), r) for p, r in _SAM_NAMES + _SHARED_NAMES]

# A tensor each family's save has, and the other's not.
_SAM2_MARK = "vision_encoder.backbone.patch_embed.projection.weight"
_SAM_MARK = "vision_encoder.patch_embed.projection.weight"

_MLP_END = re.compile(r"^(.*)\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")
_DOWNSAMPLER = re.compile(r"^(memory_encoder\.mask_downsampler)\."
                          r"(?:layers\.(\d+)\.(conv|layer_norm)|(final_conv))\.(weight|bias)$")


def is_hf_checkpoint(path):
    """Whether ``path`` is a ``transformers`` save: a folder holding ``model.safetensors``,
    a ``.safetensors`` file, or a file that starts like one (whatever its name)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, WEIGHTS_FILE))
    if path.endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    # safetensors: an 8-byte little-endian header length, then the JSON header itself.
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def read_hf_state_dict(path):
    """The tensors of a ``transformers`` SAM 2 or SAM save, under Meta's key names."""
    path = os.fspath(path)
    file = os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(
            f"checkpoint {file}: a Hugging Face safetensors file; reading it needs the "
            "safetensors package (pip install safetensors)") from None
    try:
        tensors = load_file(file, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {file}: truncated or corrupt safetensors file "
                              f"({type(exc).__name__}: {exc})") from None
    return hf_to_meta(tensors, source=f"checkpoint {file}")


def hf_to_meta(tensors, source="checkpoint"):
    """Rename a ``transformers`` SAM 2 or SAM state dict to Meta's names (what ``SAM2`` or
    ``SAM`` loads)."""
    if _SAM2_MARK in tensors:
        family, rules = "SAM 2", _SAM2_RULES
    elif _SAM_MARK in tensors:
        family, rules = "SAM", _SAM_RULES
    else:
        raise CheckpointError(
            f"{source}: not a SAM 2 or SAM checkpoint in Hugging Face's layout, no "
            f"'{_SAM2_MARK}' or '{_SAM_MARK}' tensor (found e.g. "
            f"{', '.join(list(tensors)[:3])})")
    tensors = dict(tensors)
    image_pe = tensors.pop(_IMAGE_PE, None)
    prompt_pe = tensors.get(_PROMPT_PE)
    if prompt_pe is None and image_pe is not None:  # tied, so saved once (transformers' SAM)
        tensors[_PROMPT_PE] = image_pe
    elif image_pe is not None and prompt_pe is not None and not image_pe.equal(prompt_pe):
        raise CheckpointError(
            f"{source}: its image and prompt positional matrices ({_IMAGE_PE} and "
            f"{_PROMPT_PE}) differ; {family} shares one, so this file cannot be loaded as "
            f"{family}")
    out = {}
    point_embed = tensors.pop(_POINT_EMBED, None)  # SAM 2's four point embeddings in one
    if point_embed is not None:
        for i, row in enumerate(point_embed):
            out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = row[None].clone()
    renumbered = _renumber_mlps(_renumber_downsampler(tensors))
    for key, value in renumbered.items():
        if key in _TOP_LEVEL:
            key = _TOP_LEVEL[key]
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key)
        out[key] = value
    return out


def is_image_only(state_dict):
    """Whether a (Meta-named) state dict lacks the memory path, as ``Sam2Model`` saves do."""
    return (any(k.startswith("sam_mask_decoder.") for k in state_dict)
            and not any(k.startswith(MEMORY_KEY_PREFIXES) for k in state_dict))


def load_image_only(model, state_dict, source="checkpoint"):
    """Load an image-only save: the image path strictly, every tensor of it; the memory
    path keeps its untrained values and the model refuses to track (``has_memory``)."""
    untrained = {k: v for k, v in model.state_dict().items() if k.startswith(MEMORY_KEY_PREFIXES)}
    load_into(model, {**untrained, **state_dict}, source=source)
    model.has_memory = False
    return model


def _renumber_mlps(tensors):
    """``proj_in``, ``layers.k``, ``proj_out`` -> Meta's ``layers.0 .. layers.n-1``.

    An MLP is recognised by its ``proj_in``; the hidden layers between are renumbered
    one up, and ``proj_out`` becomes the last."""
    hidden = defaultdict(set)
    for key in tensors:
        match = _MLP_END.match(key)
        if match and match.group(3) is not None:
            hidden[match.group(1)].add(int(match.group(3)))
    mlps = {m.group(1) for m in map(_MLP_END.match, tensors) if m and m.group(2) == "proj_in"}
    out = {}
    for key, value in tensors.items():
        match = _MLP_END.match(key)
        if match and match.group(1) in mlps:
            prefix, part, index, leaf = match.groups()
            if part == "proj_in":
                position = 0
            elif part == "proj_out":
                position = len(hidden[prefix]) + 1
            else:
                position = int(index) + 1
            key = f"{prefix}.layers.{position}.{leaf}"
        out[key] = value
    return out


def _renumber_downsampler(tensors):
    """The memory encoder's mask down-sampler: Hugging Face names its (conv, norm) pairs
    and final conv; Meta numbers one ``Sequential`` of conv, norm, activation, ..., conv."""
    stages = {int(m.group(2)) for m in map(_DOWNSAMPLER.match, tensors) if m and m.group(2)}
    out = {}
    for key, value in tensors.items():
        match = _DOWNSAMPLER.match(key)
        if match:
            prefix, stage, part, final, leaf = match.groups()
            if final:
                position = 3 * len(stages)
            else:
                position = 3 * int(stage) + (0 if part == "conv" else 1)
            key = f"{prefix}.encoder.{position}.{leaf}"
        out[key] = value
    return out


__all__ = ["WEIGHTS_FILE", "hf_to_meta", "is_hf_checkpoint", "is_image_only", "load_image_only",
           "read_hf_state_dict"]
