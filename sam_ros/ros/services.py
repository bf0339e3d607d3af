"""The node's services: requests checked and turned into session calls, answers built.

A bad request is answered with ``success: false`` and a message saying what is wrong; the
node goes on tracking whatever a request holds.
"""

import numpy as np
from builtin_interfaces.msg import Time

from sam_ros.masks import mask_stats

from .conversions import array_to_image


def segment_prompt(req):
    """The tracker prompt of a Segment request (``add_prompt``'s keywords); ValueError
    names what is malformed. Values (NaN, outside the image, labels) are checked by the
    tracker, against the frame the request names."""
    pts = np.asarray(req.points, np.float64)
    if pts.size % 2:
        raise ValueError(f"points must be flat pairs [x0, y0, x1, y1, ...]; got {pts.size} "
                         f"numbers")
    labels = list(req.labels)
    if pts.size == 0 and labels:
        raise ValueError(f"{len(labels)} labels given without points")
    box = list(req.box)
    if box and len(box) != 4:
        raise ValueError(f"box must be empty or [x_min, y_min, x_max, y_max]; got {len(box)} "
                         f"numbers")
    if pts.size == 0 and not box:
        raise ValueError("empty prompt: give points with labels and/or a box")
    if req.object_id < 0:
        raise ValueError(f"object_id must be 0 (new object) or a tracked id; got "
                         f"{req.object_id}")
    if req.once and req.object_id != 0:
        raise ValueError("once=true answers for a new object only: use object_id 0")
    prompt = {}
    if pts.size:
        prompt["points"] = pts.reshape(-1, 2)
        prompt["labels"] = labels
    if box:
        prompt["box"] = np.asarray(box, np.float64)
    return prompt


def fill_segment_response(res, object_id, result, with_mask):
    """Fill a Segment response from the answer on the frame the request named (the mask
    image only ``with_mask``)."""
    header = result.stamp  # the tracker's stamp of a frame is its message header
    area, bbox, _ = mask_stats(result.mask)
    res.object_id = int(object_id)
    res.score = float(result.score)
    res.iou = float(result.iou)
    res.bbox = bbox
    res.area = area
    if with_mask:
        res.mask = array_to_image(result.mask.view(np.uint8) * np.uint8(255), "mono8", header)
    res.stamp = header.stamp if header is not None else Time()
