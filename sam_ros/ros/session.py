"""The tracker as the node's threads share it: one lock, the id policy, labels, frames by stamp.

The frame worker steps the tracker while service calls prompt it; every call holds one lock,
so a request is answered between two frames, on the frame it names. The lock is re-entrant:
the worker holds it across the detector's work on a frame (``detector.py``), which calls
``segment`` and ``remove`` too. Each frame is given to the tracker with its message header
as the stamp (and the header's time as the time its ring spans), so results and past-frame
prompts carry the source frame's header with no ring of our own beside the tracker's. No
rclpy here.
"""

import threading

from .conversions import stamp_key, stamp_text


def stamp_seconds(stamp):
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


class Session:
    """A configured tracker, serialised, with ids assigned as the node promises (a new object
    gets the lowest id above every id handed out since the last reset) and a class label per
    object."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.lock = threading.RLock()
        self.labels = {}  # object id -> class label
        self._next_id = 1
        self._object_ids = []  # as last seen by a reader that could not wait for the lock
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
            return self._live().step(rgb, stamp=header, time=stamp_seconds(header.stamp))

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
        """``(frame index, note)`` of the ring frame a request's ``stamp`` names: the frame
        with that stamp, else the nearest frame the ring still holds when the stamp lies
        within the ring's span (the note says which, and how far); ``(None, "")`` for a zero
        stamp (the latest). ValueError outside the span. Call with the lock held."""
        if not (stamp.sec or stamp.nanosec):
            return None, ""
        tracker = self._live()
        key = stamp_key(stamp)
        headers = tracker.ring_stamps
        for index, header in zip(tracker.ring_frames, headers):
            if stamp_key(header.stamp) == key:
                return index, ""
        wanted = stamp_seconds(stamp)
        times = [stamp_seconds(h.stamp) for h in headers]
        if not times[0] <= wanted <= times[-1]:
            raise ValueError(
                f"no recent frame has stamp {stamp_text(stamp)}: the {len(times)} frames held "
                f"span {stamp_text(headers[0].stamp)} .. {stamp_text(headers[-1].stamp)} "
                f"(zero stamp = the latest frame; parameter prompt_history sets the span)")
        nearest = min(range(len(times)), key=lambda i: abs(times[i] - wanted))
        return tracker.ring_frames[nearest], (
            f"no frame held has stamp {stamp_text(stamp)}: prompted on the nearest one, "
            f"{stamp_text(headers[nearest].stamp)} ({times[nearest] - wanted:+.3f} s)")

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
                object_id = self._next_id
                while object_id in tracker.object_ids:
                    object_id += 1
            result = tracker.add_prompt(object_id, frame=frame, **prompt)
            if new:
                self._next_id = object_id + 1
            if new or label:
                self.labels[object_id] = label
            return object_id, result, note

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
