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

    ``masks`` (bool) and ``logits`` (float) are N x H x W; of the masks covering a pixel,
    the one whose logit is highest there wins (the lower index on a tie).
    """
    masks = np.asarray(masks, bool)
    logits = np.asarray(logits, np.float32)
    if masks.shape != logits.shape or masks.ndim != 3:
        raise ValueError(f"masks {masks.shape} and logits {logits.shape} must both be "
                         f"N x H x W")
    if not len(masks):
        return np.full(masks.shape[1:], -1, np.intp)
    winner = np.where(masks, logits, np.float32(-np.inf)).argmax(axis=0)
    return np.where(masks.any(axis=0), winner, -1)


def label_image(shape, results):
    """uint16 label image of ``{object id: TrackResult}``: pixel = the id of the visible
    object that wins it (``claimed_by``), 0 = background."""
    shown = [results[obj_id] for obj_id in sorted(results) if results[obj_id].visible]
    labels = np.zeros(shape, np.uint16)
    if shown:
        winner = claimed_by([r.mask for r in shown], [r.logits for r in shown])
        ids = np.array([r.obj_id for r in shown], np.uint16)
        covered = winner >= 0
        labels[covered] = ids[winner[covered]]
    return labels
