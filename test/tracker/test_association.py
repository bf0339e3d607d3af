"""Detections to tracks (``sam_ros.tracker.association``), driven the way the node drives
it: each frame the tracker's boxes are observed into a ``TrackTable``, then the frame's
detections are associated and new tracks started. The tracker here is a stand-in that sees
every object where it is, unless the test hides it."""

import os
import subprocess
import sys

import numpy as np
import pytest

from sam_ros.tracker.association import (
    AssociationOptions,
    Detection,
    TrackTable,
    associate,
    expired,
)

FPS = 10.0


def box_at(x, y, w=60, h=40):
    return (float(x), float(y), float(x + w), float(y + h))


def jittered(box, rng, px=3.0):
    return tuple(float(v) for v in np.add(box, rng.uniform(-px, px, 4)))


class Run:
    """A track table fed frame by frame; new tracks get ids 1, 2, ... like the node's."""

    def __init__(self, options=None):
        self.table, self.next_id, self.frame = TrackTable(), 1, 0
        self.options = options or AssociationOptions()

    @property
    def now(self):
        return self.frame / FPS

    def step(self, seen, detections):
        """``seen``: {track id: box} the tracker shows this frame; then ``detections``."""
        self.table.observe(self.now, seen)
        result = associate(self.table.tracks, detections, self.now, self.options)
        for index in result.starts:
            self.table.add(self.next_id, detections[index].box, self.now,
                           detections[index].class_id)
            self.next_id += 1
        self.frame += 1
        return result


def test_one_track_per_object_over_50_frames():
    rng = np.random.default_rng(0)
    run = Run()
    paths = {"cup": (100, 80, 3, 1), "book": (300, 200, -2, 2), "ball": (170, 120, 4, 0)}
    owner = {}  # object -> track id, from the frame it started
    for frame in range(50):
        truth = {name: box_at(x + vx * frame, y + vy * frame)
                 for name, (x, y, vx, vy) in paths.items()}
        detections = [Detection(jittered(box, rng), name, 0.9) for name, box in truth.items()]
        seen = {owner[name]: jittered(box, rng, 2.0) for name, box in truth.items()
                if name in owner}
        result = run.step(seen, detections)
        if frame == 0:
            assert sorted(result.starts) == [0, 1, 2]
            owner = {detections[i].class_id: track_id for track_id, i in
                     zip((1, 2, 3), result.starts, strict=True)}
        else:
            assert result.starts == [] and result.reprompts == [] and result.duplicates == 0
            assert sorted((t, detections[i].class_id) for t, i in result.matches) == sorted(
                (track_id, name) for name, track_id in owner.items())
    assert len(run.table) == 3
    assert {t.label for t in run.table.tracks} == set(paths)


def greedy(tracks, detections, floor):
    """Best pair first: what the assignment must not do."""
    boxes_t = np.array([t.box for t in tracks])
    boxes_d = np.array([d.box for d in detections])
    from sam_ros.tracker.association import _iou
    overlap = _iou(boxes_t, boxes_d)
    pairs = []
    while overlap.max() >= floor:
        row, col = np.unravel_index(np.argmax(overlap), overlap.shape)
        pairs.append((tracks[row].track_id, int(col)))
        overlap[row, :] = overlap[:, col] = 0
    return pairs


def test_overlapping_objects_where_greedy_matching_fails():
    """Two side by side objects; the detector's boxes are shifted so that detection 0
    overlaps track 1 best but is the only one track 2 overlaps enough. Greedy matching gives
    detection 0 to track 1 and leaves track 2 unmatched (and detection 1 a duplicate start);
    the assignment matches both."""
    table = TrackTable()
    table.add(1, (0, 0, 100, 100), 0.0)
    table.add(2, (60, 0, 160, 100), 0.0)
    # IoU: track 1 with detection 0 0.6, with detection 1 0.43; track 2 with 0 0.48, with 1 0
    detections = [Detection((25, 0, 125, 100)), Detection((-40, 0, 60, 100))]
    options = AssociationOptions()
    assert greedy(table.tracks, detections, options.iou_floor) == [(1, 0)]
    result = associate(table.tracks, detections, 0.0, options)
    assert sorted(result.matches) == [(1, 1), (2, 0)]
    assert result.starts == [] and result.duplicates == 0


