"""Small facts about boolean masks that the node, the tools and the lab all need.

NumPy and OpenCV only (no torch, no rclpy), so that a tool can read a mask's box or score
it against a ground truth without loading a model.
"""

import cv2
import numpy as np


def mask_stats(mask):
    """``(area, [x_min, y_min, x_max, y_max], (cx, cy))`` of a bool H x W mask; zeros when
    it is empty. From the mask's row and column sums (about 0.1 ms at 1280x720)."""
    m = np.ascontiguousarray(mask).view(np.uint8)
    cols = cv2.reduce(m, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    rows = cv2.reduce(m, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    area = int(cols.sum())
    if area == 0:
        return 0, [0, 0, 0, 0], (0.0, 0.0)
    xs, ys = np.flatnonzero(cols), np.flatnonzero(rows)
    centroid = (float(cols @ np.arange(cols.size)) / area,
                float(rows @ np.arange(rows.size)) / area)
    return area, [int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])], centroid


def mask_iou(pred, truth):
    """Intersection over union of two H x W masks (DAVIS's J); 1.0 when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    union = np.count_nonzero(pred | truth)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & truth) / union


def interior_point(mask):
    """``[x, y]`` of the mask pixel farthest from its boundary (the image edge counts as
    boundary): the click a person would give, and deterministic."""
    padded = np.pad(np.asarray(mask, np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(distance), distance.shape)
    return [int(x), int(y)]
