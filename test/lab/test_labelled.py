"""Labelled video in the DAVIS layout: read back as written, DAVIS's and YouTube-VOS's
layouts found, bad ones refused with what is wrong, scored by ``evaluate --dataset``
exactly as the generated clips it came from, and trained on by ``train --dataset``."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lab import evaluate, export_clips, train
from lab.labelled import VOID_ID, davis_palette, find_sequences, read_annotation, write_sequence
from lab.samples import PHOTOS, missing
from lab.synthetic import MAX_TARGETS, SceneGenerator, find_photos
from sam_ros.model import build_sam2

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture(scope="module")
def clip():
    return SceneGenerator(find_photos(PHOTOS), size=96).clip(7, num_frames=3, num_targets=3)


def write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 2:
        Image.fromarray(array).save(path)  # greyscale: values are ids
    else:
        cv2.imwrite(str(path), array)


def test_a_written_sequence_reads_back_as_it_was(tmp_path, clip):
    write_sequence(tmp_path, "scene", clip.frames, clip.masks)
    [sequence] = find_sequences(tmp_path)
    assert sequence.name == "scene" and len(sequence.frames) == 3
    loaded = sequence.load()
    assert np.array_equal(loaded.frames, clip.frames)  # lossless PNG frames
    present = [k for k in range(3) if clip.masks[:, k].any()]
    assert loaded.object_ids == [k + 1 for k in present]
    assert np.array_equal(loaded.masks, clip.masks[:, present])
    assert np.array_equal(loaded.visibility, clip.masks[:, present].any(axis=(2, 3)))
    with Image.open(sequence.annotations[0]) as label:  # DAVIS's palette: id 1 red, 2 green
        assert label.mode == "P" and label.getpalette()[3:9] == [128, 0, 0, 0, 128, 0]
    assert len(davis_palette()) == 768


def test_davis_and_youtube_vos_layouts(tmp_path):
    """A resolution folder (DAVIS's 480p) is part of the sequence name; frames without an
    annotation (YouTube-VOS labels every fifth) are left out; void (255) is no object."""
    frame = np.full((6, 8, 3), 90, np.uint8)
    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 1:4], ids[4, 5], ids[0, 7] = 3, 9, VOID_ID
    for name in ("00000", "00005", "00010"):
        write_image(tmp_path / "JPEGImages" / "480p" / "dogs" / f"{name}.jpg", frame)
    write_image(tmp_path / "JPEGImages" / "480p" / "dogs" / "00001.jpg", frame)
    for name in ("00000", "00005", "00010"):
        write_image(tmp_path / "Annotations" / "480p" / "dogs" / f"{name}.png", ids)
    [sequence] = find_sequences(tmp_path)
    assert sequence.name == "480p/dogs"
    assert [Path(f).stem for f in sequence.frames] == ["00000", "00005", "00010"]
    loaded = sequence.load()
    assert loaded.object_ids == [3, 9] and loaded.masks.shape == (3, 2, 6, 8)
    assert loaded.masks[0, 0].sum() == 6 and loaded.masks[0, 1].sum() == 1
    frames, labels = sequence.read([1], size=4)  # as training reads a window
    assert frames.shape == (1, 4, 4, 3) and labels.shape == (1, 4, 4)
    assert set(np.unique(labels)) <= {0, 3, 9, VOID_ID}


def test_void_pixels_count_for_neither_j_nor_f(tmp_path, clip):
    """Per-object scoring leaves void (255) out of both measures (as DAVIS's unsupervised
    evaluation does): a mask that spills onto void loses nothing, one that spills as far
    onto background does. DAVIS's semi-supervised scoring counts void as background."""
    ids = np.zeros((3, 32, 32), np.uint8)
    ids[:, 8:20, 8:20] = 1
    ids[:, 8:20, 20:24] = VOID_ID  # a void band along the object's right side
    for t in range(3):
        write_image(tmp_path / "JPEGImages" / "v" / f"{t:05d}.jpg", np.zeros((32, 32, 3), np.uint8))
        write_image(tmp_path / "Annotations" / "v" / f"{t:05d}.png", ids[t])
    loaded = find_sequences(tmp_path)[0].load()
    assert np.array_equal(loaded.void, ids == VOID_ID) and loaded.object_ids == [1]
    onto_void = loaded.masks[:, 0] | loaded.void
    onto_background = loaded.masks[:, 0].copy()
    onto_background[:, 8:20, 4:8] = True
    prediction = evaluate.ClipPrediction([0, 0], [0, 0], np.stack([onto_void, onto_background],
                                                                  axis=1), None, 0.0)
    scores = evaluate.score_clip(loaded, prediction)
    assert np.all(scores.J[:, 0] == 1) and np.all(scores.F[:, 0] == 1)
    assert np.all(scores.J[:, 1] == 0.75) and np.all(scores.F[:, 1] < 1)
    as_background = evaluate.score_clip(loaded, prediction, leave_out_void=False)
    assert np.array_equal(as_background.J[:, 0], as_background.J[:, 1])
    write_sequence(tmp_path / "plain", "p", clip.frames, clip.masks)
    assert find_sequences(tmp_path / "plain")[0].load().void is None


def test_an_object_that_shows_later_is_scored_from_where_it_first_shows(tmp_path, capsys):
    """YouTube-VOS's protocol: an object first showing on frame 3 is prompted there and
    scored on the frames after it, with memory and without, exactly as if its sequence
    began on frame 3 (its own memory, its own frames counted from its prompt)."""
    clip = SceneGenerator(find_photos(PHOTOS), size=96).clip(8, num_frames=8, num_targets=2)
    masks = clip.masks[:, :2].copy()
    masks[:3, 1] = False  # object 2 shows from frame 3 on
    assert masks[3:, 1].any(axis=(1, 2)).all() and masks[0, 0].any()
    write_sequence(tmp_path / "all", "late", clip.frames, masks)
    write_sequence(tmp_path / "from3", "late", clip.frames[3:], masks[3:, 1:])
    scored = {}
    for name in ("all", "from3"):
        # each target's own masks: with one target per pixel, object 1 would take pixels
        # from object 2 where they overlap, which it cannot do in "from3"
        evaluate.main(["--dataset", str(tmp_path / name), "--scoring", "per-object",
                       "--json", str(tmp_path / "s.json")])
        scored[name] = json.loads((tmp_path / "s.json").read_text())
    assert "1 object first showing after frame 0, prompted and scored from there: late:2@3" \
        in capsys.readouterr().out
    assert scored["all"]["setup"]["prompted_later"] == ["late:2@3"]
    assert scored["all"]["setup"]["objects"] == 2 and scored["from3"]["setup"]["objects"] == 1
    for late, alone in zip(scored["all"]["results"].values(),
                           scored["from3"]["results"].values()):
        assert late["per_target"]["targets"] == ["late:1", "late:2"]
        assert late["per_target"]["J&F"][1] == alone["per_target"]["J&F"][0]
    late_clicks, alone_clicks = (list(scored[name]["results"].values())[1]["one_click"]
                                 for name in ("all", "from3"))
    assert late_clicks["per_target_single_iou"][1] == alone_clicks["per_target_single_iou"][0]


def test_bad_layouts_are_refused_with_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="needs JPEGImages/ and Annotations/"):
        find_sequences(tmp_path)
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(ValueError, match="no annotated sequences"):
        find_sequences(tmp_path)
    ids = np.zeros((6, 8), np.uint8)
    write_image(tmp_path / "Annotations" / "a" / "00000.png", ids)
    with pytest.raises(ValueError, match="has no frame 00000"):
        find_sequences(tmp_path)
    write_image(tmp_path / "JPEGImages" / "a" / "00000.jpg", np.zeros((5, 8, 3), np.uint8))
    [sequence] = find_sequences(tmp_path)
    with pytest.raises(ValueError, match="is 8x6 but its frame is 8x5"):
        sequence.load()
    coloured = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(coloured)
    with pytest.raises(ValueError, match="indexed .palette. or greyscale"):
        read_annotation(coloured)


