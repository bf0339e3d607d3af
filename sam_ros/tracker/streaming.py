"""SAM 2 as a live multi-object tracker: frames arrive one at a time, forever.

Each frame is encoded once; every tracked object is conditioned on its own memory bank,
decoded and remembered, with all objects of a frame batched through memory attention,
the mask decoder and the memory encoder. Memory stays bounded (see ``memory_bank``). A
short ring of recent frames' encodings lets a prompt land on the frame a person actually
saw, after which the object is tracked again up to the present.

The per-frame computation follows Meta's ``SAM2VideoPredictor`` step for step (memory
selection, multimask choice, memories stored in bfloat16, binarised masks for prompted
frames), so that its masks match the reference's.
"""

import collections
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
import torch
import torch.nn.functional as F

from ..model.common import autocast
from ..model.prompts import parse_mask, parse_points_and_box
from ..model.transforms import preprocess, to_model_coords, upscale_logits
from .memory_bank import MemoryEntry, ObjectMemory, memory_tokens

# Clamp of a previous prediction fed back as a mask prompt (as in the reference).
PREV_LOGIT_LIMIT = 32.0


@dataclass
class TrackResult:
    """One object on one frame."""

    obj_id: int
    frame: int  # index of the frame in the stream
    stamp: Any  # the stamp given with that frame to step()
    mask: np.ndarray  # bool H x W, the frame's own resolution
    logits: np.ndarray  # float32 H x W mask logits before thresholding
    score: float  # object-score logit: > 0 means the object is present
    visible: bool
    iou: float  # the decoder's estimate of the mask's IoU


@dataclass
class _Frame:
    index: int
    stamp: Any
    image_hw: tuple
    features: Any  # ImageFeatures of batch 1


