"""Tracks from a detector: which detections continue which tracks, which start new tracks,
which re-prompt a track the tracker has lost; and how long a track lives.

Pure functions of explicit state (``Track`` records, kept between frames by ``TrackTable``),
with time passed in as seconds (the frames' stamps), no clock, no ROS. Boxes are
``(x_min, y_min, x_max, y_max)`` in pixels; a mask's inclusive box (``mask_stats``,
ObjectTrack.bbox) can be given as it is, being one pixel smaller makes no difference here.

Matching is one-to-one: the assignment of largest total box IoU (the Hungarian method,
``scipy.optimize.linear_sum_assignment``) over the pairs whose IoU reaches ``iou_floor`` and
whose classes agree (a track or a detection without a class agrees with any). Greedy
matching (best pair first) can take the one detection two tracks both overlap and leave a
track unmatched and its object to start a duplicate; the assignment does not.

A pair of the same class (both named) also qualifies when one box lies almost wholly inside
the other (``contain_floor`` of the smaller box): a mask that has bled onto the background
(or shrunk to a part of its object) overlaps its own detection by little IoU, and without
this its object would start a new track on every frame while the old one drifts; matched,
it is re-prompted with the detection's box (its IoU is under ``reprompt_iou``). Tracks
without a label never match this way (a track a person started on a table must not take
the detection of a cup on it).
"""

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Detection:
    box: tuple  # (x_min, y_min, x_max, y_max), pixels
    class_id: str = ""
    score: float = 1.0


@dataclass(frozen=True)
class Track:
    track_id: int
    box: tuple | None  # the box on the latest frame it was visible (or where it started)
    visible: bool  # on the latest frame
    last_seen: float  # s: stamp of the latest frame it was visible (or of its start)
    frames_lost: int = 0  # frames since it was last visible (0 while visible)
    label: str = ""


@dataclass(frozen=True)
class AssociationOptions:
    score_threshold: float = 0.5  # detections scoring less are ignored
    classes: frozenset = frozenset()  # the classes used; empty: all
    iou_floor: float = 0.3  # a track and a detection overlapping less never match
    reprompt_iou: float = 0.5  # a visible track matched with less is re-prompted (mask drifted)
    contain_floor: float = 0.8  # same class, the smaller box this much inside the other: a pair
    lost_frames: int = 3  # a track not visible for this many frames is lost...
    lost_s: float = 0.0  # ...or for this many seconds (0: frames only)
    duplicate_iou: float = 0.5  # an unmatched detection overlapping a track this much: no start
    max_objects: int = 16  # tracks at most; 0: no cap
    class_aware: bool = True  # a track matches detections of its own class only

    def __post_init__(self):
        if not (0 < self.iou_floor <= 1 and 0 < self.duplicate_iou <= 1
                and 0 < self.contain_floor <= 1):
            raise ValueError(f"iou_floor {self.iou_floor}, duplicate_iou "
                             f"{self.duplicate_iou} and contain_floor {self.contain_floor} "
                             f"must be in (0, 1]")
        if self.lost_frames < 1 or self.lost_s < 0 or self.max_objects < 0:
            raise ValueError(f"need lost_frames >= 1, lost_s >= 0, max_objects >= 0, got "
                             f"{self.lost_frames}, {self.lost_s}, {self.max_objects}")


@dataclass
class Association:
    """What to do with one message of detections; indices are into its detections."""

    matches: list = field(default_factory=list)  # (track_id, index): the detection continues it
    reprompts: list = field(default_factory=list)  # (track_id, index) of those: prompt the
    # track again with the detection's box (lost, or its mask no longer fits the detection)
    starts: list = field(default_factory=list)  # indices that start new tracks, best score first
    refused: int = 0  # new tracks refused by max_objects
    duplicates: int = 0  # unmatched detections on an existing track or start: not started
    ignored: int = 0  # below the score threshold, a class not used, or a bad box


def associate(tracks, detections, now, options=AssociationOptions()):
    """Match ``detections`` (``Detection``) to ``tracks`` (``Track``, the tracks alive) at
    time ``now`` (s, the detections' stamp). New tracks start from unmatched detections,
    best score first, unless one overlaps a track or an earlier start of its class by
    ``duplicate_iou`` or more, or ``max_objects`` tracks exist."""
    result = Association()
    used = []
    for index, det in enumerate(detections):
        if _usable(det, options):
            used.append(index)
        else:
            result.ignored += 1
    boxed = [track for track in tracks if track.box is not None]
    boxes = np.array([detections[i].box for i in used], np.float64).reshape(-1, 4)
    classes = [detections[i].class_id for i in used]
    track_boxes = np.array([t.box for t in boxed], np.float64).reshape(-1, 4)
    overlap = _iou(track_boxes, boxes)
    agree = _agree([t.label for t in boxed], classes, options)
    inside = _same_class([t.label for t in boxed], classes) & (
        _containment(track_boxes, boxes) >= options.contain_floor)
    pair = (agree & (overlap >= options.iou_floor)) | (inside & (overlap > 0))
    weight = np.where(pair, overlap, 0.0)
    matched = np.zeros(len(used), bool)
    for row, col in zip(*linear_sum_assignment(weight, maximize=True)):
        if weight[row, col] > 0:
            track, index = boxed[row], used[col]
            matched[col] = True
            result.matches.append((track.track_id, index))
            if _lost(track, now, options) or (track.visible
                                              and overlap[row, col] < options.reprompt_iou):
                result.reprompts.append((track.track_id, index))
    # New tracks, best score first; each must stand apart from the tracks and earlier starts.
    rest = sorted(np.flatnonzero(~matched).tolist(), key=lambda col: -detections[used[col]].score)
    on_track = np.max(overlap, axis=0, where=agree, initial=0.0).tolist()
    room = options.max_objects - len(tracks) if options.max_objects else len(rest)
    among = _iou(boxes, boxes) * _agree(classes, classes, options) if room > 0 else None
    started = []
    for col in rest:
        near = max(on_track[col], among[col, started].max()) if started else on_track[col]
        if near >= options.duplicate_iou:
            result.duplicates += 1
        elif len(started) >= room:
            result.refused += 1
        else:
            started.append(col)
    result.starts = [used[col] for col in started]
    return result


