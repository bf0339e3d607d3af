"""The tracker as the node's threads share it: one lock, the id policy, labels, frames by stamp.

The frame worker steps the tracker while service calls prompt it; every call holds one lock,
so a request is answered between two frames, on the frame it names. The lock is re-entrant:
the worker holds it across the detector's work on a frame (``detector.py``), which calls
``segment`` and ``remove`` too. Each frame is given to the tracker with its message header
as the stamp (and the header's time as the time its ring spans), so results and past-frame
prompts carry the source frame's header with no ring of our own beside the tracker's. No
rclpy here.
"""

import collections
import threading

import numpy as np

from .conversions import stamp_key, stamp_text

MAX_OBJECT_ID = 65535  # the most a mono16 label image and LabelInfo's uint16 class id hold


def stamp_seconds(stamp):
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def pick_frame(headers, stamp):
    """``(position, note)`` of the frame a request's ``stamp`` names among ``headers`` (the
    frames held, oldest first): the one with that stamp, else the nearest when the stamp
    lies within their span (the note says which, and how far). ValueError outside it."""
    key = stamp_key(stamp)
    for position, header in enumerate(headers):
        if stamp_key(header.stamp) == key:
            return position, ""
    wanted = stamp_seconds(stamp)
    times = [stamp_seconds(h.stamp) for h in headers]
    if not times or not times[0] <= wanted <= times[-1]:
        span = (f"the {len(times)} frames held span {stamp_text(headers[0].stamp)} .. "
                f"{stamp_text(headers[-1].stamp)}" if times else "no frame is held")
        raise ValueError(f"no recent frame has stamp {stamp_text(stamp)}: {span} (zero stamp "
                         f"= the latest frame; parameter prompt_history sets the span)")
    nearest = min(range(len(times)), key=lambda i: abs(times[i] - wanted))
    return nearest, (f"no frame held has stamp {stamp_text(stamp)}: prompted on the nearest "
                     f"one, {stamp_text(headers[nearest].stamp)} "
                     f"({times[nearest] - wanted:+.3f} s)")


class Session:
    """A configured tracker, serialised, with ids assigned as the node promises (a new object
    gets the lowest id above every id handed out since the last reset, wrapping to the lowest
    free one after ``MAX_OBJECT_ID``) and a class label per object."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.lock = threading.RLock()
        self.labels = {}  # object id -> class label
        self._next_id = 1
        self._object_ids = []  # as last seen by a reader that could not wait for the lock
        self._latest = None  # (header, rgb) of the latest frame, for segment_all
        self.resets = 0  # how many times reset() ran: ids are handed out again after one

    def close(self):
        """Free the tracker; later calls raise ValueError. Returns its model's device."""
        with self.lock:
            device, self.tracker = self.tracker.model.device, None
        return device

    def _live(self):
        if self.tracker is None:
            raise ValueError("node is not configured: configure and activate it first")
        return self.tracker

    def step(self, rgb, header):
        """Track every object on a new frame; ``{id: TrackResult}``, stamped with
        ``header``."""
        with self.lock:
            results = self._live().step(rgb, stamp=header, time=stamp_seconds(header.stamp))
            self._latest = (header, rgb)
            return results

    def object_ids(self, wait=True):
        """The tracked ids; with ``wait=False`` (a timer that must not stall behind a
        tracker call of several seconds) the ids as last seen when the lock is busy."""
        if self.lock.acquire(blocking=wait):
            try:
                if self.tracker is not None:
                    self._object_ids = sorted(self.tracker.object_ids)
            finally:
                self.lock.release()
        return list(self._object_ids)

    def frame_for_stamp(self, stamp):
        """``(frame index, note)`` of the ring frame a request's ``stamp`` names
        (``pick_frame``); ``(None, "")`` for a zero stamp (the latest). Call with the lock
        held."""
        if not (stamp.sec or stamp.nanosec):
            return None, ""
        tracker = self._live()
        position, note = pick_frame(tracker.ring_stamps, stamp)
        return tracker.ring_frames[position], note

    def segment(self, prompt, object_id=0, stamp=None, once=False, label="", max_objects=0):
        """Answer a prompt (``StreamingTracker.add_prompt``'s keywords) on the frame of
        ``stamp`` (None or zero: the latest): start a new object (``object_id`` 0; refused
        when ``max_objects`` are tracked, 0 = no cap), refine one, or with ``once`` answer
        without tracking. Returns ``(object id or 0, TrackResult, note)``; ValueError says
        what is wrong with the request."""
        with self.lock:
            tracker = self._live()
            if tracker.latest_frame is None:
                raise ValueError("no camera frame received yet; a prompt needs a frame")
            if object_id and object_id not in tracker.object_ids:
                raise ValueError(f"unknown object id {object_id}; tracked ids: "
                                 f"{sorted(tracker.object_ids)} (use 0 for a new object)")
            if not (object_id or once) and 0 < max_objects <= len(tracker.object_ids):
                raise ValueError(f"{len(tracker.object_ids)} objects are tracked and "
                                 f"max_objects is {max_objects}: remove one (~/remove, "
                                 f"~/reset) or raise max_objects")
            frame, note = self.frame_for_stamp(stamp) if stamp is not None else (None, "")
            if once:
                return 0, tracker.segment_once(frame=frame, **prompt), note
            new = not object_id
            if new:
                object_id = self._free_id()
            result = tracker.add_prompt(object_id, frame=frame, **prompt)
            if new:  # the id is taken once the prompt is answered
                self._next_id = object_id + 1
            if new or label:
                self.labels[object_id] = label
            return object_id, result, note

    def segment_all(self, options, track=False, label="", max_tracks=16, max_objects=0):
        """Every mask on the latest frame (``AutomaticMaskGenerator(**options)``); with
        ``track``, a track started from each of the best ``max_tracks`` masks, never past
        ``max_objects`` tracked (0 = no cap). Returns ``(header, image size, records, object
        ids)``."""
        from sam_ros.model import AutomaticMaskGenerator

        with self.lock:
            tracker = self._live()
            if self._latest is None:
                raise ValueError("no camera frame received yet; segment_all needs a frame")
            header, rgb = self._latest
            records = AutomaticMaskGenerator(tracker.model, **options).generate(rgb)
            ids = []
            if max_objects:
                max_tracks = min(max_tracks, max(0, max_objects - len(tracker.object_ids)))
            for record in records[:max_tracks] if track else []:
                object_id = self._free_id()
                tracker.add_prompt(object_id, mask=record["segmentation"])
                self._next_id = object_id + 1
                self.labels[object_id] = label
                ids.append(object_id)
            return header, rgb.shape[:2], records, ids

    def _free_id(self):
        """The id a new object gets: the lowest unused one from the next id on. Past
        ``MAX_OBJECT_ID`` the count starts again at 1, so a node left running with a detector
        for days never publishes an id its label image would cut short."""
        in_use = self.tracker.object_ids
        if len(in_use) >= MAX_OBJECT_ID:
            raise ValueError(f"{len(in_use)} objects are tracked: every id up to "
                             f"{MAX_OBJECT_ID} is in use; remove some (~/remove, ~/reset)")
        object_id = self._next_id if self._next_id <= MAX_OBJECT_ID else 1
        while object_id in in_use:
            object_id = object_id % MAX_OBJECT_ID + 1
        return object_id

    def remove(self, object_id):
        with self.lock:
            tracker = self._live()
            if object_id not in tracker.object_ids:
                raise ValueError(f"unknown object id {object_id}; tracked ids: "
                                 f"{sorted(tracker.object_ids)}")
            tracker.remove(object_id)
            self.labels.pop(object_id, None)

    def reset(self):
        """Forget every object; ids start again at 1. Returns how many there were."""
        with self.lock:
            tracker = self._live()
            count = len(tracker.object_ids)
            tracker.reset()
            self.labels.clear()
            self._next_id = 1
            self.resets += 1
            return count


