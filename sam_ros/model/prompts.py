"""Validation of user prompts (clicks, boxes, masks), shared by the image predictor, the
tracker and the node: a bad prompt becomes a ValueError that says what is wrong."""

import numpy as np
import torch

FOREGROUND, BACKGROUND = 1, 0
BOX_CORNER_LABELS = (2, 3)


def _float_array(value, name):
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def parse_points_and_box(points, labels, box, image_hw):
    """Clicks and/or boxes -> ``(coords B x P x 2, labels B x P)`` in image pixels, box
    corners first (labels 2, 3) as SAM expects; ``(None, None)`` when neither is given.

    ``points``: N x 2 (x, y) or B x N x 2; ``labels``: N or B x N of 1 (foreground) or
    0 (background); ``box``: [x_min, y_min, x_max, y_max] or B x 4. Points must lie in
    the H x W image; a box must overlap it.
    """
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be given together")
    h, w = image_hw
    coords_parts, label_parts = [], []
    if box is not None:
        boxes = _float_array(box, "box")
        if boxes.ndim not in (1, 2) or boxes.shape[-1] != 4:
            raise ValueError(f"box must be [x_min, y_min, x_max, y_max] or B x 4, got shape "
                             f"{boxes.shape}")
        boxes = boxes.reshape(-1, 4)
        if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
            raise ValueError(f"box must have x_min <= x_max and y_min <= y_max, got "
                             f"{boxes.tolist()}")
        if np.any(boxes[:, 0] >= w) or np.any(boxes[:, 1] >= h) or np.any(boxes[:, 2] <= 0) \
                or np.any(boxes[:, 3] <= 0):
            raise ValueError(f"box {boxes.tolist()} lies outside the {w}x{h} image")
        coords_parts.append(boxes.reshape(-1, 2, 2))
        label_parts.append(np.tile(np.array(BOX_CORNER_LABELS, np.int32), (len(boxes), 1)))
    if points is not None:
        coords = _float_array(points, "points")
        if coords.ndim == 2:
            coords = coords[None]
        if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[1] == 0:
            raise ValueError(f"points must be N x 2 (x, y) or B x N x 2 with N > 0, got shape "
                             f"{np.shape(points)}")
        values = _float_array(labels, "labels")
        if values.ndim == 1:
            values = values[None]
        if values.shape != coords.shape[:2]:
            raise ValueError(f"labels has shape {np.shape(labels)} but there are "
                             f"{coords.shape[1]} points (points shape {np.shape(points)})")
        if not np.all(np.isin(values, (FOREGROUND, BACKGROUND))):
            raise ValueError(f"labels must be 1 (foreground) or 0 (background), got "
                             f"{sorted(set(values.ravel().tolist()))}")
        x, y = coords[..., 0], coords[..., 1]
        outside = (x < 0) | (x > w) | (y < 0) | (y > h)
        if outside.any():
            raise ValueError(f"points {coords[outside].tolist()} lie outside the {w}x{h} image")
        coords_parts.append(coords)
        label_parts.append(values.astype(np.int32))
    if not coords_parts:
        return None, None
    if len({len(c) for c in coords_parts}) > 1:
        raise ValueError(f"boxes and point sets disagree on the batch size: "
                         f"{[len(c) for c in coords_parts]}")
    return np.concatenate(coords_parts, axis=1), np.concatenate(label_parts, axis=1)


def parse_mask(mask, image_hw):
    """A mask prompt: H x W of the image, bool or numbers (> 0 is inside) -> bool tensor."""
    array = np.asarray(mask)
    if array.shape != tuple(image_hw):
        raise ValueError(f"mask must be H x W = {tuple(image_hw)} like the frame, got shape "
                         f"{array.shape}")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise ValueError("mask must be boolean or finite numbers")
        array = array > 0
    if not array.any():
        raise ValueError("mask is empty: it selects no pixel")
    return torch.from_numpy(np.ascontiguousarray(array))