def expired(tracks, now, max_lost_s):
    """Ids of the tracks not visible for ``max_lost_s`` seconds or more by ``now`` (s); none
    when ``max_lost_s`` is 0."""
    if max_lost_s <= 0:
        return []
    return [t.track_id for t in tracks if not t.visible and now - t.last_seen >= max_lost_s]


class TrackTable:
    """The ``Track`` records the node keeps between frames, for ``associate`` and
    ``expired``."""

    def __init__(self):
        self._tracks = {}

    def __len__(self):
        return len(self._tracks)

    def __contains__(self, track_id):
        return track_id in self._tracks

    @property
    def tracks(self):
        return list(self._tracks.values())

    def add(self, track_id, box, stamp, label=""):
        """A track started at ``stamp`` (s) on ``box`` (a detection's, or a prompt's)."""
        self._tracks[track_id] = Track(track_id, _box(box), True, stamp, 0, label)

    def remove(self, track_id):
        self._tracks.pop(track_id, None)

    def relabel(self, track_id, label):
        """Give a track another class label (a class a detector gave, a label a service
        set)."""
        self._tracks[track_id] = replace(self._tracks[track_id], label=label)

    def observe(self, stamp, boxes):
        """One tracked frame at ``stamp`` (s): ``boxes`` maps each visible track's id to its
        mask's box. A track left out, or mapped to None, was not visible; an id the table
        does not hold yet starts a track (label "")."""
        for track_id, box in boxes.items():
            if box is not None and track_id not in self._tracks:
                self.add(track_id, box, stamp)
        for track_id, track in self._tracks.items():
            box = boxes.get(track_id)
            if box is not None:
                self._tracks[track_id] = replace(track, box=_box(box), visible=True,
                                                 last_seen=stamp, frames_lost=0)
            else:
                self._tracks[track_id] = replace(track, visible=False,
                                                 frames_lost=track.frames_lost + 1)

    def expire(self, now, max_lost_s):
        """Drop the tracks ``expired`` at ``now``; their ids."""
        gone = expired(self._tracks.values(), now, max_lost_s)
        for track_id in gone:
            del self._tracks[track_id]
        return gone


def _box(box):
    return None if box is None else tuple(float(v) for v in box)


def _usable(det, options):
    x_min, y_min, x_max, y_max = det.box
    return (all(math.isfinite(v) for v in det.box) and x_max > x_min and y_max > y_min
            and math.isfinite(det.score) and det.score >= options.score_threshold
            and (not options.classes or det.class_id in options.classes))


def _agree(labels, classes, options):
    """Whether each of ``labels`` (tracks' or detections') may go with each of ``classes``
    (detections'): the same class, or either has none. A bool matrix."""
    if not options.class_aware:
        return np.ones((len(labels), len(classes)), bool)
    codes = {"": -1}
    a = np.array([codes.setdefault(c, len(codes)) for c in labels], np.int64)
    b = np.array([codes.setdefault(c, len(codes)) for c in classes], np.int64)
    return (a[:, None] < 0) | (b[None, :] < 0) | (a[:, None] == b[None, :])


def _same_class(labels, classes):
    """Whether each of ``labels`` names the same class as each of ``classes``, both named."""
    a = np.array(labels, object).reshape(-1, 1)
    b = np.array(classes, object).reshape(1, -1)
    return (a == b) & (a != "")


def _lost(track, now, options):
    return not track.visible and (track.frames_lost >= options.lost_frames or (
        options.lost_s > 0 and now - track.last_seen >= options.lost_s))


def _areas(a, b):
    """The intersections of every box in ``a`` (N x 4) with every box in ``b`` (M x 4),
    N x M, and the boxes' areas."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    return inter, _area(a), _area(b)


def _area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _iou(a, b):
    """IoU of every box in ``a`` (N x 4) with every box in ``b`` (M x 4): N x M."""
    inter, area_a, area_b = _areas(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _containment(a, b):
    """The share of the smaller box of each pair (``a`` N x 4, ``b`` M x 4) that lies in the
    other: N x M."""
    inter, area_a, area_b = _areas(a, b)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