class ImageSession:
    """An image-only model (SAM, MobileSAM, an image-only SAM 2 save) behind the node: it
    answers ``once`` prompts on the recent frames it holds and tracks nothing (it has no
    memory to track with). The same calls as ``Session``."""

    tracker = None  # nothing to track with: the detector and lifetimes leave it alone
    resets = 0

    def __init__(self, predictor, ring_size):
        self.predictor = predictor
        self.name = predictor.model.config.name
        self.lock = threading.RLock()
        self.labels = {}
        self._frames = collections.deque(maxlen=ring_size)  # (header, rgb), oldest first
        self._encoded = None  # the header of the frame the predictor holds

    def close(self):
        with self.lock:
            device, self.predictor = self.predictor.model.device, None
        return device

    def step(self, rgb, header):
        with self.lock:
            self._frames.append((header, rgb))
        return {}

    def object_ids(self, wait=True):
        return []

    def segment(self, prompt, object_id=0, stamp=None, once=False, label="", max_objects=0):
        if not once:
            raise ValueError(f"{self.name} is an image-only model: it answers once: true "
                             f"requests; tracking needs SAM 2's memory (a SAM 2 / 2.1 "
                             f"checkpoint, e.g. sam2.1_hiera_tiny)")
        with self.lock:
            if self.predictor is None:
                raise ValueError("node is not configured: configure and activate it first")
            if not self._frames:
                raise ValueError("no camera frame received yet; a prompt needs a frame")
            position, note = (len(self._frames) - 1, "")
            if stamp is not None and (stamp.sec or stamp.nanosec):
                position, note = pick_frame([h for h, _ in self._frames], stamp)
            header, rgb = self._frames[position]
            if self._encoded is not header:
                self.predictor.set_image(rgb)
                self._encoded = header
            masks, ious, _ = self.predictor.predict(
                point_coords=prompt.get("points"), point_labels=prompt.get("labels"),
                box=prompt.get("box"), return_logits=True)
            best = int(np.argmax(ious))
            logits = masks[best]
            # no object score in these models: NaN says so
            return 0, TrackAnswer(header, logits > 0, logits, float("nan"), float(ious[best])), note

    def segment_all(self, options, track=False, label="", max_tracks=16, max_objects=0):
        from sam_ros.model import AutomaticMaskGenerator

        if track:
            raise ValueError(f"{self.name} is an image-only model: it cannot track what it "
                             f"finds (track: false lists the masks); tracking needs a SAM 2 "
                             f"/ 2.1 checkpoint")
        with self.lock:
            if self.predictor is None:
                raise ValueError("node is not configured: configure and activate it first")
            if not self._frames:
                raise ValueError("no camera frame received yet; segment_all needs a frame")
            header, rgb = self._frames[-1]
            self._encoded = None  # the generator encodes the frame, then forgets it
            records = AutomaticMaskGenerator(self.predictor, **options).generate(rgb)
            return header, rgb.shape[:2], records, []

    def remove(self, object_id):
        raise ValueError(f"unknown object id {object_id}: {self.name} tracks nothing")

    def reset(self):
        return 0


TrackAnswer = collections.namedtuple("TrackAnswer", "stamp mask logits score iou")
