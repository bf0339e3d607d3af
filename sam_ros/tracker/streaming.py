"""SAM 2 as a live multi-object tracker: frames arrive one at a time, forever.

Each frame is encoded once; every tracked object is conditioned on its own memory bank,
decoded and remembered, with all objects of a frame batched through memory attention,
the mask decoder and the memory encoder. Memory stays bounded (see ``memory_bank``). A
short ring of recent frames' encodings lets a prompt land on the frame a person actually
saw, after which the object is tracked again up to the present.

The per-frame computation is ``step`` (shared with the trainer) and follows Meta's
``SAM2VideoPredictor`` step for step (memory selection, multimask choice, memories stored in
bfloat16, binarised masks for prompted frames), so that its masks match the reference's.
"""

import collections
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
import torch

from sam_ros.model.common import autocast
from sam_ros.model.prompts import parse_mask, parse_points_and_box
from sam_ros.model.transforms import preprocess, to_model_coords, upscale_logits

from . import step
from .memory_bank import ObjectMemory


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
    time: float  # when it was taken, for a ring that spans a time (step's ``time``)
    image_hw: tuple
    features: Any  # ImageFeatures of batch 1


class StreamingTracker:
    """Track any number of objects over an unbounded stream of RGB frames.

    Options:
      precision: "float32" (default) or "bfloat16": autocast for the image encoder, memory
        attention and memory encoder (the fast path); the SAM heads stay float32.
      ring_size: how many frames keep their encodings for prompts on past frames (default
        8; 1 = only the latest frame). Each costs one frame's features (about 16 MB at
        image_size 1024 in float32), and a prompt k ring frames back costs k decodes.
      ring_span: without it (default) the ring is the last ``ring_size`` frames. With it,
        the ring reaches ``ring_span`` back in ``time`` (step's argument, e.g. seconds) with
        at most ``ring_size`` frames: the newest half kept as they come, the older ones
        thinned so that they spread over the span. A prompt there catches up through the
        kept frames only.
      max_cond_frames: cap on an object's conditioning (prompted) frames; beyond it the
        first prompt and the most recent ones are kept (default 8; SAM 2 itself has none).
      memory_dtype: storage type of memory features (default bfloat16, as the reference).
      mask_threshold: logit above which a pixel is in the mask (default 0).

    Not thread-safe: one caller at a time (the ROS node serialises calls).
    """

    def __init__(self, model, precision="float32", ring_size=8, max_cond_frames=8,
                 memory_dtype=torch.bfloat16, mask_threshold=0.0, ring_span=None):
        if ring_size < 1:
            raise ValueError("ring_size must be at least 1")
        if ring_span is not None and not ring_span > 0:
            raise ValueError(f"ring_span must be positive (or None), got {ring_span!r}")
        if max_cond_frames is not None and max_cond_frames < 2:
            raise ValueError("max_cond_frames must be at least 2 (or None for no cap)")
        autocast(model.device, precision)  # validates the name
        if not model.has_memory:
            raise ValueError(f"{model.config.name} has no memory to track with (an image-only "
                             f"model or checkpoint): tracking needs a SAM 2 / 2.1 video "
                             f"checkpoint")
        self.model = model
        self.precision = precision
        self.ring_size = ring_size
        self.ring_span = ring_span
        self.max_cond_frames = max_cond_frames
        self.memory_dtype = memory_dtype
        self.mask_threshold = mask_threshold
        cfg = model.config
        self.num_maskmem = cfg.num_maskmem
        self.max_obj_ptrs = cfg.max_obj_ptrs_in_encoder
        self._ring = []  # _Frame, oldest first
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

    @property
    def ring_stamps(self):
        """The stamps given with the ring's frames, oldest first."""
        return [f.stamp for f in self._ring]

    def frame_for_stamp(self, stamp, key=None):
        """Index of the ring frame that was given ``stamp``; ValueError if none is. ``key``,
        if given, is applied to each frame's stamp before comparing (e.g. to match a
        message header by its time alone)."""
        for f in self._ring:
            if (f.stamp if key is None else key(f.stamp)) == stamp:
                return f.index
        raise ValueError(f"no frame with stamp {stamp!r} in the ring of the last "
                         f"{len(self._ring)} frames")

    @torch.inference_mode()
    def step(self, image, stamp=None, time=None) -> Dict[int, TrackResult]:
        """Consume the next frame; return every tracked object's result on it. ``stamp`` is
        anything the frame is to be known by; ``time`` (default: the frame's index) is when
        it was taken, in ``ring_span``'s unit."""
        x = preprocess(image, self.model.image_size, self.model.device)
        with autocast(self.model.device, self.precision):
            features = self.model.encode_image(x).float()
        index = self._next_frame
        frame = _Frame(index, stamp, float(index if time is None else time),
                       tuple(image.shape[:2]), features)
        self._next_frame += 1
        self._encode_pending()  # before the ring moves on: its frame may leave the ring
        self._ring.append(frame)
        self._thin_ring()
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
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise ValueError(f"obj_id must be an integer, got {obj_id!r}")
        obj_id = int(obj_id)
        target, coords, point_labels, mask_t = self._parse_prompt(points, labels, box, mask,
                                                                  frame)
        self._encode_pending(except_frame=target.index)
        obj = self._objects.get(obj_id)
        if obj is None:
            obj = self._objects[obj_id] = ObjectMemory(obj_id)
        entry = self._decode_prompt(obj, target, coords, point_labels, mask_t, box is not None)
        obj.set_prompt_entry(target.index, entry)
        result = self._result(obj, target)
        later = [f for f in self._ring if f.index > target.index]
        if later:
            obj.forget_tracked_after(target.index)  # what tracking said after it is stale
            self._encode_pending()
            for f in later:
                if f.index not in obj.cond:
                    self._track(f, [obj])
        return result

    @torch.inference_mode()
    def segment_once(self, points=None, labels=None, box=None, mask=None,
                     frame=None) -> TrackResult:
        """Answer a prompt on a ring frame as a new object's first prompt is answered, and
        track nothing: no object is added and no memory is kept (``obj_id`` is None)."""
        target, coords, point_labels, mask_t = self._parse_prompt(points, labels, box, mask,
                                                                  frame)
        entry = self._decode_prompt(ObjectMemory(None), target, coords, point_labels, mask_t,
                                    box is not None)
        return self._result_of(None, entry, target)

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

    def _parse_prompt(self, points, labels, box, mask, frame):
        """The ring frame a prompt names and the prompt, checked: ``(frame, coords, labels,
        mask)``, with either the coordinates (and labels) or the mask set."""
        if not self._ring:
            raise ValueError("no frame yet: call step(image) before prompting")
        target = self._ring_frame(frame)
        coords, point_labels = parse_points_and_box(points, labels, box, target.image_hw)
        if coords is not None and len(coords) != 1:
            raise ValueError(f"one object per prompt: got {len(coords)} point sets or boxes")
        mask_t = None if mask is None else parse_mask(mask, target.image_hw)
        if coords is None and mask_t is None:
            raise ValueError("empty prompt: give points with labels, a box or a mask")
        if coords is not None and mask_t is not None:
            raise ValueError("give either points/box or a mask, not both")
        return target, coords, point_labels, mask_t

    def _ring_frame(self, frame):
        if frame is None:
            return self._ring[-1]
        for f in self._ring:
            if f.index == frame:
                return f
        oldest, newest = self._ring[0].index, self._ring[-1].index
        kept = (f"frames {oldest}..{newest} can be prompted" if newest - oldest < len(self._ring)
                else f"frames {', '.join(str(f.index) for f in self._ring)} can be prompted")
        if isinstance(frame, (int, np.integer)) and frame < oldest:
            raise ValueError(f"frame {frame} has left the ring of recent frames ({kept})")
        if isinstance(frame, (int, np.integer)) and frame < newest:
            raise ValueError(f"frame {frame} was not kept in the ring ({kept})")
        raise ValueError(f"frame {frame!r} is not a frame of the stream ({kept})")

    def _thin_ring(self):
        """Keep the ring within ``ring_size`` frames and, with ``ring_span``, within the
        span: the newest half as the frames come; past it, a frame stays only if it is at
        least ``ring_span`` / (the older half's size) after the one kept before it, so the
        older frames spread evenly over the span."""
        ring = self._ring
        if self.ring_span is not None:
            horizon = ring[-1].time - self.ring_span
            while len(ring) > 1 and ring[0].time < horizon:
                ring.pop(0)
            dense = max(1, self.ring_size // 2)
            older = self.ring_size - dense
            leaving = len(ring) - dense - 1  # the frame that has just left the newest half
            if older and leaving >= 1 and (
                    ring[leaving].time - ring[leaving - 1].time < self.ring_span / older):
                ring.pop(leaving)
        while len(ring) > self.ring_size:
            ring.pop(0)

    def _decode_prompt(self, obj, frame, coords, labels, mask, replaces_points):
        """Decode a prompt on ``frame`` for one object: ``step``'s prompt or mask step. As
        in SAM 2, a frame the object has not been decoded on yet is decoded without memory;
        a frame it was tracked on is corrected with its memory."""
        model = self.model
        if mask is not None:
            return step.mask_step(model, frame.features, mask[None, None])[1]
        previous = obj.entry(frame.index)
        initial = previous.initial if previous is not None else True
        coords = to_model_coords(torch.as_tensor(coords, device=model.device), frame.image_hw,
                                 model.image_size)
        labels = torch.as_tensor(labels, device=model.device)
        if initial:
            pix = model.without_memory(frame.features.embed)
        else:
            pix = step.attend(model, frame.features, [self._select(obj, frame)], self.precision)
        return step.prompt_step(model, frame.features, pix, coords, labels, previous, initial,
                                replaces_points)[1]

    def _select(self, obj, frame):
        return obj.select(frame.index, self.num_maskmem, self.max_obj_ptrs)

    def _track(self, frame, objects):
        """Decode ``frame`` for tracked objects from their memories, batched by layout."""
        groups = collections.defaultdict(list)
        for obj in objects:
            if frame.index in obj.cond:
                continue  # a prompted frame keeps its prompt's answer
            spatial, pointers = self._select(obj, frame)
            groups[(len(spatial), len(pointers))].append(obj)
        for group in groups.values():
            _, _, entry = step.tracked_step(self.model, frame.features,
                                            [self._select(o, frame) for o in group],
                                            self.precision, self.memory_dtype)
            for i, obj in enumerate(group):
                obj.recent[frame.index] = entry.row(i)

    def _encode_pending(self, except_frame=None):
        """Encode the memories of prompted frames that no click can change any more
        (all but ``except_frame``), batched per frame."""
        by_frame = collections.defaultdict(list)
        for obj in self._objects.values():
            for t, entry in obj.cond.items():
                if entry.pending and t != except_frame:
                    by_frame[t].append(entry)
        for t, entries in by_frame.items():
            memory = step.remember_prompt(
                self.model, self._ring_frame(t).features,
                torch.cat([e.low_res for e in entries]), torch.cat([e.score for e in entries]),
                self.precision, self.memory_dtype)
            for i, entry in enumerate(entries):
                entry.features = memory[i:i + 1]

    def _prune(self):
        ring = self.ring_frames
        for obj in self._objects.values():
            obj.prune(ring, self.num_maskmem, self.max_obj_ptrs, self.max_cond_frames)

    def _result(self, obj, frame):
        return self._result_of(obj.obj_id, obj.entry(frame.index), frame)

    def _result_of(self, obj_id, entry, frame):
        logits = upscale_logits(entry.low_res, frame.image_hw)[0, 0]
        logits = logits.cpu().numpy()
        score = float(entry.score)
        return TrackResult(obj_id=obj_id, frame=frame.index, stamp=frame.stamp,
                           mask=logits > self.mask_threshold, logits=logits, score=score,
                           visible=score > 0, iou=float(entry.iou))
