"""Segment everything: every mask on an image from a grid of point prompts.

The semantics and defaults are those of Meta's ``SamAutomaticMaskGenerator``
(segment-anything 1.0) and ``SAM2AutomaticMaskGenerator`` (sam2 1.1.0). Each grid point is
one foreground click; each of its candidate masks is kept when the model's predicted IoU
and the mask's stability (how little it changes when its logits are cut a little higher or
lower) are high enough; duplicates go by box non-maximum suppression; optional crops of the
image are segmented the same way and merged. It runs through ``SamImagePredictor``, so it
works for every model family the predictor serves, and needs no torchvision (the NMS is
here). Unlike the references it upscales to image size only the candidates that passed the
predicted-IoU test, and keeps each mask cropped to its box until the end: the same masks,
less time and memory.
"""

import math

import cv2
import numpy as np
import torch

from .predictor import SamImagePredictor
from .sam2 import SAM2
from .transforms import check_rgb_image

# Meta's default predicted-IoU threshold per family: segment-anything's, tuned for ViT-H,
# and sam2's, tuned for Hiera-L.
SAM_PRED_IOU_THRESH = 0.88
SAM2_PRED_IOU_THRESH = 0.8
# A mask whose box comes this close (pixels) to an edge of its crop that is not an edge of
# the image is likely cut off by the crop; a larger crop sees it whole (the references' value).
CROP_EDGE_TOLERANCE = 20.0


def point_grid(points_per_side):
    """``points_per_side``² points (x, y) in the unit square, the centres of an even grid's
    cells, row by row."""
    half_cell = 0.5 / points_per_side
    centres = np.linspace(half_cell, 1.0 - half_cell, points_per_side)
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def crop_boxes(image_hw, n_layers, overlap_ratio):
    """The crops to segment, ``(boxes, layers)`` (boxes [x0, y0, x1, y1], x1 and y1
    exclusive): the whole image (layer 0), then for each layer i = 1..n_layers a 2^i x 2^i
    grid of crops, column by column, whose neighbours overlap by ``overlap_ratio`` x the
    image's short side x 2 / 2^i."""
    h, w = image_hw
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        per_side = 2 ** layer
        overlap = int(overlap_ratio * min(h, w) * (2 / per_side))
        crop_w = math.ceil((w + overlap * (per_side - 1)) / per_side)
        crop_h = math.ceil((h + overlap * (per_side - 1)) / per_side)
        for i in range(per_side):
            x0 = (crop_w - overlap) * i
            for j in range(per_side):
                y0 = (crop_h - overlap) * j
                boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
                layers.append(layer)
    return boxes, layers


def stability_score(logits, mask_threshold, offset):
    """IoU of the masks cut at ``mask_threshold + offset`` and ``mask_threshold - offset``
    over the last two axes (the first lies inside the second, so it is a ratio of areas).
    Counted in int32, which is twice as fast as torch's default int64 here."""
    inner = (logits > mask_threshold + offset).flatten(-2).sum(-1, dtype=torch.int32)
    outer = (logits > mask_threshold - offset).flatten(-2).sum(-1, dtype=torch.int32)
    return inner / outer


def mask_boxes(masks):
    """Boxes [x0, y0, x1, y1] (int64, the first and last pixel rows/columns, inclusive) of
    K x H x W boolean masks; [0, 0, 0, 0] for an empty mask."""
    rows, cols = masks.any(-1), masks.any(-2)

    def first_and_last(hit):
        first = hit.byte().argmax(-1)
        last = hit.shape[-1] - 1 - hit.flip(-1).byte().argmax(-1)
        return first, last

    y0, y1 = first_and_last(rows)
    x0, x1 = first_and_last(cols)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return boxes.masked_fill(~rows.any(-1, keepdim=True), 0)


