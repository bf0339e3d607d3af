"""One object per pixel, for outputs that can hold only one: a label image.

Each tracked object's mask is SAM 2's answer for that object alone, so two masks can claim
the same pixel. A label image (the node's ``~/masks``, a VOS benchmark's one PNG per frame)
holds one id there. The pixel goes to the object whose mask logit is highest, as SAM 2's
own non-overlap rule decides for its single-PNG outputs, not to whichever object happens
to be drawn last.
"""

import numpy as np


def claimed_by(masks, logits):
    """Per pixel, the index of the mask that wins it, or -1 where no mask covers it.

    ``masks``: N x H x W bool; ``logits``: the N masks' H x W logits (an array or a
    sequence). Of the masks covering a pixel, the one whose logit is highest there wins
    (the lower index on a tie).
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3 or len(logits) != len(masks) or any(
            np.shape(l) != masks.shape[1:] for l in logits):
        raise ValueError(f"masks {masks.shape} and logits {[np.shape(l) for l in logits]} "
                         f"must both be N x H x W")
    return _paint(np.full(masks.shape[1:], -1, np.int32), np.arange(len(masks)), masks,
                  logits)


def label_image(shape, results):
    """uint16 label image of ``{object id: TrackResult}``: pixel = the id of the visible
    object that wins it (``claimed_by``), 0 = background."""
    shown = [results[obj_id] for obj_id in sorted(results) if results[obj_id].visible]
    return _paint(np.zeros(shape, np.uint16), [r.obj_id for r in shown],
                  [r.mask for r in shown], [r.logits for r in shown])


def _paint(canvas, values, masks, logits):
    """``canvas`` with each mask's pixels set to its value, the winner's where they
    overlap (``claimed_by``'s rule)."""
    for value, mask in zip(reversed(values), reversed(masks)):  # the lower index on top
        np.copyto(canvas, value, where=mask, casting="unsafe")
    box, overlap, best = _overlaps(masks, logits)
    if box is not None:
        canvas[box][overlap] = np.asarray(values, canvas.dtype)[best[overlap]]
    return canvas


def _overlaps(masks, logits):
    """Where two or more masks cover a pixel: ``(box, overlap, best)``, the slices of the
    overlaps' bounding box, the overlapping pixels in it, and there the index of the mask
    with the highest logit (the lower index on a tie); ``(None, None, None)`` if none.
    The logits are read only in that box: elsewhere this costs a few boolean passes per
    mask (the node builds a label image for every frame it publishes)."""
    if len(masks) < 2:
        return None, None, None
    covered = np.zeros(np.shape(masks[0]), bool)
    overlap = np.zeros_like(covered)
    for mask in masks:
        overlap |= covered & mask
        covered |= mask
    rows, cols = np.flatnonzero(overlap.any(axis=1)), np.flatnonzero(overlap.any(axis=0))
    if not rows.size:
        return None, None, None
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    highest = np.full(overlap[box].shape, -np.inf, np.float32)
    best = np.zeros(highest.shape, np.int32)
    for i, (mask, logit) in enumerate(zip(masks, logits)):
        logit = np.asarray(logit, np.float32)[box]
        higher = mask[box] & (logit > highest)
        np.copyto(highest, logit, where=higher)
        np.copyto(best, np.int32(i), where=higher)
    return box, overlap[box], best