def test_a_lost_track_is_reprompted_under_its_old_id():
    run = Run(AssociationOptions(lost_frames=5))
    box = box_at(200, 150)
    run.step({}, [Detection(box, "cup")])
    for _ in range(3):  # tracked
        result = run.step({1: box}, [Detection(box, "cup")])
        assert result.matches == [(1, 0)] and result.reprompts == []
    for _ in range(4):  # hidden, the detector too; not yet lost
        assert run.step({}, []).matches == []
    result = run.step({}, [Detection(box, "cup")])  # the tracker missed it 5 frames: lost
    assert result.matches == [(1, 0)] and result.reprompts == [(1, 0)]
    assert result.starts == [] and len(run.table) == 1
    # a short miss (under lost_frames) is left to the tracker
    run.step({1: box}, [])
    result = run.step({}, [Detection(box, "cup")])
    assert result.matches == [(1, 0)] and result.reprompts == []


def test_lost_after_seconds():
    table = TrackTable()
    table.add(1, box_at(0, 0), 0.0, "cup")
    table.observe(0.1, {})
    options = AssociationOptions(lost_frames=100, lost_s=0.5)
    detections = [Detection(box_at(0, 0), "cup")]
    assert associate(table.tracks, detections, 0.4, options).reprompts == []
    assert associate(table.tracks, detections, 0.5, options).reprompts == [(1, 0)]


def test_a_drifted_mask_is_reprompted():
    """Visible, but its mask's box overlaps the detection less than reprompt_iou."""
    table = TrackTable()
    table.add(1, (0, 0, 100, 100), 0.0, "cup")
    table.observe(0.1, {1: (0, 0, 100, 40)})  # the mask shrank to the object's top
    result = associate(table.tracks, [Detection((0, 0, 100, 100), "cup")], 0.1)
    assert result.matches == [(1, 0)] and result.reprompts == [(1, 0)]


def test_a_mask_bled_onto_the_background_is_reprompted_not_duplicated():
    """The mask's box has grown to four times the object's (IoU 0.25 with its detection,
    under iou_floor): of the same class, the detection lies inside it, so it is matched and
    re-prompted, not started again on every frame. A track without a label, or of another
    class, is not matched this way: the detection starts a track of its own."""
    detection = Detection((100, 100, 150, 150), "book")
    for label, matched in (("book", True), ("", False), ("cup", False)):
        table = TrackTable()
        table.add(1, (100, 50, 200, 150), 0.0, label)  # the object plus the wall above it
        result = associate(table.tracks, [detection], 0.0)
        if matched:
            assert result.matches == [(1, 0)] and result.reprompts == [(1, 0)], label
            assert result.starts == [] and result.duplicates == 0
        else:
            assert result.matches == [] and result.starts == [0], label
    # the other way round: the mask shrank to a part of its object
    table = TrackTable()
    table.add(1, (100, 100, 120, 120), 0.0, "book")
    result = associate(table.tracks, [Detection((95, 95, 160, 160), "book")], 0.0)
    assert result.matches == [(1, 0)] and result.reprompts == [(1, 0)]


def test_expiry_after_max_lost_s():
    table = TrackTable()
    table.add(1, box_at(0, 0), 0.0)
    table.add(2, box_at(100, 0), 0.0)
    for frame in range(1, 31):  # track 1 departs after frame 10; track 2 stays
        table.observe(frame / FPS, {2: box_at(100, 0)} | ({1: box_at(0, 0)} if frame <= 10
                                                          else {}))
    # track 1 was last seen at 1.0 s
    assert expired(table.tracks, 2.9, 2.0) == []
    assert expired(table.tracks, 3.0, 2.0) == [1]
    assert expired(table.tracks, 100.0, 0.0) == []  # 0: never
    assert table.expire(3.0, 2.0) == [1] and 1 not in table and len(table) == 1
    assert table.expire(100.0, 2.0) == []  # track 2 is visible