def box_nms(boxes, scores, iou_threshold, categories=None):
    """Greedy non-maximum suppression: going from the best score down (ties keep their
    order), a box is kept unless a kept box of its category overlaps it by IoU > threshold.
    Returns the kept indices, best first (``torchvision.ops.batched_nms``'s answer).

    IoUs are computed in float32 as torchvision does; a pair of empty boxes has none and
    never suppresses. The loop runs once per kept box over the boxes ranked after it, so
    memory stays linear in the number of boxes.
    """
    device = scores.device
    order = torch.sort(scores.float().cpu(), descending=True, stable=True).indices
    ranked = boxes.float().cpu()[order].numpy()
    x0, y0, x1, y1 = ranked.T
    areas = (x1 - x0) * (y1 - y0)
    same = None if categories is None else categories.cpu()[order].numpy()
    alive = np.ones(len(ranked), dtype=bool)
    kept = []
    for i in range(len(ranked)):
        if not alive[i]:
            continue
        kept.append(i)
        rest = slice(i + 1, None)
        width = np.maximum(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0)
        height = np.maximum(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0)
        inter = width * height
        with np.errstate(invalid="ignore", divide="ignore"):
            overlapping = inter / (areas[i] + areas[rest] - inter) > iou_threshold
        if same is not None:
            overlapping &= same[rest] == same[i]
        alive[rest] &= ~overlapping
    return order[torch.as_tensor(kept, dtype=torch.int64)].to(device)


def near_crop_edge(boxes, crop_box, image_box, tolerance=CROP_EDGE_TOLERANCE):
    """Which boxes (image coordinates) come within ``tolerance`` pixels of an edge of
    ``crop_box`` that is not also an edge of ``image_box`` (both [x0, y0, x1, y1])."""
    boxes = boxes.float()
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float32, device=boxes.device)
    near_crop = (boxes - crop).abs() <= tolerance
    near_image = (boxes - image).abs() <= tolerance
    return (near_crop & ~near_image).any(-1)


