"""How long a track lives, and tracks from a detector (``sam_ros.tracker.association``).

Every frame the frame worker, holding the session's lock, brings the track table up to date
with the tracker (tracks started or removed by services, labels), observes the frame's
boxes, drops the tracks not visible for ``max_lost_s`` seconds, then applies the detection
messages waiting: matched one-to-one to the tracks, an unmatched detection starts a track
with its class as label, and a matched track that is lost (or whose mask has drifted off
the detection) is prompted again with the detection's box under its old id. A matched
track without a label takes the detection's class.

Which frame: a message is due once a frame at least as new as its stamp has been tracked,
and is applied on the frame of its stamp (the nearest frame the tracker still holds); so a
detector that is faster or slower than the tracker, or answers for a frame the node
skipped, lands where it looked. Of the messages due after a frame only the newest is
applied (the older ones are counted as dropped: a detector faster than the tracker sends
the same objects again). A message stamped ahead of every frame for ``PATIENCE`` frames (a
detector stamping with its own clock) is applied on the latest frame, as is one without a
stamp; one older than the frames held is dropped (``detections_stale``).

Bounded: the subscription callback keeps the newest ``HELD`` messages, the worker applies
one message per frame, and ``max_objects`` caps the tracks, so a flooding detector costs
one matching and at most ``max_objects`` prompts per frame. No rclpy here.
"""

import collections
import threading

import numpy as np

from sam_ros.tracker.association import AssociationOptions, Detection, TrackTable, associate

from .conversions import stamp_text
from .session import stamp_seconds

HELD = 4  # detection messages waiting for the worker, at most
PATIENCE = 2  # frames a message stamped ahead of every frame waits before it is applied


def detection_options(threshold, classes, max_objects):
    """``AssociationOptions`` from the node's parameters (``classes``: comma-separated)."""
    return AssociationOptions(
        score_threshold=float(threshold), max_objects=int(max_objects),
        classes=frozenset(c.strip() for c in classes.split(",") if c.strip()))


def detections_of(msg):
    """The ``Detection``s of a vision_msgs/Detection2DArray: axis-aligned boxes (rotation
    ignored), each with its best hypothesis's class and score (none: class "", score 1)."""
    out = []
    for det in msg.detections:
        centre, w, h = det.bbox.center.position, det.bbox.size_x, det.bbox.size_y
        best = max((r.hypothesis for r in det.results), key=lambda h: h.score, default=None)
        out.append(Detection((centre.x - w / 2, centre.y - h / 2, centre.x + w / 2,
                              centre.y + h / 2),
                             best.class_id if best else "", best.score if best else 1.0))
    return out