def test_evaluate_scores_an_exported_dataset_as_the_generated_clips(tmp_path):
    """``export_clips --held-out`` writes evaluate's clips with the targets it prompts, so
    ``evaluate --dataset --scoring per-object`` must give exactly the figures of
    ``evaluate`` itself; by default it scores as DAVIS does, on one frame fewer."""
    common = ["--videos", "2", "--frames", str(12)]
    export_clips.main([str(tmp_path / "set"), "--held-out", "--photos", str(PHOTOS), *common])
    evaluate.main(["--photos", str(PHOTOS), *common, "--json", str(tmp_path / "gen.json")])
    evaluate.main(["--dataset", str(tmp_path / "set"), "--scoring", "per-object",
                   "--json", str(tmp_path / "set.json")])
    generated, labelled = (json.loads((tmp_path / f).read_text())["results"]
                           for f in ("gen.json", "set.json"))
    assert list(generated) == list(labelled)
    for name in generated:
        assert generated[name]["objects"] > 0
        for key in ("J", "F", "J&F", "after_occlusion", "J_over_time"):
            assert labelled[name][key] == generated[name][key], (name, key)
        for key in ("J&F", "J&F_after_occlusion"):
            assert labelled[name]["per_target"][key] == generated[name]["per_target"][key]
        # how a generated target looks is not written out: a labelled one's is unknown
        assert None not in generated[name]["per_target"]["appearance"]
        assert set(labelled[name]["per_target"]["appearance"]) == {None}
        assert evaluate.by_appearance(labelled[name]) == {}
    evaluate.main(["--dataset", str(tmp_path / "set"), "--json", str(tmp_path / "davis.json")])
    davis = json.loads((tmp_path / "davis.json").read_text())
    assert davis["setup"]["scoring"] == "davis"
    for name, row in davis["results"].items():
        assert row["object_frames"] == labelled[name]["object_frames"] - row["objects"]


