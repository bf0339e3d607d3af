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


def segment_all_options(req, points_per_side):
    """``AutomaticMaskGenerator``'s keywords from a SegmentAll request: zero fields take the
    defaults (``points_per_side`` the node's), negative thresholds turn a filter off."""
    if req.points_per_side < 0:
        raise ValueError(f"points_per_side must be >= 0 (0: the node's); got "
                         f"{req.points_per_side}")
    options = {"points_per_side": int(req.points_per_side or points_per_side)}
    for field in ("pred_iou_thresh", "stability_score_thresh"):
        value = float(getattr(req, field))
        if not np.isfinite(value) or value > 1:
            raise ValueError(f"{field} must be at most 1 (0: the default, negative: off); "
                             f"got {value}")
        if value:
            options[field] = max(value, 0.0)
    return options


def fill_segment_all_response(res, header, image_hw, records, object_ids):
    """Fill a SegmentAll response: the label image (mask numbers, or the object ids of the
    masks tracked) and the masks' boxes, scores and areas, best first."""
    from sam_ros.model.automatic import label_image

    res.stamp = header.stamp
    res.boxes = [int(v) for r in records for v in (r["bbox"][0], r["bbox"][1],
                                                    r["bbox"][0] + r["bbox"][2],
                                                    r["bbox"][1] + r["bbox"][3])]
    res.scores = [float(r["predicted_iou"]) for r in records]
    res.stability = [float(r["stability_score"]) for r in records]
    res.areas = [int(r["area"]) for r in records]
    ids = list(object_ids) + [0] * (len(records) - len(object_ids))
    res.object_ids = ids
    numbers = label_image(records, image_hw)
    if object_ids:
        numbers = np.array([0] + ids, np.int32)[numbers]
    res.labels = array_to_image(numbers.astype(np.uint16), "mono16", header)


class Services:
    """The node's services (``~/segment``, ``~/segment_all``, ``~/remove``, ``~/reset``),
    answered from its session in a callback group of their own."""

    def __init__(self, node, group):
        from std_srvs.srv import Trigger

        from sam_ros.srv import RemoveObject, Segment, SegmentAll

        self.node = node
        node.create_service(Segment, "~/segment", self.segment, callback_group=group)
        node.create_service(SegmentAll, "~/segment_all", self.segment_all, callback_group=group)
        node.create_service(RemoveObject, "~/remove", self.remove, callback_group=group)
        node.create_service(Trigger, "~/reset", self.reset, callback_group=group)

    def _session(self, active=True):
        """The node's session, or ValueError saying why it cannot answer now (prompts need
        it active; removing and resetting, configured)."""
        node = self.node
        if node.lifecycle_state_label() == "finalized":
            raise ValueError("node is shut down (finalized): it cannot be configured again; "
                             "start a new one")
        if node.session is None:
            raise ValueError("node is not configured: configure and activate it first")
        if active and not node.active:
            raise ValueError("node is not active: activate it first")
        return node.session

    def _answer(self, what, res, work):
        """Answer a request by ``work()``, which returns the success message: a ValueError
        (what is wrong with the request) or any other error (logged as a failure) becomes
        ``success: false`` with its message. A request never crashes the node."""
        log = self.node.get_logger()
        res.success = False
        try:
            res.message = work()
            res.success = True
        except ValueError as e:
            res.message = str(e)
        except Exception as e:
            res.message = f"{type(e).__name__}: {e}"
            log.error(f"{what} failed: {res.message}")
        if not res.success:
            log.warning(f"{what} refused: {res.message}")
        return res

    def segment(self, req, res):
        param = self.node.param

        def work():
            prompt = segment_prompt(req)
            object_id, result, note = self._session().segment(
                prompt, object_id=int(req.object_id), stamp=req.stamp, once=req.once,
                label=req.label, max_objects=int(param("max_objects")))
            fill_segment_response(res, object_id, result, req.return_mask)
            return note or "ok"
        return self._answer("segment", res, work)

    def segment_all(self, req, res):
        param = self.node.param

        def work():
            options = segment_all_options(req, param("segment_all_points_per_side"))
            header, image_hw, records, ids = self._session().segment_all(
                options, track=req.track, label=req.label,
                max_tracks=int(param("segment_all_max_tracks")),
                max_objects=int(param("max_objects")))
            fill_segment_all_response(res, header, image_hw, records, ids)
            tracked = f", {len(ids)} tracked" if req.track else ""
            none = ("" if records else ": none passed the thresholds (lower pred_iou_thresh "
                    "or stability_score_thresh)")
            return f"{len(records)} masks{tracked}{none}"
        return self._answer("segment_all", res, work)

    def remove(self, req, res):
        def work():
            self._session(active=False).remove(int(req.object_id))
            return f"removed object {req.object_id}"
        return self._answer("remove", res, work)

    def reset(self, req, res):
        def work():
            count = self._session(active=False).reset()
            keeper = self.node.keeper
            if keeper is not None:  # detections of before the reset start nothing after it
                keeper.drop_held()
            return f"removed {count} objects"
        return self._answer("reset", res, work)
