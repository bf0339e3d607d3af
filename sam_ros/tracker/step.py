"""SAM 2's per-frame step: the one place where a frame is decoded and remembered.

The streaming tracker and the trainer both call these functions, so that a change to how SAM
2 tracks is made once and the model learns on the path it is used on (Meta's trainer calls its
``track_step`` in the same way). They keep no state and take no side on autograd: the tracker
calls them under ``torch.inference_mode``, the trainer with gradients on. What to remember
between frames (rings, memory banks, several objects) is the caller's business.

A *frame* is the ``ImageFeatures`` of one frame, batch 1 (shared by every object, as in the
tracker) or batch B (one row per clip, as in training). A *pick* is one
``ObjectMemory.select`` result; a batch of picks must share a memory layout.
"""

import torch
import torch.nn.functional as F

from sam_ros.model.common import autocast

from .memory_bank import MemoryEntry, memory_tokens

# Clamp of a previous prediction fed back as a mask prompt (as in the reference).
PREV_LOGIT_LIMIT = 32.0


def _rows(tensor, b):
    return tensor.expand(b, *tensor.shape[1:])


def attend(model, frame, picks, precision="float32"):
    """The frame's features conditioned on each object's memory (memory attention)."""
    memory, memory_pos, num_ptr = memory_tokens(model, picks)
    b = memory.shape[1]
    with autocast(model.device, precision):
        out = model.attend_memory(_rows(frame.embed, b), _rows(frame.pos, b), memory,
                                  memory_pos, num_ptr)
    return out.float()


def _entry(out, **prompt):
    """What the heads' answer leaves in memory (its features are encoded separately)."""
    return MemoryEntry(obj_ptr=out.obj_ptr.float(), score=out.object_score_logits.float(),
                       low_res=out.low_res_masks.float(),
                       iou=out.ious.float().max(dim=1).values, **prompt)


def prompt_step(model, frame, pix, points, labels, previous=None, initial=True,
                replaces_points=False):
    """Decode clicks or box corners on a frame (``points`` B x P x 2 in model-input pixels,
    ``labels`` B x P), from ``pix``: the frame's features without memory for a first prompt
    there (``model.without_memory``), or with memory (``attend``) for a correction.

    ``previous`` is an earlier answer on this frame: its logits become the mask prompt and
    its clicks are kept before the new ones, unless ``replaces_points`` (a new box). Returns
    ``(MaskPrediction, MemoryEntry)``; the entry's memory is encoded by ``remember_prompt``
    once no more clicks can change it.
    """
    mask_input = None
    if previous is not None and previous.low_res is not None:
        mask_input = previous.low_res.clamp(-PREV_LOGIT_LIMIT, PREV_LOGIT_LIMIT)
        if previous.from_prompt and previous.points is not None and not replaces_points:
            points = torch.cat([previous.points, points], dim=1)
            labels = torch.cat([previous.labels, labels], dim=1)
    b = pix.shape[0]
    out = model.predict_masks(pix, [_rows(h, b) for h in frame.high_res], points, labels,
                              mask_input=mask_input,
                              multimask=model.use_multimask(initial, labels.shape[1]))
    return out, _entry(out, points=points, labels=labels, initial=initial, from_prompt=True)


def mask_step(model, frame, mask):
    """A mask prompt (B x 1 x H x W, any size, binary), taken as the answer on its frame,
    as SAM 2 does. Returns ``(MaskPrediction, MemoryEntry)``."""
    size = (model.image_size,) * 2
    mask = mask.to(model.device).float()
    if mask.shape[-2:] != size:
        mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False,
                             antialias=True)
        mask = (mask >= 0.5).float()
    b = mask.shape[0]
    out = model.mask_as_prediction(_rows(frame.embed, b), [_rows(h, b) for h in frame.high_res],
                                   mask)
    return out, _entry(out, initial=True, from_prompt=True)


def tracked_step(model, frame, picks, precision="float32", memory_dtype=None,
                 remember=True):
    """Decode a frame from memory alone (no prompt), and with ``remember`` encode its memory.

    Returns ``(pix, MaskPrediction, MemoryEntry)``; ``pix`` (the memory-conditioned
    features) is what a correction click on this frame is decoded from.
    """
    pix = attend(model, frame, picks, precision)
    b = pix.shape[0]
    out = model.predict_masks(pix, [_rows(h, b) for h in frame.high_res],
                              multimask=model.use_multimask(False, 0))
    entry = _entry(out)
    if remember:
        entry.features = _encode(model, frame, out.high_res_masks, entry.score, False,
                                 precision, memory_dtype)
    return pix, out, entry


def remember_prompt(model, frame, low_res, scores, precision="float32", memory_dtype=None):
    """The memory of prompted answers on one frame (``low_res`` B x 1 x h x w logits,
    ``scores`` B x 1), their masks binarised as SAM 2 does for prompts."""
    high_res = F.interpolate(low_res, size=(model.image_size,) * 2, mode="bilinear",
                             align_corners=False)
    return _encode(model, frame, high_res, scores, True, precision, memory_dtype)


def _encode(model, frame, high_res_masks, scores, binarize, precision, memory_dtype):
    with autocast(model.device, precision):
        features, _ = model.encode_memory(_rows(frame.embed, high_res_masks.shape[0]),
                                          high_res_masks, scores, binarize=binarize)
    return features.to(memory_dtype) if memory_dtype is not None else features