def test_a_flood_is_capped_at_max_objects():
    """200 boxes a frame: max_objects tracks start, best scores first, the rest are
    refused (counted), every frame."""
    rng = np.random.default_rng(1)
    run = Run(AssociationOptions(max_objects=16, score_threshold=0.0))
    grid = [box_at(40 * (i % 20), 40 * (i // 20), 30, 30) for i in range(200)]
    scores = rng.random(200)
    for frame in range(5):
        detections = [Detection(jittered(b, rng, 1.0), "thing", float(s))
                      for b, s in zip(grid, scores, strict=True)]
        seen = {t.track_id: t.box for t in run.table.tracks}
        result = run.step(seen, detections)
        assert result.refused == 200 - 16
        assert len(run.table) == 16
        if frame == 0:
            assert sorted(result.starts) == sorted(np.argsort(-scores)[:16].tolist())
        else:
            assert result.starts == [] and len(result.matches) == 16


def test_cap_counts_existing_tracks():
    table = TrackTable()
    for i in range(3):
        table.add(i + 1, box_at(100 * i, 0), 0.0)
    detections = [Detection(box_at(100 * i, 300)) for i in range(4)]
    result = associate(table.tracks, detections, 0.0, AssociationOptions(max_objects=5))
    assert len(result.starts) == 2 and result.refused == 2
    assert associate(table.tracks, detections, 0.0,
                     AssociationOptions(max_objects=0)).starts == [0, 1, 2, 3]


def test_threshold_and_class_filter():
    detections = [Detection(box_at(0, 0), "cup", 0.9), Detection(box_at(100, 0), "cup", 0.3),
                  Detection(box_at(200, 0), "person", 0.9), Detection(box_at(300, 0), "", 0.9),
                  Detection((10, 10, 5, 50), "cup", 0.9), Detection(box_at(400, 0), "cup",
                                                                     float("nan"))]
    options = AssociationOptions(score_threshold=0.5, classes=frozenset({"cup"}))
    result = associate([], detections, 0.0, options)
    assert result.starts == [0] and result.ignored == 5
    result = associate([], detections, 0.0, AssociationOptions(score_threshold=0.5))
    assert result.starts == [0, 2, 3] and result.ignored == 3


def test_classes_keep_tracks_apart():
    """A person in a chair: the boxes overlap a lot, the classes keep them apart."""
    table = TrackTable()
    table.add(1, (100, 50, 200, 250), 0.0, "person")
    detections = [Detection((100, 100, 210, 260), "chair"), Detection((98, 52, 202, 248),
                                                                      "person")]
    result = associate(table.tracks, detections, 0.0)
    assert result.matches == [(1, 1)] and result.starts == [0] and result.duplicates == 0
    blind = associate(table.tracks, detections, 0.0, AssociationOptions(class_aware=False))
    assert blind.matches == [(1, 1)] and blind.starts == [] and blind.duplicates == 1
    # a track without a label goes with any class
    table.add(2, (400, 50, 500, 250), 0.0)
    result = associate(table.tracks, [Detection((402, 50, 500, 252), "dog")], 0.0)
    assert result.matches == [(2, 0)]


def test_duplicates_in_one_message_start_one_track():
    detections = [Detection((0, 0, 100, 100), "cup", 0.8), Detection((5, 3, 102, 98), "cup", 0.9),
                  Detection((300, 0, 400, 100), "cup", 0.7)]
    result = associate([], detections, 0.0)
    assert result.starts == [1, 2] and result.duplicates == 1


def test_observe_and_tracks():
    table = TrackTable()
    table.observe(0.0, {4: (1, 2, 3, 4), 5: None})
    assert [t.track_id for t in table.tracks] == [4] and table.tracks[0].label == ""
    table.observe(0.1, {})
    (track,) = table.tracks
    assert not track.visible and track.frames_lost == 1 and track.last_seen == 0.0
    assert track.box == (1.0, 2.0, 3.0, 4.0)
    table.remove(4)
    assert len(table) == 0


@pytest.mark.parametrize("bad", [{"iou_floor": 0.0}, {"duplicate_iou": 1.5},
                                 {"contain_floor": 0.0},
                                 {"lost_frames": 0}, {"lost_s": -1.0}, {"max_objects": -1}])
def test_bad_options(bad):
    with pytest.raises(ValueError):
        AssociationOptions(**bad)


def test_the_perception_cores_import_without_torch_or_rclpy():
    code = ("import sys, sam_ros.tracker.association, sam_ros.tracker.depth; "
            "print(sorted({'torch', 'rclpy'} & set(sys.modules)))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.strip() == "[]"
