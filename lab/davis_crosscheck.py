"""Cross-check ``evaluate``'s J and F against DAVIS 2017's own evaluation code.

The toolkit (github.com/davisvideochallenge/davis2017-evaluation) is not ours to bundle, so
this takes a clone of it. It writes ``evaluate``'s held-out clips in the DAVIS layout
(``--void`` paints a void block into every third annotation after the first), runs a model
on them with memory and without, and scores each prediction twice: as ``evaluate --dataset``
scores it (``--scoring davis``), and with the toolkit's own code on the label image a submission
would hold: its reader (``DAVIS.get_all_masks``), its per-sequence scoring
(``DAVISEvaluation._evaluate_semisupervised``: ``db_eval_iou``, ``db_eval_boundary``) and
its per-object mean (``utils.db_statistics``). Only the step from label image to object
masks is ours, written as the toolkit's ``Results.read_masks`` does it. It prints both
scores and the largest gaps, per object and per frame.

    .venv/bin/pip install scikit-image scipy     # what the toolkit needs beyond ours
    .venv/bin/python -m lab.davis_crosscheck ~/davis2017-evaluation --void
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lab.evaluate import (
    DEFAULT_FRAMES,
    DEFAULT_VIDEOS,
    Setting,
    held_out_clips,
    labelled_clips,
    prompted_targets,
    run_and_score,
    summarize,
)
from lab.labelled import VOID_ID, find_sequences, read_annotation, write_annotation, write_sequence
from lab.synthetic import SceneGenerator, find_photos
from sam_ros.model import BUNDLED_CHECKPOINT, build_sam2

VOID_BLOCK = (40, 60)  # rows x columns of the block --void paints


def import_toolkit(clone):
    """The toolkit's reader, evaluation and utils modules, from its clone."""
    sys.path.insert(0, str(clone))
    try:
        from davis2017 import davis, evaluation, utils
    except ImportError as exc:
        raise SystemExit(f"cannot import the toolkit from {clone}: {exc} (it needs "
                         "scikit-image, scipy, tqdm and Pillow)")
    return davis, evaluation, utils


def write_datasets(ours, theirs, clips, void, rng):
    """The clips as labelled video in ``ours`` (what ``evaluate --dataset`` reads), and the
    toolkit's layout in ``theirs``: 480p folders, the same annotation files (linked) and
    JPEG frames, which it only counts."""
    names = []
    for i, clip in enumerate(clips):
        name = f"clip{i:04d}"
        write_sequence(ours, name, clip.frames, clip.masks[:, prompted_targets(clip)[0]])
        labels = Path(ours, "Annotations", name)
        if void:
            for png in sorted(labels.iterdir())[1::3]:  # the first frame holds the prompts
                ids = read_annotation(png)
                top = rng.integers(ids.shape[0] - VOID_BLOCK[0])
                left = rng.integers(ids.shape[1] - VOID_BLOCK[1])
                ids[top:top + VOID_BLOCK[0], left:left + VOID_BLOCK[1]] = VOID_ID
                write_annotation(png, ids)
        frames = Path(theirs, "JPEGImages", "480p", name)
        frames.mkdir(parents=True)
        for t, frame in enumerate(clip.frames):
            cv2.imwrite(str(frames / f"{t:05d}.jpg"), frame[:, :, ::-1])
        Path(theirs, "Annotations", "480p").mkdir(parents=True, exist_ok=True)
        os.symlink(labels.resolve(), Path(theirs, "Annotations", "480p", name))
        names.append(name)
    Path(theirs, "ImageSets", "2017").mkdir(parents=True)
    Path(theirs, "ImageSets", "2017", "val.txt").write_text("".join(n + "\n" for n in names))
    return names


def object_masks(label_image, objects):
    """T x H x W ids -> objects x T x H x W bool, ids 1..objects (``Results.read_masks``)."""
    return np.arange(1, objects + 1)[:, None, None, None] == label_image[None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("toolkit", help="a clone of davis2017-evaluation")
    parser.add_argument("--checkpoint", default=BUNDLED_CHECKPOINT)
    parser.add_argument("--videos", type=int, default=DEFAULT_VIDEOS)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--void", action="store_true",
                        help="paint a void block into every third annotation after the first")
    parser.add_argument("--photos", help="photographs for the generator")
    args = parser.parse_args(argv)
    davis, evaluation, utils = import_toolkit(args.toolkit)
    model = build_sam2("auto", checkpoint=args.checkpoint)
    modes = {"memory on": Setting("memory on", model), "memory off":
             Setting("memory off", model, memory=False)}
    clips = held_out_clips(SceneGenerator(find_photos(args.photos)), args.videos, args.frames)
    with tempfile.TemporaryDirectory() as folder:
        ours, theirs = Path(folder, "ours"), Path(folder, "theirs")
        names = write_datasets(ours, theirs, clips, args.void, np.random.default_rng(0))
        reference = davis.DAVIS(str(theirs), task="semi-supervised", subset="val")
        sequences = find_sequences(ours)
        scores = {mode: [] for mode in modes}
        theirs_per_object = {mode: [] for mode in modes}
        frame_gaps = {"J": 0.0, "F": 0.0, "object-frames": 0}
        for name, clip in zip(names, labelled_clips(sequences)):
            truth, _ = reference.get_all_masks(name, True)
            truth = truth[:, 1:-1]  # semi-supervised: the first and last frames left out
            for mode, setting in modes.items():
                prediction, clip_scores = run_and_score(setting, clip, first_appearance=True,
                                                        scoring="davis")
                if prediction.starts != [0] * len(truth):
                    raise SystemExit(f"{name}: not every object is prompted on frame 0")
                scores[mode].append(clip_scores)
                label_image = np.zeros((len(clip.frames), *clip.frames.shape[1:3]), np.uint8)
                for i in range(len(prediction.targets)):
                    label_image[prediction.masks[:, i]] = i + 1
                result = object_masks(label_image, len(truth))[:, 1:-1]
                J, F = evaluation.DAVISEvaluation._evaluate_semisupervised(truth, result,
                                                                           ("J", "F"))
                theirs_per_object[mode] += [(utils.db_statistics(j)[0], utils.db_statistics(f)[0])
                                            for j, f in zip(J, F)]
                # ours by frame and object: the same frames, the objects in the same order
                frames = J.shape[1]
                frame_gaps["object-frames"] += J.size
                frame_gaps["J"] = max(frame_gaps["J"], np.abs(clip_scores.J[:frames].T - J).max())
                frame_gaps["F"] = max(frame_gaps["F"], np.abs(clip_scores.F[:frames].T - F).max())
    for mode in modes:
        mine = summarize(scores[mode])
        theirs_j, theirs_f = np.array(theirs_per_object[mode]).T
        gap = np.abs(np.array(mine["per_target"]["J&F"]) - (theirs_j + theirs_f) / 2).max()
        print(f"{mode}: {len(theirs_j)} objects; DAVIS toolkit J {theirs_j.mean():.6f} F "
              f"{theirs_f.mean():.6f} J&F {(theirs_j.mean() + theirs_f.mean()) / 2:.6f}; "
              f"evaluate J {mine['J']:.6f} F {mine['F']:.6f} J&F {mine['J&F']:.6f}; "
              f"largest per-object J&F gap {gap:.1e}")
    print(f"largest per-frame gap over {frame_gaps['object-frames']} object-frames: "
          f"J {frame_gaps['J']:.1e}, F {frame_gaps['F']:.1e}")


if __name__ == "__main__":
    main()