class TrackKeeper:
    """The track table of one configured session, the detection messages waiting, and the
    counters. ``warn(key, text)`` logs a warning, rate-limited per key."""

    def __init__(self, warn):
        self._warn = warn
        self.table = TrackTable()
        self._resets = 0  # the session's resets the table has seen
        self._lock = threading.Lock()
        self._held = collections.deque()  # [message, frames it has waited]
        self.activate()

    def activate(self):
        """A new activation: counters from zero, no detections held."""
        self.drop_held()
        self.stats = dict(detections_in=0, detections_dropped=0, detections_stale=0,
                          tracks_started=0, tracks_reacquired=0, tracks_reprompted=0,
                          tracks_expired=0, tracks_refused=0, detections_rejected=0)

    def drop_held(self):
        """Forget the detection messages not applied yet."""
        with self._lock:
            self._held.clear()

    def on_detections(self, msg):
        """Executor thread: keep the message for the worker (the newest ``HELD``)."""
        with self._lock:
            self.stats["detections_in"] += 1
            if len(self._held) >= HELD:
                self._held.popleft()
                self.stats["detections_dropped"] += 1
            self._held.append([msg, 0])

    def update(self, session, header, results, tracks, options, max_lost_s):
        """After the frame ``header`` was tracked (``results``, their ObjectTrackArray
        ``tracks``): expire, then apply the detections due. Returns the frame's results
        with the tracks started, re-prompted or dropped brought up to date, or None when
        there were none."""
        now = stamp_seconds(header.stamp)
        changed, gone = set(), []
        with session.lock:
            tracker = session.tracker
            if tracker is None:
                return None
            if session.resets != self._resets:  # the ids start again: so does the table
                self.table, self._resets = TrackTable(), session.resets
            self._sync(set(tracker.object_ids), session.labels, now)
            self.table.observe(now, {o.id: (o.bbox if o.visible else None)
                                     for o in tracks.objects})
            for obj_id in self.table.expire(now, max_lost_s):
                session.remove(obj_id)
                gone.append(obj_id)
            self.stats["tracks_expired"] += len(gone)
            msg = self._due(now)
            if msg is not None:
                changed = self._apply(session, msg, now, options)
            if not (changed or gone):
                return None
            fresh = {obj_id: tracker.result(obj_id) for obj_id in changed
                     if obj_id in tracker.object_ids}
        return {obj_id: r for obj_id, r in {**results, **fresh}.items() if obj_id not in gone}

    def _sync(self, object_ids, labels, now):
        """The table holds the tracker's objects, with their labels."""
        for track in self.table.tracks:
            if track.track_id not in object_ids:
                self.table.remove(track.track_id)
        for obj_id in object_ids:
            if obj_id not in self.table:
                self.table.add(obj_id, None, now, labels.get(obj_id, ""))
        for track in self.table.tracks:
            if track.label != labels.get(track.track_id, ""):
                self.table.relabel(track.track_id, labels.get(track.track_id, ""))

    def _due(self, now):
        """The message to apply after the frame at ``now`` (s), or None: the newest of
        those stamped no later than it (or zero) or that have waited ``PATIENCE`` frames;
        the other ones due are dropped."""
        with self._lock:
            due, waiting = [], collections.deque()
            for entry in self._held:
                msg, waited = entry
                if stamp_seconds(msg.header.stamp) <= now or waited >= PATIENCE:
                    due.append(msg)
                else:
                    entry[1] += 1
                    waiting.append(entry)
            self._held = waiting
            self.stats["detections_dropped"] += max(len(due) - 1, 0)
        return max(due, key=lambda m: stamp_seconds(m.header.stamp), default=None)

    def _apply(self, session, msg, now, options):
        """One message of detections (the session's lock held); the ids it started,
        re-prompted or labelled."""
        stamp = msg.header.stamp
        when = stamp_seconds(stamp)
        if not 0 < when <= now:  # no stamp, or ahead of every frame: the latest frame
            stamp, when = None, now
        try:
            if stamp is not None:
                session.frame_for_stamp(stamp)
        except ValueError as e:
            self.stats["detections_stale"] += 1
            self._warn("stale", f"detections of {stamp_text(msg.header.stamp)} dropped: {e} "
                       f"[{self.stats['detections_stale']} so far]")
            return set()
        detections = detections_of(msg)
        plan = associate(self.table.tracks, detections, when, options)
        records = {t.track_id: t for t in self.table.tracks}
        changed = set()
        for track_id, index in plan.matches:
            if not records[track_id].label and detections[index].class_id:
                session.labels[track_id] = detections[index].class_id
                self.table.relabel(track_id, detections[index].class_id)
                changed.add(track_id)
        for track_id, index in plan.reprompts:
            if self._prompt(session, detections[index], stamp, when, track_id):
                changed.add(track_id)
                key = "tracks_reprompted" if records[track_id].visible else "tracks_reacquired"
                self.stats[key] += 1
        for index in plan.starts:
            obj_id = self._prompt(session, detections[index], stamp, when, 0,
                                  max_objects=options.max_objects)
            if obj_id:
                changed.add(obj_id)
                self.stats["tracks_started"] += 1
        if plan.refused:
            self.stats["tracks_refused"] += plan.refused
            self._warn("refused", f"max_objects ({options.max_objects}) tracks exist: "
                       f"{plan.refused} new detections refused "
                       f"[{self.stats['tracks_refused']} so far]")
        return changed

    def _prompt(self, session, detection, stamp, when, object_id, max_objects=0):
        """Prompt ``object_id`` (0: a new object, labelled with the detection's class) with
        the detection's box on the frame of ``stamp`` (None: the latest); its id, or 0
        when the tracker refused the box."""
        label = detection.class_id if not object_id else ""
        try:
            obj_id, _, _ = session.segment({"box": np.asarray(detection.box, np.float64)},
                                           object_id=object_id, stamp=stamp, label=label,
                                           max_objects=max_objects)
        except ValueError as e:
            self.stats["detections_rejected"] += 1
            self._warn("rejected", f"detection box {[round(v, 1) for v in detection.box]} "
                       f"not used: {e} "
                       f"[{self.stats['detections_rejected']} so far]")
            return 0
        self.table.add(obj_id, detection.box, when, label or session.labels.get(obj_id, ""))
        return obj_id