def remove_small_regions(mask, min_area, mode):
    """A boolean mask without its holes (``mode="holes"``: background regions, 8-connected,
    filled) or islands (``"islands"``: foreground regions, dropped) of fewer than
    ``min_area`` pixels, and whether anything changed. Islands all too small: the largest
    stays. A background region touching the image border counts as a hole too, as in the
    references."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    regions = (~mask if holes else mask).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(regions, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(areas < min_area) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(labels, small), True
    large = np.setdiff1d(np.arange(1, count), small)
    if large.size == 0:
        large = [int(np.argmax(areas)) + 1]
    return np.isin(labels, large), True


def label_image(records, image_hw):
    """An int32 H x W image of ``records`` (``AutomaticMaskGenerator.generate``'s), pixel
    value i + 1 for record i and 0 for none: larger masks are painted first so that smaller
    ones on top of them stay visible (a mask wholly under smaller ones does not show)."""
    labels = np.zeros(image_hw, np.int32)
    for i in sorted(range(len(records)), key=lambda i: -records[i]["area"]):
        labels[records[i]["segmentation"]] = i + 1
    return labels


class _Found:
    """Masks found so far, as parallel arrays on the CPU. Each mask is kept as the piece
    inside its box (boxes [x0, y0, x1, y1] inclusive, image coordinates) until the records
    are written, so that hundreds of candidates do not each hold a full-size image."""

    FIELDS = ("boxes", "predicted_iou", "stability", "points", "areas", "crop_boxes")

    def __init__(self, boxes, predicted_iou, stability, points, areas, crop_boxes, pieces):
        self.boxes, self.predicted_iou, self.stability = boxes, predicted_iou, stability
        self.points, self.areas, self.crop_boxes = points, areas, crop_boxes
        self.pieces = pieces

    def __len__(self):
        return len(self.pieces)

    def select(self, index):
        """The masks at ``index`` (int64 indices, in that order)."""
        index = index.cpu()
        fields = {name: getattr(self, name)[index] for name in self.FIELDS}
        return _Found(**fields, pieces=[self.pieces[i] for i in index.tolist()])

    @staticmethod
    def concat(parts):
        fields = {name: torch.cat([getattr(p, name) for p in parts]) for name in _Found.FIELDS}
        return _Found(**fields, pieces=[piece for p in parts for piece in p.pieces])

    def full_mask(self, i, image_hw):
        mask = np.zeros(image_hw, dtype=bool)
        x0, y0, x1, y1 = self.boxes[i].tolist()
        mask[y0:y1 + 1, x0:x1 + 1] = self.pieces[i]
        return mask

    def records(self, image_hw):
        out = []
        for i in range(len(self)):
            x0, y0, x1, y1 = self.boxes[i].tolist()
            cx0, cy0, cx1, cy1 = self.crop_boxes[i].tolist()
            out.append({
                "segmentation": self.full_mask(i, image_hw),
                "area": int(self.areas[i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": float(self.predicted_iou[i]),
                "point_coords": [self.points[i].tolist()],
                "stability_score": float(self.stability[i]),
                "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
            })
        return out


def _check(condition, message):
    if not condition:
        raise ValueError(message)


class AutomaticMaskGenerator:
    """Every mask on an image, found from a grid of point prompts (``generate``).

    ``model`` is a built model, or a ``SamImagePredictor`` to run through (its precision
    and device apply; ``generate`` replaces its image). Options and defaults are Meta's:

    - ``points_per_side``: the grid has points_per_side² points (or give ``point_grids``,
      one N x 2 array of (x, y) in [0, 1] per crop layer, instead);
      ``points_per_batch`` are decoded at once (memory grows with it).
    - ``pred_iou_thresh``: candidates whose predicted IoU is not above it are dropped
      (None: the family's default, 0.8 for SAM 2 models, 0.88 for SAM; 0 turns it off).
    - ``stability_score_thresh`` (0 turns it off) and ``stability_score_offset``: candidates
      whose stability score (``stability_score``) is below the threshold are dropped.
    - ``mask_threshold``: the logit cut of the masks (None: the predictor's, 0.0).
    - ``box_nms_thresh``: box IoU above which the lower-rated of two masks of one crop goes.
    - ``crop_n_layers``, ``crop_overlap_ratio``, ``crop_n_points_downscale_factor``,
      ``crop_nms_thresh``: also segment 2^i x 2^i crops for i = 1..crop_n_layers
      (``crop_boxes``), with points_per_side / factor^i points per side, and de-duplicate
      across crops preferring masks from smaller crops.
    - ``min_mask_region_area``: if above 0, holes and islands smaller than this are removed
      from every mask found, then box NMS runs again (preferring untouched masks), as
      segment-anything does; for every family (sam2 instead fills holes on the low-res
      logits with a CUDA extension, and never calls this step).
    - ``multimask_output``: decode each point's candidate masks (None: the predictor's
      default for the model: three for Meta's SAM and SAM 2 checkpoints, as both
      references use; the one trained mask for the bundled model).
    - ``use_m2m``: refine every candidate once more with its own low-resolution logits as
      mask prompt (sam2's option, off by default; works for every family).
    """

    def __init__(self, model, points_per_side=32, points_per_batch=64, pred_iou_thresh=None,
                 stability_score_thresh=0.95, stability_score_offset=1.0, mask_threshold=None,
                 box_nms_thresh=0.7, crop_n_layers=0, crop_nms_thresh=0.7,
                 crop_overlap_ratio=512 / 1500, crop_n_points_downscale_factor=1,
                 point_grids=None, min_mask_region_area=0, multimask_output=None,
                 use_m2m=False):
        self.predictor = model if isinstance(model, SamImagePredictor) \
            else SamImagePredictor(model)
        if pred_iou_thresh is None:
            pred_iou_thresh = SAM2_PRED_IOU_THRESH if isinstance(self.predictor.model, SAM2) \
                else SAM_PRED_IOU_THRESH
        if mask_threshold is None:
            mask_threshold = self.predictor.mask_threshold
        _check((points_per_side is None) != (point_grids is None),
               "give exactly one of points_per_side and point_grids")
        _check(isinstance(crop_n_layers, int) and crop_n_layers >= 0,
               f"crop_n_layers must be an integer >= 0, got {crop_n_layers!r}")
        _check(isinstance(points_per_batch, int) and points_per_batch >= 1,
               f"points_per_batch must be an integer >= 1, got {points_per_batch!r}")
        for name, value in (("pred_iou_thresh", pred_iou_thresh),
                            ("mask_threshold", mask_threshold)):
            _check(isinstance(value, (int, float)) and math.isfinite(value),
                   f"{name} must be a finite number, got {value!r}")
        _check(isinstance(min_mask_region_area, (int, float)) and min_mask_region_area >= 0,
               f"min_mask_region_area must be >= 0 (pixels), got {min_mask_region_area!r}")
        for name, value in (("stability_score_thresh", stability_score_thresh),
                            ("box_nms_thresh", box_nms_thresh),
                            ("crop_nms_thresh", crop_nms_thresh)):
            _check(isinstance(value, (int, float)) and 0.0 <= value <= 1.0,
                   f"{name} must be in [0, 1], got {value!r}")
        _check(isinstance(stability_score_offset, (int, float)) and stability_score_offset > 0,
               f"stability_score_offset must be > 0, got {stability_score_offset!r}")
        _check(isinstance(crop_overlap_ratio, (int, float)) and 0.0 <= crop_overlap_ratio < 1.0,
               f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio!r}")
        if point_grids is None:
            _check(isinstance(points_per_side, int) and points_per_side >= 1,
                   f"points_per_side must be an integer >= 1, got {points_per_side!r}")
            _check(isinstance(crop_n_points_downscale_factor, int)
                   and crop_n_points_downscale_factor >= 1,
                   f"crop_n_points_downscale_factor must be an integer >= 1, got "
                   f"{crop_n_points_downscale_factor!r}")
            sides = [int(points_per_side / crop_n_points_downscale_factor ** layer)
                     for layer in range(crop_n_layers + 1)]
            _check(min(sides) >= 1, f"crop layer {crop_n_layers} would get no points: "
                   f"{points_per_side} points per side / {crop_n_points_downscale_factor}^"
                   f"{crop_n_layers}")
            point_grids = [point_grid(side) for side in sides]
        else:
            _check(len(point_grids) == crop_n_layers + 1,
                   f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got "
                   f"{len(point_grids)}")
            point_grids = [np.asarray(grid, dtype=np.float64) for grid in point_grids]
            for grid in point_grids:
                _check(grid.ndim == 2 and grid.shape[1] == 2 and len(grid) > 0
                       and np.all((grid >= 0) & (grid <= 1)),
                       f"each point grid must be N x 2 (x, y) in [0, 1] with N > 0, got shape "
                       f"{grid.shape}")
        self.point_grids = point_grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = min_mask_region_area
        self.multimask_output = multimask_output
        self.use_m2m = use_m2m

    @torch.inference_mode()
    def generate(self, image):
        """Every mask found on an RGB uint8 H x W x 3 image, as a list of records (dicts):
        ``segmentation`` (bool H x W), ``area`` (pixels), ``bbox`` ([x, y, w, h] of the
        first and last pixel rows and columns, so a one-pixel mask has w = h = 0),
        ``predicted_iou``, ``stability_score``, ``point_coords`` ([[x, y]], the click that
        found it) and ``crop_box`` ([x, y, w, h] of the crop it was found in).

        In the references' order: best predicted IoU first; with crops, masks from smaller
        crops first; with ``min_mask_region_area``, masks it left untouched first.
        """
        check_rgb_image(image)
        image_hw = image.shape[:2]
        boxes, layers = crop_boxes(image_hw, self.crop_n_layers, self.crop_overlap_ratio)
        try:
            found = _Found.concat([self._segment_crop(image, box, self.point_grids[layer])
                                   for box, layer in zip(boxes, layers)])
        finally:
            self.predictor.reset_image()
        if len(boxes) > 1 and len(found):
            crops = found.crop_boxes.float()
            smaller_first = 1.0 / ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]))
            found = found.select(box_nms(found.boxes, smaller_first, self.crop_nms_thresh))
        if self.min_mask_region_area > 0 and len(found):
            found = self._remove_small_regions(found, image_hw)
        return found.records(image_hw)

    def _segment_crop(self, image, crop_box, grid):
        """The masks of one crop that survive its own NMS, in image coordinates."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        self.predictor.set_image(crop)
        points = grid * np.array([crop.shape[1], crop.shape[0]], dtype=np.float64)
        batches = [self._segment_points(points[i:i + self.points_per_batch], crop_box,
                                        image.shape[:2])
                   for i in range(0, len(points), self.points_per_batch)]
        found = _Found.concat(batches)
        return found.select(box_nms(found.boxes, found.predicted_iou, self.box_nms_thresh))

    def _segment_points(self, points, crop_box, image_hw):
        """Decode one batch of clicks (crop pixels) and keep the candidates that pass the
        predicted-IoU, stability and crop-edge tests."""
        predictor = self.predictor
        clicks = np.ones((len(points), 1), dtype=np.int64)
        low_res, ious = predictor.predict_low_res(points[:, None, :], clicks,
                                                  multimask_output=self.multimask_output)
        per_point = ious.shape[1]
        low_res, ious = low_res.flatten(0, 1)[:, None], ious.flatten()
        points = torch.as_tensor(points, dtype=torch.float32, device=ious.device)
        points = points.repeat_interleave(per_point, dim=0)
        if self.use_m2m:
            low_res, ious = self._refine(points, low_res)
        if self.pred_iou_thresh > 0:
            keep = ious > self.pred_iou_thresh
            low_res, ious, points = low_res[keep], ious[keep], points[keep]
        logits = predictor.logits_at_image_size(low_res)[:, 0]
        stability = stability_score(logits, self.mask_threshold, self.stability_score_offset)
        masks = logits > self.mask_threshold
        del logits
        keep = torch.ones_like(ious, dtype=torch.bool)
        if self.stability_score_thresh > 0:
            keep &= stability >= self.stability_score_thresh
        offset = torch.as_tensor(crop_box[:2] * 2, device=masks.device)
        local = mask_boxes(masks)
        boxes = local + offset
        h, w = image_hw
        if list(crop_box) != [0, 0, w, h]:
            keep &= ~near_crop_edge(boxes, crop_box, [0, 0, w, h])
        index = keep.nonzero()[:, 0]
        masks, local = masks[index].cpu().numpy(), local[index].tolist()
        pieces = [mask[y0:y1 + 1, x0:x1 + 1] for mask, (x0, y0, x1, y1) in zip(masks, local)]
        return _Found(
            boxes=boxes[index].cpu(), predicted_iou=ious[index].cpu(),
            stability=stability[index].cpu(), points=(points[index] + offset[:2]).cpu(),
            areas=torch.as_tensor([int(piece.sum()) for piece in pieces], dtype=torch.int64),
            crop_boxes=torch.as_tensor([crop_box] * len(pieces), dtype=torch.int64).reshape(-1, 4),
            pieces=pieces)

    def _refine(self, points, low_res):
        """sam2's mask-to-mask step: each candidate decoded again from its click and its own
        (clamped) low-resolution logits, one mask each."""
        refined, ious = [], []
        limit = self.predictor.model.low_res_logit_limit
        for i in range(0, len(points), self.points_per_batch):
            chunk = slice(i, i + self.points_per_batch)
            prior = low_res[chunk]
            if limit is not None:  # fed back as the predictor hands logits back
                prior = prior.clamp(-limit, limit)
            clicks = np.ones((len(prior), 1), dtype=np.int64)
            logits, iou = self.predictor.predict_low_res(
                points[chunk, None, :].cpu().numpy(), clicks, mask_input=prior.cpu().numpy(),
                multimask_output=False)
            refined.append(logits)
            ious.append(iou[:, 0])
        return torch.cat(refined), torch.cat(ious)

    def _remove_small_regions(self, found, image_hw):
        """segment-anything's post-processing: small holes and islands removed from every
        mask, then box NMS again with untouched masks preferred."""
        boxes, pieces, areas, untouched = found.boxes.clone(), list(found.pieces), \
            found.areas.clone(), []
        for i in range(len(found)):
            mask = found.full_mask(i, image_hw)
            mask, filled = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, dropped = remove_small_regions(mask, self.min_mask_region_area, "islands")
            untouched.append(not (filled or dropped))
            if filled or dropped:
                boxes[i] = mask_boxes(torch.from_numpy(mask)[None])[0]
                x0, y0, x1, y1 = boxes[i].tolist()
                pieces[i] = mask[y0:y1 + 1, x0:x1 + 1]
                areas[i] = int(pieces[i].sum())
        found = _Found(boxes, found.predicted_iou, found.stability, found.points, areas,
                       found.crop_boxes, pieces)
        keep = box_nms(boxes, torch.tensor(untouched, dtype=torch.float32),
                       max(self.box_nms_thresh, self.crop_nms_thresh))
        return found.select(keep)
