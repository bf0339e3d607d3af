"""Reading and writing checkpoints in Meta's formats, safely and with clear errors.

An official SAM 2 checkpoint is a pickle holding ``{"model": state_dict}``; SAM's
(``sam_vit_b_01ec64.pth`` ...) and MobileSAM's (``mobile_sam.pt``) hold the bare state dict.
Both are read with ``torch.load(..., weights_only=True)``: tensors and plain containers
only, so a file that would need to run code to load is refused instead of executed. A
Hugging Face ``transformers`` SAM 2 or SAM save (``model.safetensors``) is read too, renamed to
Meta's keys (``hf_format``).
"""

import os
import pickle

import torch

from .configs import VARIANTS, Sam2Config, SamConfig, TinyVitConfig, VitConfig


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the cause."""


def read_state_dict(path):
    """The state dict stored in ``path`` (``{"model": sd}`` or a bare state dict; or a
    ``transformers`` save, converted to Meta's key names)."""
    from .hf_format import is_hf_checkpoint, read_hf_state_dict

    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    if is_hf_checkpoint(path):
        return read_hf_state_dict(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: not a regular file")
    not_torch = _not_a_torch_file(path)
    if not_torch:
        raise CheckpointError(f"checkpoint {path}: {not_torch}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = [line.strip() for line in str(exc).splitlines() if "Unsupported global" in line]
        if detail:
            raise CheckpointError(
                f"checkpoint {path}: refused, it holds Python objects that need code to "
                f"load (only tensors and plain containers are accepted): {detail[0]}") from None
        raise CheckpointError(f"checkpoint {path}: truncated or corrupt: not a pickle or zip "
                              f"archive that torch.load can read") from None
    except Exception as exc:  # the weights-only unpickler fails on bad bytes in many ways
        raise CheckpointError(
            f"checkpoint {path}: truncated or corrupt, torch.load failed: "
            f"{type(exc).__name__}: {_last_line(exc)}") from None
    if isinstance(content, dict) and "model" in content and isinstance(content["model"], dict):
        content = content["model"]
    if not isinstance(content, dict) or not content or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()):
        raise CheckpointError(
            f"checkpoint {path}: not a SAM 2 or SAM checkpoint, expected {{'model': "
            f"state_dict}} (SAM 2) or a bare state dict (SAM) of named tensors, found "
            f"{_describe(content)}")
    return content


def _not_a_torch_file(path):
    """What ``path`` is when it is plainly not what torch.save writes (a zip archive, or a
    pickle in the legacy format), or None: a file someone saved by mistake says so."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return None
    if not head:
        return "empty file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None  # binary: let torch.load say what is wrong with it
    if text.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (fetch it with `git lfs pull`)"
    if text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return "a web page (HTML), not a checkpoint (a download that got an error or login page?)"
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    return f"a text file, not a checkpoint (it starts {first!r})"


def _last_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _describe(content):
    if isinstance(content, dict):
        keys = list(content)[:5]
        return f"a dict with keys {keys}{' ...' if len(content) > 5 else ''}"
    return f"a {type(content).__name__}"


# The tensor that marks each family's image encoder.
HIERA_MARK = "image_encoder.trunk.pos_embed"  # SAM 2 / 2.1
VIT_MARK = "image_encoder.pos_embed"  # SAM (2023)
TINY_VIT_MARK = "image_encoder.patch_embed.seq.0.c.weight"  # MobileSAM


def _count(state_dict, prefix):
    """How many numbered children ``prefix.N.`` the state dict has."""
    return 1 + max((int(k[len(prefix):].split(".")[0]) for k in state_dict
                    if k.startswith(prefix)), default=-1)


def detect_variant(state_dict, source="checkpoint"):
    """The official variant whose module tree has these keys and encoder shape: SAM 2 / 2.1
    by its Hiera trunk, SAM by its ViT, MobileSAM by its TinyViT."""
    if HIERA_MARK in state_dict:
        return _detect_sam2(state_dict, source)
    if VIT_MARK in state_dict:
        return _detect_sam_vit(state_dict, source)
    if TINY_VIT_MARK in state_dict:
        return _detect_tiny_vit(state_dict, source)
    raise CheckpointError(
        f"{source}: not a SAM 2 checkpoint, nor a SAM or MobileSAM one: it has no "
        f"'{HIERA_MARK}' (SAM 2), '{VIT_MARK}' (SAM) or '{TINY_VIT_MARK}' (MobileSAM) tensor")


def _detect_sam2(state_dict, source):
    pos_embed = state_dict[HIERA_MARK]
    if pos_embed.ndim != 4:
        raise CheckpointError(f"{source}: not a SAM 2 checkpoint, '{HIERA_MARK}' has shape "
                              f"{tuple(pos_embed.shape)}")
    width = pos_embed.shape[1]
    blocks = _count(state_dict, "image_encoder.trunk.blocks.")
    sam2_1 = "no_obj_embed_spatial" in state_dict
    for name, config in VARIANTS.items():
        if (isinstance(config, Sam2Config) and config.trunk.embed_dim == width
                and sum(config.trunk.stages) == blocks and config.sam2_1 == sam2_1):
            return name
    raise CheckpointError(
        f"{source}: no official SAM 2 variant has a {blocks}-block Hiera trunk of width "
        f"{width} ({'SAM 2.1' if sam2_1 else 'SAM 2'} keys); pass the variant explicitly")


def _sam_variants(encoder_type):
    return [(name, config) for name, config in VARIANTS.items()
            if isinstance(config, SamConfig) and isinstance(config.encoder, encoder_type)]


def _detect_sam_vit(state_dict, source):
    pos_embed = state_dict[VIT_MARK]
    if pos_embed.ndim != 4:
        raise CheckpointError(f"{source}: not a SAM checkpoint, '{VIT_MARK}' has shape "
                              f"{tuple(pos_embed.shape)}")
    width = pos_embed.shape[-1]
    blocks = _count(state_dict, "image_encoder.blocks.")
    for name, config in _sam_variants(VitConfig):
        if config.encoder.embed_dim == width and config.encoder.depth == blocks:
            return name
    raise CheckpointError(
        f"{source}: no official SAM variant has a {blocks}-block ViT of width {width}; pass "
        f"the variant explicitly")


def _detect_tiny_vit(state_dict, source):
    stages = _count(state_dict, "image_encoder.layers.")
    depths = tuple(_count(state_dict, f"image_encoder.layers.{i}.blocks.")
                   for i in range(stages))
    widths = (state_dict[TINY_VIT_MARK].shape[0] * 2,) + tuple(
        state_dict[f"image_encoder.layers.{i}.downsample.conv1.c.weight"].shape[0]
        for i in range(stages - 1)
        if f"image_encoder.layers.{i}.downsample.conv1.c.weight" in state_dict)
    for name, config in _sam_variants(TinyVitConfig):
        if config.encoder.embed_dims == widths and config.encoder.depths == depths:
            return name
    raise CheckpointError(
        f"{source}: no official MobileSAM variant has a TinyViT of widths {list(widths)} and "
        f"depths {list(depths)}; pass the variant explicitly")


def load_into(model, state_dict, source="checkpoint"):
    """Strictly load ``state_dict`` into ``model``, explaining any mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    variant = getattr(getattr(model, "config", None), "name", "this model")
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        hint = ""
        try:
            hint = f"; it looks like {detect_variant(state_dict, source)}"
        except CheckpointError:
            hint = "; it does not look like any SAM 2, SAM or MobileSAM checkpoint"
        raise CheckpointError(
            f"{source} does not fit {variant}: {' and '.join(parts)}{hint}")
    wrong = [(k, tuple(state_dict[k].shape), tuple(v.shape))
             for k, v in expected.items() if state_dict[k].shape != v.shape]
    if wrong:
        shown = "; ".join(f"{k}: file {f} vs model {m}" for k, f, m in wrong[:3])
        raise CheckpointError(
            f"{source} does not fit {variant}: {len(wrong)} tensors of the wrong shape ({shown})")
    model.load_state_dict(state_dict, strict=True)
    return model


def save_checkpoint(model, path):
    """Write ``model`` in its family's official layout: ``{"model": state_dict}`` for SAM 2,
    the bare state dict for SAM and MobileSAM (so that Meta's loaders read it too)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bare = isinstance(getattr(model, "config", None), SamConfig)
    torch.save(state if bare else {"model": state}, os.fspath(path))


__all__ = ["CheckpointError", "read_state_dict", "detect_variant", "load_into",
           "save_checkpoint"]
