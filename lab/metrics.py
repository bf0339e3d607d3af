"""The DAVIS video-object-segmentation measures on boolean masks: region similarity J
(IoU) and contour accuracy F (boundary F-measure), computed as the DAVIS toolkit does so
that scores can be compared with published ones."""

import math

import cv2
import numpy as np

from sam_ros.masks import mask_iou

# J, DAVIS's region similarity: the masks' IoU (1.0 when both are empty).
region_similarity = mask_iou


def boundary_map(mask):
    """One-pixel-wide boundary of a mask: pixels that differ from their right, lower or
    lower-right neighbour (DAVIS's ``seg2bmap`` at the mask's own size)."""
    mask = np.asarray(mask, bool)
    right = np.zeros_like(mask)
    below = np.zeros_like(mask)
    diagonal = np.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    below[:-1, :] = mask[1:, :]
    diagonal[:-1, :-1] = mask[1:, 1:]
    boundary = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def _disk(radius):
    """Structuring element of the pixels within ``radius`` of the centre (skimage's disk)."""
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def contour_accuracy(pred, gt, bound_th=0.008):
    """F: F-measure of the two masks' boundaries, each boundary pixel counting as matched
    when the other boundary lies within ``ceil(bound_th * image diagonal)`` pixels.

    Both boundaries empty gives 1; exactly one empty gives 0.
    """
    pred_boundary, gt_boundary = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = np.count_nonzero(pred_boundary), np.count_nonzero(gt_boundary)
    if n_pred == 0 or n_gt == 0:
        return float(n_pred == n_gt)
    disk = _disk(math.ceil(bound_th * math.hypot(*pred_boundary.shape)))
    pred_near = cv2.dilate(pred_boundary.astype(np.uint8), disk).astype(bool)
    gt_near = cv2.dilate(gt_boundary.astype(np.uint8), disk).astype(bool)
    precision = np.count_nonzero(pred_boundary & gt_near) / n_pred
    recall = np.count_nonzero(gt_boundary & pred_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# A mask of a shown target is "good" from this J on; below it, how it misses is sorted out.
GOOD_J = 0.7
# Below this share of the mask on the target and of the target covered, the mask is on
# something else: the track is lost.
LOST_SHARE = 0.3
# Where the mask covers or lies on this share of the target, it is the right object at the
# wrong size.
SIZE_SHARE = 0.7
ERROR_KINDS = ("good", "empty", "lost", "too large", "too small", "partly off")


def error_kind(pred, gt):
    """What a prediction of a shown (non-empty) target is, one of ``ERROR_KINDS``:
    good (J >= ``GOOD_J``); empty (nothing predicted: said hidden, or nothing found); lost
    (mostly on something else); too large / too small (the target, bled into its
    surroundings / only part of it); partly off (the rest: on the target in part and off it
    in part)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if not gt.any():
        raise ValueError("error_kind sorts predictions of shown targets; this one is empty")
    overlap, predicted, actual = (np.count_nonzero(m) for m in (pred & gt, pred, gt))
    if overlap / (predicted + actual - overlap) >= GOOD_J:
        return "good"
    if predicted == 0:
        return "empty"
    precision, recall = overlap / predicted, overlap / actual
    if precision < LOST_SHARE and recall < LOST_SHARE:
        return "lost"
    if precision >= SIZE_SHARE or recall >= SIZE_SHARE:
        return "too large" if predicted > actual else "too small"
    return "partly off"
