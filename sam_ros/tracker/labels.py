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
            np.shape(logit) != masks.shape[1:] for logit in logits):
        raise ValueError(f"masks {masks.shape} and logits {[np.shape(x) for x in logits]} "
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
    overlap (``claimed_by``'s rule). Each mask is read only inside its bounding box, and
    logits only where boxes meet: the node builds a label image for every frame it
    publishes, and tracked objects cover a small part of a camera frame."""
    boxes = [_bounding_box(mask) for mask in masks]
    for value, mask, box in zip(reversed(values), reversed(masks), reversed(boxes)):
        if box is not None:  # the lower index on top
            np.copyto(canvas[box], value, where=mask[box], casting="unsafe")
    meeting = _union(_intersection(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    if meeting is None:
        return canvas
    overlap, best = _overlaps(masks, logits, boxes, meeting)
    canvas[meeting][overlap] = np.asarray(values, canvas.dtype)[best[overlap]]
    return canvas


def _bounding_box(mask):
    """The slices of ``mask``'s bounding box, or None if it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _intersection(a, b):
    """The common part of two boxes (None: either is, or they do not meet)."""
    if a is None or b is None:
        return None
    box = tuple(slice(max(p.start, q.start), min(p.stop, q.stop)) for p, q in zip(a, b))
    return box if all(s.start < s.stop for s in box) else None


def _union(boxes):
    """The bounding box of the boxes that are not None, or None if there are none."""
    boxes = [box for box in boxes if box is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes))
                 for axis in range(2))


def _overlaps(masks, logits, boxes, region):
    """In ``region`` (a box), where two or more masks cover a pixel, and there the index of
    the mask with the highest logit (the lower index on a tie): ``(overlap, best)``, arrays
    of the region's shape. Each mask is read in the part of its box (``boxes``) inside it."""
    shape = tuple(s.stop - s.start for s in region)
    covered, overlap = np.zeros(shape, bool), np.zeros(shape, bool)
    highest = np.full(shape, -np.inf, np.float32)
    best = np.zeros(shape, np.int32)
    for i, (mask, logit, box) in enumerate(zip(masks, logits, boxes)):
        part = _intersection(box, region)
        if part is None:
            continue
        here, inside = _relative(part, region), mask[part]
        overlap[here] |= covered[here] & inside
        covered[here] |= inside
        logit = np.asarray(logit)[part].astype(np.float32, copy=False)
        higher = inside & (logit > highest[here])
        np.copyto(highest[here], logit, where=higher)
        np.copyto(best[here], np.int32(i), where=higher)
    return overlap, best


def _relative(box, region):
    """``box`` in the coordinates of ``region``, a box that holds it."""
    return tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(box, region))
