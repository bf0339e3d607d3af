"""The tracker as the node's threads share it: one lock, the id policy, frames by stamp.

The frame worker steps the tracker while service calls prompt it; every call holds one lock,
so a request is answered between two frames, on the frame it names. Each frame is given to
the tracker with its message header as the stamp, so results and past-frame prompts carry
the source frame's header with no ring of our own beside the tracker's. No rclpy here.
"""

import threading

from .conversions import stamp_key, stamp_text


class Session:
    """A configured tracker, serialised, with ids assigned as the node promises: a new
    object gets the lowest id above every id handed out since the last reset."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.lock = threading.Lock()
        self._next_id = 1
        self._object_ids = []  # as last seen by a reader that could not wait for the lock

    def step(self, rgb, header):
        """Track every object on a new frame; ``{id: TrackResult}``, stamped with
        ``header``."""
        with self.lock:
            return self.tracker.step(rgb, stamp=header)

    def object_ids(self, wait=True):
        """The tracked ids; with ``wait=False`` (a timer that must not stall behind a
        tracker call of several seconds) the ids as last seen when the lock is busy."""
        if self.lock.acquire(blocking=wait):
            try:
                self._object_ids = sorted(self.tracker.object_ids)
            finally:
                self.lock.release()
        return list(self._object_ids)

    def frame_for_stamp(self, stamp):
        """The ring frame whose header has ``stamp``; None for a zero stamp (the latest).
        Call with the lock held."""
        if not (stamp.sec or stamp.nanosec):
            return None
        tracker = self.tracker
        try:
            return tracker.frame_for_stamp(stamp_key(stamp), key=lambda h: stamp_key(h.stamp))
        except ValueError:
            ring = tracker.ring_stamps
            raise ValueError(
                f"no recent frame has stamp {stamp_text(stamp)}: the last {len(ring)} frames "
                f"span {stamp_text(ring[0].stamp)} .. {stamp_text(ring[-1].stamp)} (zero "
                f"stamp = the latest frame)") from None

    def segment(self, prompt, object_id=0, stamp=None, once=False):
        """Answer a prompt (``StreamingTracker.add_prompt``'s keywords) on the frame of
        ``stamp`` (None or zero: the latest): start a new object (``object_id`` 0), refine
        one, or with ``once`` answer without tracking. Returns ``(object id or 0,
        TrackResult)``; ValueError says what is wrong with the request."""
        with self.lock:
            tracker = self.tracker
            if tracker.latest_frame is None:
                raise ValueError("no camera frame received yet; a prompt needs a frame")
            if object_id and object_id not in tracker.object_ids:
                raise ValueError(f"unknown object id {object_id}; tracked ids: "
                                 f"{sorted(tracker.object_ids)} (use 0 for a new object)")
            frame = self.frame_for_stamp(stamp) if stamp is not None else None
            if once:
                return 0, tracker.segment_once(frame=frame, **prompt)
            new = not object_id
            if new:
                object_id = self._next_id
                while object_id in tracker.object_ids:
                    object_id += 1
            result = tracker.add_prompt(object_id, frame=frame, **prompt)
            if new:
                self._next_id = object_id + 1
            return object_id, result

    def remove(self, object_id):
        with self.lock:
            if object_id not in self.tracker.object_ids:
                raise ValueError(f"unknown object id {object_id}; tracked ids: "
                                 f"{sorted(self.tracker.object_ids)}")
            self.tracker.remove(object_id)

    def reset(self):
        """Forget every object; ids start again at 1. Returns how many there were."""
        with self.lock:
            count = len(self.tracker.object_ids)
            self.tracker.reset()
            self._next_id = 1
            return count