class StreamingTracker:
    """Track any number of objects over an unbounded stream of RGB frames.

    Options:
      precision: "float32" (default) or "bfloat16": autocast for the image encoder, memory
        attention and memory encoder (the fast path); the SAM heads stay float32.
      ring_size: how many recent frames keep their encodings for prompts on past frames
        (default 8; 1 = only the latest frame). Each costs one frame's features
        (about 16 MB at image_size 1024 in float32).
      max_cond_frames: cap on an object's conditioning (prompted) frames; beyond it the
        first prompt and the most recent ones are kept (default 8; SAM 2 itself has none).
      memory_dtype: storage type of memory features (default bfloat16, as the reference).
      mask_threshold: logit above which a pixel is in the mask (default 0).

    Not thread-safe: one caller at a time (the ROS node serialises calls).
    """

    def __init__(self, model, precision="float32", ring_size=8, max_cond_frames=8,
                 memory_dtype=torch.bfloat16, mask_threshold=0.0):
        if ring_size < 1:
            raise ValueError("ring_size must be at least 1")
        if max_cond_frames is not None and max_cond_frames < 2:
            raise ValueError("max_cond_frames must be at least 2 (or None for no cap)")
        autocast(model.device, precision)  # validates the name
        self.model = model
        self.precision = precision
        self.ring_size = ring_size
        self.max_cond_frames = max_cond_frames
        self.memory_dtype = memory_dtype
        self.mask_threshold = mask_threshold
        cfg = model.config
        self.num_maskmem = cfg.num_maskmem
        self.max_obj_ptrs = cfg.max_obj_ptrs_in_encoder
        self._ring = collections.deque(maxlen=ring_size)
        self._objects: Dict[int, ObjectMemory] = {}
        self._next_frame = 0

    # ------------------------------------------------------------- public API

    @property
    def object_ids(self):
        return list(self._objects)

    @property
    def latest_frame(self):
        """Index of the newest frame, or None before the first."""
        return self._ring[-1].index if self._ring else None

    @property
    def ring_frames(self):
        """Indices of the frames a prompt can still land on, oldest first."""
        return [f.index for f in self._ring]

    def frame_for_stamp(self, stamp):
        """Index of the ring frame that was given ``stamp``; ValueError if none is."""
        for f in self._ring:
            if f.stamp == stamp:
                return f.index
        raise ValueError(f"no frame with stamp {stamp!r} in the ring of the last "
                         f"{len(self._ring)} frames")

    @torch.inference_mode()
    def step(self, image, stamp=None) -> Dict[int, TrackResult]:
        """Consume the next frame; return every tracked object's result on it."""
        x = preprocess(image, self.model.image_size, self.model.device)
        with autocast(self.model.device, self.precision):
            features = self.model.encode_image(x).float()
        frame = _Frame(self._next_frame, stamp, tuple(image.shape[:2]), features)
        self._next_frame += 1
        self._ring.append(frame)
        self._encode_pending()
        self._track(frame, list(self._objects.values()))
        self._prune()
        return {obj_id: self._result(obj, frame) for obj_id, obj in self._objects.items()}

    @torch.inference_mode()
    def add_prompt(self, obj_id, points=None, labels=None, box=None, mask=None,
                   frame=None) -> TrackResult:
        """Start or refine object ``obj_id`` with clicks, a box or a mask.

        ``points`` are (x, y) pixels of the frame with ``labels`` 1 (foreground) or 0
        (background); ``box`` is [x_min, y_min, x_max, y_max]; ``mask`` is a boolean
        H x W mask of the frame. ``frame`` is the index of a frame still in the ring
        (default: the latest). Clicks on a frame where the object was already prompted
        add to the clicks given there; a box or a mask replaces them. When ``frame`` is
        in the past, the object is then tracked again up to the latest frame. Returns the
        object's result on ``frame``.
        """
        if not self._ring:
            raise ValueError("no frame yet: call step(image) before add_prompt()")
        target = self._ring_frame(frame)
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise ValueError(f"obj_id must be an integer, got {obj_id!r}")
        obj_id = int(obj_id)
        coords, point_labels = parse_points_and_box(points, labels, box, target.image_hw)
        if coords is not None and len(coords) != 1:
            raise ValueError(f"one object per prompt: got {len(coords)} point sets or boxes")
        mask_t = None if mask is None else parse_mask(mask, target.image_hw)
        if coords is None and mask_t is None:
            raise ValueError("empty prompt: give points with labels, a box or a mask")
        if coords is not None and mask_t is not None:
            raise ValueError("give either points/box or a mask, not both")

        self._encode_pending(except_frame=target.index)
        obj = self._objects.get(obj_id)
        if obj is None:
            obj = self._objects[obj_id] = ObjectMemory(obj_id)
        entry = self._decode_prompt(obj, target, coords, point_labels, mask_t, box is not None)
        obj.set_prompt_entry(target.index, entry)
        result = self._result(obj, target)
        later = [f for f in self._ring if f.index > target.index]
        if later:
            self._encode_pending()
            for f in later:
                if f.index not in obj.cond:
                    self._track(f, [obj])
        return result

    def result(self, obj_id, frame=None) -> TrackResult:
        """Object ``obj_id``'s result on a ring frame (default: the latest)."""
        obj = self._require(obj_id)
        target = self._ring_frame(frame)
        if obj.entry(target.index) is None:
            raise ValueError(f"object {obj_id} has no result on frame {target.index}")
        return self._result(obj, target)

    def remove(self, obj_id):
        """Stop tracking ``obj_id`` and forget its memory."""
        self._require(obj_id)
        del self._objects[obj_id]

    def reset(self):
        """Forget every object. Frames already seen stay in the ring and can be
        prompted on."""
        self._objects.clear()

    # -------------------------------------------------------------- internals

    def _require(self, obj_id):
        if obj_id not in self._objects:
            raise ValueError(f"unknown object id {obj_id}; tracked: {sorted(self._objects)}")
        return self._objects[obj_id]

    def _ring_frame(self, frame):
        if frame is None:
            return self._ring[-1]
        for f in self._ring:
            if f.index == frame:
                return f
        oldest, newest = self._ring[0].index, self._ring[-1].index
        if isinstance(frame, (int, np.integer)) and frame < oldest:
            raise ValueError(f"frame {frame} has left the ring of recent frames "
                             f"(frames {oldest}..{newest} can be prompted)")
        raise ValueError(f"frame {frame!r} is not a frame of the stream "
                         f"(frames {oldest}..{newest} can be prompted)")

    def _decode_prompt(self, obj, frame, coords, labels, mask, replaces_points):
        """Decode a prompt on ``frame`` for one object (batch of one)."""
        model = self.model
        feats = frame.features
        previous = obj.entry(frame.index)
        # As in SAM 2, a frame the object has not been decoded on yet is decoded without
        # memory; a frame it was tracked on is corrected with its memory.
        initial = previous.initial if previous is not None else True
        prev_logits = None
        if mask is None:
            coords = to_model_coords(torch.as_tensor(coords, device=model.device),
                                     frame.image_hw, model.image_size)
            labels = torch.as_tensor(labels, device=model.device)
            if previous is not None and previous.low_res is not None:
                prev_logits = previous.low_res.clamp(-PREV_LOGIT_LIMIT, PREV_LOGIT_LIMIT)
                keep_clicks = previous.from_prompt and previous.points is not None
                if keep_clicks and not replaces_points:
                    coords = torch.cat([previous.points, coords], dim=1)
                    labels = torch.cat([previous.labels, labels], dim=1)
        if mask is not None:
            mask = mask.to(model.device)[None, None].float()
            if mask.shape[-2:] != (model.image_size, model.image_size):
                mask = F.interpolate(mask, size=(model.image_size,) * 2, mode="bilinear",
                                     align_corners=False, antialias=True)
                mask = (mask >= 0.5).float()
            out = model.mask_as_prediction(feats.embed, feats.high_res, mask)
        else:
            if initial:
                pix = model.without_memory(feats.embed)
            else:
                pix = self._attend([obj], frame)
            multimask = model.use_multimask(initial, labels.shape[1])
            out = model.predict_masks(pix, feats.high_res, coords, labels,
                                      mask_input=prev_logits, multimask=multimask)
        return MemoryEntry(
            obj_ptr=out.obj_ptr.float(), score=out.object_score_logits.float(),
            low_res=out.low_res_masks.float(), iou=float(_chosen_iou(out)[0]),
            points=None if mask is not None else coords,
            labels=None if mask is not None else labels,
            initial=initial, from_prompt=True)

    def _attend(self, objects, frame):
        """Memory attention for objects that share a memory layout, on one frame."""
        model = self.model
        picks = [o.select(frame.index, self.num_maskmem, self.max_obj_ptrs) for o in objects]
        memory, memory_pos, num_ptr = memory_tokens(model, picks)
        b = len(objects)
        embed = frame.features.embed.expand(b, -1, -1, -1)
        pos = frame.features.pos.expand(b, -1, -1, -1)
        with autocast(model.device, self.precision):
            out = model.attend_memory(embed, pos, memory, memory_pos, num_ptr)
        return out.float()

    def _track(self, frame, objects):
        """Decode ``frame`` for tracked objects from their memories, batched by layout."""
        groups = collections.defaultdict(list)
        for obj in objects:
            if frame.index in obj.cond:
                continue  # a prompted frame keeps its prompt's answer
            spatial, pointers = obj.select(frame.index, self.num_maskmem, self.max_obj_ptrs)
            groups[(len(spatial), len(pointers))].append(obj)
        model = self.model
        feats = frame.features
        for group in groups.values():
            b = len(group)
            pix = self._attend(group, frame)
            high_res = [h.expand(b, -1, -1, -1) for h in feats.high_res]
            out = model.predict_masks(pix, high_res, multimask=model.use_multimask(False, 0))
            with autocast(model.device, self.precision):
                memory, _ = model.encode_memory(feats.embed.expand(b, -1, -1, -1),
                                                out.high_res_masks,
                                                out.object_score_logits, binarize=False)
            ious = _chosen_iou(out)
            for i, obj in enumerate(group):
                obj.recent[frame.index] = MemoryEntry(
                    obj_ptr=out.obj_ptr[i:i + 1].float(),
                    score=out.object_score_logits[i:i + 1].float(),
                    low_res=out.low_res_masks[i:i + 1].float(), iou=float(ious[i]),
                    features=memory[i:i + 1].to(self.memory_dtype))

    def _encode_pending(self, except_frame=None):
        """Encode the memories of prompted frames that no click can change any more
        (all but ``except_frame``), batched per frame."""
        by_frame = collections.defaultdict(list)
        for obj in self._objects.values():
            for t, entry in obj.cond.items():
                if entry.pending and t != except_frame:
                    by_frame[t].append(entry)
        model = self.model
        for t, entries in by_frame.items():
            feats = self._ring_frame(t).features
            low_res = torch.cat([e.low_res for e in entries])
            high_res = F.interpolate(low_res, size=(model.image_size,) * 2, mode="bilinear",
                                     align_corners=False)
            scores = torch.cat([e.score for e in entries])
            with autocast(model.device, self.precision):
                memory, _ = model.encode_memory(feats.embed.expand(len(entries), -1, -1, -1),
                                                high_res, scores, binarize=True)
            for i, entry in enumerate(entries):
                entry.features = memory[i:i + 1].to(self.memory_dtype)

    def _prune(self):
        oldest = self._ring[0].index
        for obj in self._objects.values():
            obj.prune(oldest, self.num_maskmem, self.max_obj_ptrs, self.max_cond_frames)

    def _result(self, obj, frame):
        entry = obj.entry(frame.index)
        logits = upscale_logits(entry.low_res, frame.image_hw)[0, 0]
        logits = logits.cpu().numpy()
        score = float(entry.score)
        return TrackResult(obj_id=obj.obj_id, frame=frame.index, stamp=frame.stamp,
                           mask=logits > self.mask_threshold, logits=logits, score=score,
                           visible=score > 0, iou=entry.iou)


def _chosen_iou(out):
    """IoU estimate of the mask the heads chose, per object."""
    ious = out.ious.float()
    return ious.max(dim=1).values.cpu().tolist()