def test_training_takes_its_clips_from_a_dataset(tmp_path, clip):
    """Windows of a sequence, target first, padded to ``MAX_TARGETS``; then two steps of
    ``train --dataset`` write a loadable checkpoint."""
    root = tmp_path / "set"
    frames = np.concatenate([clip.frames] * 2)
    masks = np.concatenate([clip.masks] * 2)
    write_sequence(root, "long", frames, masks)
    write_sequence(root, "short", clip.frames[:1], clip.masks[:1])  # too short: never drawn
    stream = iter(train.LabelledClipStream(find_sequences(root), 64, 4, seed=0))
    for _ in range(5):
        window, targets = next(stream)
        assert window.shape == (4, 64, 64, 3) and window.dtype == torch.uint8
        assert targets.shape == (4, MAX_TARGETS, 64, 64) and targets[0, 0].any()
    with pytest.raises(ValueError, match="no labelled sequence has 7 annotated frames"):
        train.LabelledClipStream(find_sequences(root), 64, 7, seed=0)
    out = tmp_path / "tuned.pt"
    train.main(["--out", str(out), "--dataset", str(root), "--steps", "2", "--batch", "1",
                "--frames", "4", "--workers", "0", "--log-every", "0"])
    assert build_sam2("auto", checkpoint=out).config.name == "sam_ros_mini"


def test_fine_tuning_can_mix_in_generated_clips(tmp_path, clip):
    """``--dataset-odds 0.5``: about half of the clips are the labelled sequence's (here a
    single window, the same every time), the rest generated ones."""
    root = tmp_path / "set"
    write_sequence(root, "only", clip.frames, clip.masks)
    options = train.parse_args(["--out", "x.pt", "--dataset", str(root), "--dataset-odds",
                                "0.5", "--photos", str(PHOTOS), "--frames", "3"])
    stream = iter(train.clip_stream(options, 64))
    window, _ = find_sequences(root)[0].read(size=64)
    labelled = sum(np.array_equal(next(stream)[0].numpy(), window) for _ in range(40))
    assert 10 <= labelled <= 30, labelled
    for wrong in (["--dataset-odds", "0.5"], ["--dataset", str(root), "--photos", str(PHOTOS)],
                  ["--dataset", str(root), "--dataset-odds", "0"]):
        with pytest.raises(SystemExit):
            train.parse_args(["--out", "x.pt", *wrong])


def test_a_dataset_without_objects_is_refused(tmp_path, clip):
    write_sequence(tmp_path, "empty", clip.frames, np.zeros_like(clip.masks))
    stream = iter(train.LabelledClipStream(find_sequences(tmp_path), 32, 2, seed=0))
    with pytest.raises(ValueError, match="no object on their first frame"):
        next(stream)


def test_davis_scoring_needs_a_frame_to_score_between_the_first_and_the_last(tmp_path, clip,
                                                                             capsys):
    write_sequence(tmp_path, "v", clip.frames, clip.masks)
    assert evaluate.parse_args(["--dataset", str(tmp_path)]).scoring == "davis"
    assert evaluate.parse_args(["--photos", str(PHOTOS)]).scoring == "per-object"
    assert evaluate.parse_args(["--dataset", str(tmp_path), "--frames", "2", "--scoring",
                                "per-object"]).frames == 2
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--dataset", str(tmp_path), "--frames", "2"])
    assert "need --frames >= 3" in capsys.readouterr().err
