"""Score a SAM 2 model on held-out generated videos in the DAVIS measures (J, F, J&F).

Every held-out clip (``synthetic.test_seed``, never used in training) hides one
target completely for a few frames mid-clip. Each target fully visible on the first frame
gets one positive click at its most interior pixel there (or, with ``--prompt``, its box
or its mask) and is then segmented on every later frame in two ways: by the streaming
tracker ("memory on"), and by the image predictor re-prompted on each frame with that same
first-frame prompt ("memory off"), the baseline that shows what the memory is worth.
Scores are also given on the frames right after an occlusion, where memory matters most,
and for the tracker on whether it says a target is visible; J over time (by spans of
frames), which shows how fast a track drifts off its target; how the masks of shown
targets miss (too large, lost, ...); J&F by how a generated target looks (its texture:
``synthetic.APPEARANCES``); and the first frame's clicks answered by the image
predictor with one mask and with three. ``--ceiling`` adds what the masks would score if
tracking were perfect: the image predictor prompted afresh from the ground truth on every
frame. ``--dataset`` scores labelled video of one's own
instead (DAVIS layout, ``labelled.py``): every object is prompted on the first annotated
frame it shows on (YouTube-VOS's protocol) and scored on the frames after it as DAVIS's
evaluation scores a benchmark's one label PNG per frame: each pixel kept for one object,
the last frame left out (``--scoring``, ``SCORINGS``).

    python -m lab.evaluate                 # bundled model, 60 videos x 40 frames
    python -m lab.evaluate --compare       # faster paths vs float32
    python -m lab.evaluate --json scores.json
    python -m lab.evaluate --dataset DAVIS --prompt mask   # DAVIS's protocol
    python -m lab.evaluate --checkpoint mine.pt --against other.pt  # paired
    python -m lab.evaluate --ceiling       # + the score of perfect tracking

The result is a Markdown table on stdout, ready for a model card.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

import cv2
import numpy as np
import torch

from sam_ros.masks import interior_point
from sam_ros.model import BUNDLED_CHECKPOINT, SamImagePredictor, build_sam2
from sam_ros.model.common import autocast
from sam_ros.model.sam2 import MASK_PROMPT_BIAS, MASK_PROMPT_SCALE
from sam_ros.model.transforms import preprocess
from sam_ros.tracker import StreamingTracker, claimed_by

from .labelled import find_sequences
from .metrics import (
    ERROR_KINDS,
    GOOD_J,
    LOST_SHARE,
    SIZE_SHARE,
    contour_accuracy,
    error_kind,
    region_similarity,
)
from .synthetic import (
    APPEARANCES,
    MIN_EVENT_FRAMES,
    PHOTOS_ENV,
    SAMPLE_PHOTOS,
    SceneGenerator,
    find_photos,
    test_seed,
)

# A target is prompted when at least this much of it shows on the first frame.
FULLY_VISIBLE = 0.9
# How many frames from a target's reappearance count as "right after an occlusion".
AFTER_OCCLUSION_FRAMES = 5
# Frames per span of the J-over-time table.
FRAMES_PER_SPAN = 5
# The two modes' row names.
MEMORY_ON = "memory on (streaming tracker)"
MEMORY_OFF = "memory off (image predictor, the {prompt} repeated)"
# --ceiling's row: what the masks would score if tracking were perfect.
CEILING = "ceiling (image predictor, a fresh {prompt} from the ground truth on every frame)"
# How the targets are prompted: one click on the most interior pixel (the
# default), the ground truth's bounding box, or the ground-truth mask itself (DAVIS's
# semi-supervised protocol).
PROMPTS = ("click", "box", "mask")
PROMPT_WORDS = {"click": "one click", "box": "its bounding box", "mask": "its mask"}
# How masks are scored. "per-object": each target's own mask on every frame after its
# prompt, void pixels left out (the generated clips' protocol). "davis": as DAVIS 2017's
# semi-supervised evaluation scores the one label PNG per frame that benchmarks take: each
# pixel kept for the one target that claims it (``claimed_by``, SAM 2's non-overlap rule
# for such outputs), the last frame left out (SA-V's evaluation leaves it out too), and
# void pixels counted as background (DAVIS passes no void to that task).
SCORINGS = ("per-object", "davis")
SCORING_WORDS = {"per-object": "J, F of each target's own mask over the later frames",
                 "davis": "J, F over the later frames but the last, each pixel kept for "
                          "one target (DAVIS's scoring)"}
# The generated evaluation set: clips and frames per clip.
DEFAULT_VIDEOS, DEFAULT_FRAMES = 60, 40
# Reduced input sizes tried by --compare.
COMPARE_IMAGE_SIZES = (192, 128)
# The columns of ``answer_clicks``' rows, as the one-click table names them.
CLICK_MEASURES = ("IoU, single mask", "IoU, best-rated candidate", "IoU, best candidate",
                  "IoU estimate error, single", "IoU estimate error, candidates")


# ------------------------------------------------------------------ one clip

@dataclass
class ClipPrediction:
    """A model's masks for the prompted targets of one clip."""

    targets: list  # the clip's target indices that were prompted, in column order
    starts: list  # the frame each target was prompted on
    masks: np.ndarray  # T x len(targets) x H x W bool (empty before a target's prompt)
    visible: Optional[np.ndarray]  # T x len(targets) bool; None for the image predictor
    seconds: float  # time spent in the model


@dataclass
class ClipScores:
    """Per prompted target, on the frames after the one it was prompted on: row d - 1 is
    d frames after its prompt (frame d when it was prompted on frame 0). ``scored`` says
    which rows a target has (one prompted later has fewer); the rest are NaN / False."""

    J: np.ndarray  # (T-1) x K region similarity
    F: np.ndarray  # (T-1) x K contour accuracy
    after_occlusion: np.ndarray  # (T-1) x K bool: within the frames after a reappearance
    hidden: np.ndarray  # (T-1) x K bool: target fully hidden
    visible_correct: Optional[np.ndarray]  # (T-1) x K bool; None without a visibility output
    # (T-1) x K index into ERROR_KINDS, -1 where the target is hidden
    kinds: Optional[np.ndarray] = None
    scored: Optional[np.ndarray] = None  # (T-1) x K bool; None: every row

    def __post_init__(self):
        if self.scored is None:
            self.scored = np.ones(self.J.shape, bool)


def prompted_targets(clip, first_appearance=False):
    """The targets to prompt and the frame each is prompted on. By default those fully
    visible on frame 0, prompted there (the generated clips' protocol). With
    ``first_appearance``, every object, on the first frame it shows on (YouTube-VOS's
    protocol; on DAVIS, where objects show from frame 0, the same as DAVIS's), but for one
    that first shows on the last frame, which leaves nothing to score."""
    if not first_appearance:
        targets = [int(k) for k in np.flatnonzero(clip.visibility[0] >= FULLY_VISIBLE)]
        return targets, [0] * len(targets)
    shown = clip.visibility[:-1] > 0
    targets = [int(k) for k in np.flatnonzero(shown.any(axis=0))]
    return targets, [int(np.argmax(shown[:, k])) for k in targets]


def prompt_for(prompt, mask):
    """``StreamingTracker.add_prompt``'s keywords for a ``prompt`` of ``PROMPTS`` on a
    target whose ground truth on that frame is ``mask``."""
    if prompt == "click":
        return {"points": [interior_point(mask)], "labels": [1]}
    if prompt == "box":
        return {"box": bounding_box(mask)}
    return {"mask": mask}


def target_prompts(clip, prompt="click", first_appearance=False):
    """The targets to prompt (``prompted_targets``), the frame of each and its prompt's
    keywords (``prompt_for``)."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    targets, starts = prompted_targets(clip, first_appearance)
    return targets, starts, [prompt_for(prompt, clip.masks[s, k])
                             for k, s in zip(targets, starts)]


def bounding_box(mask):
    """[x_min, y_min, x_max, y_max] of a non-empty mask's pixels."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def track_clip_with_memory(model, clip, precision="float32", prompt="click",
                           first_appearance=False, one_per_pixel=False):
    """Memory on: one tracker over the clip, every target prompted on its frame
    (``target_prompts``) and tracked from there; with ``one_per_pixel`` each pixel kept
    for the target that claims it (``claimed_by``)."""
    targets, starts, prompts = target_prompts(clip, prompt, first_appearance)
    masks = np.zeros((len(clip.frames), len(targets), *clip.frames.shape[1:3]), bool)
    visible = np.zeros(masks.shape[:2], bool)
    start = time.perf_counter()
    tracker = StreamingTracker(model, precision=precision)
    for t, frame in enumerate(clip.frames):
        results = tracker.step(frame)
        results.update({i: tracker.add_prompt(i, **prompts[i])
                        for i, s in enumerate(starts) if s == t})
        for i, result in results.items():
            masks[t, i], visible[t, i] = result.mask, result.visible
        if one_per_pixel and results:
            given = sorted(results)
            masks[t, given] = keep_claimed(masks[t, given],
                                           [results[i].logits for i in given])
    return ClipPrediction(targets, starts, masks, visible, time.perf_counter() - start)


def image_prompts(model, prompts):
    """``SamImagePredictor.predict``'s keywords for all of ``target_prompts``' prompts
    at once (all of one kind); a mask becomes mask input, logits at the prompt encoder's
    input size scaled as the tracker scales a mask prompt."""
    if "points" in prompts[0]:
        return {"point_coords": np.array([p["points"] for p in prompts], np.float32),
                "point_labels": np.array([p["labels"] for p in prompts], np.int32)}
    if "box" in prompts[0]:
        return {"box": np.array([p["box"] for p in prompts], np.float32)}
    height, width = model.sam_prompt_encoder.mask_input_size
    logits = [cv2.resize(p["mask"].astype(np.float32), (width, height),
                         interpolation=cv2.INTER_AREA) * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
              for p in prompts]
    return {"mask_input": np.array(logits, np.float32)[:, None]}


def segment_clip_without_memory(model, clip, precision="float32", prompt="click",
                                first_appearance=False, one_per_pixel=False, fresh=False):
    """Memory off: every frame segmented on its own from the prompts given so far
    (``target_prompts``), as the model answers them (the best-rated of its candidate
    masks where its config asks for multimask output, as SAM 2's do; its single mask
    otherwise); with ``one_per_pixel`` each pixel kept for the target that claims it.

    With ``fresh``, each target is prompted anew on every frame it shows on, from its
    ground truth there (``prompt_for``), and left blank where it is hidden: the score
    tracking would reach if it always knew where the target is (``--ceiling``)."""
    targets, starts, prompts = target_prompts(clip, prompt, first_appearance)
    masks = np.zeros((len(clip.frames), len(targets), *clip.frames.shape[1:3]), bool)
    if not targets:  # nothing to prompt: nothing to score
        return ClipPrediction(targets, starts, masks, None, 0.0)
    prompts = image_prompts(model, prompts)
    starts = np.array(starts)
    start = time.perf_counter()
    predictor = SamImagePredictor(model, precision=precision)
    for t, frame in enumerate(clip.frames):
        given = np.flatnonzero(starts <= t)
        if fresh:
            given = given[clip.visibility[t, np.array(targets)[given]] > 0]
        if not given.size:
            continue
        predictor.set_image(frame)
        if fresh:
            keywords = image_prompts(model, [prompt_for(prompt, clip.masks[t, targets[i]])
                                             for i in given])
        else:
            keywords = {key: value[given] for key, value in prompts.items()}
        logits, scores, _ = predictor.predict(return_logits=True, **keywords)
        # one prompt comes back without its batch axis
        logits = logits.reshape(len(given), -1, *frame.shape[:2])
        best = scores.reshape(len(given), -1).argmax(axis=1)
        logits = logits[np.arange(len(given)), best]
        masks[t, given] = logits > predictor.mask_threshold
        if one_per_pixel:
            masks[t, given] = keep_claimed(masks[t, given], logits)
    return ClipPrediction(targets, starts.tolist(), masks, None, time.perf_counter() - start)


def keep_claimed(masks, logits):
    """``masks`` (N x H x W) with each pixel kept only in the one that claims it
    (``claimed_by``: the highest logit among those covering it)."""
    return claimed_by(masks, logits) == np.arange(len(masks))[:, None, None]


def answer_clicks(model, clip, precision="float32", first_appearance=False):
    """Each target's click (``target_prompts``) answered on its frame both ways the image
    predictor can: the single mask and the three candidate masks. Per prompted target, a
    row of: the single mask's IoU, the best-rated candidate's IoU, the best candidate's
    IoU, and how far the IoU estimates are off (mean absolute error) for the single mask
    and for the candidates."""
    predictor = SamImagePredictor(model, precision=precision)
    rows = []
    encoded = None  # the frame the predictor holds
    for target, start, prompt in zip(*target_prompts(clip, "click", first_appearance)):
        if start != encoded:
            predictor.set_image(clip.frames[start])
            encoded = start
        truth = clip.masks[start, target]
        answers = []
        for multimask in (False, True):
            masks, estimates, _ = predictor.predict(
                point_coords=np.array(prompt["points"], np.float32),
                point_labels=np.array(prompt["labels"]), multimask_output=multimask)
            answers.append((np.array([region_similarity(m, truth) for m in masks]), estimates))
        (single, single_estimate), (candidates, estimates) = answers
        rows.append((single[0], candidates[np.argmax(estimates)], candidates.max(),
                     abs(single_estimate[0] - single[0]), np.abs(estimates - candidates).mean()))
    return rows


def frames_after_occlusion(visibility, count=AFTER_OCCLUSION_FRAMES):
    """T x K bool: the ``count`` frames from each frame where a target shows again after
    being fully hidden on the frame before."""
    shown = visibility > 0
    after = np.zeros_like(shown)
    for t, k in zip(*np.nonzero(shown[1:] & ~shown[:-1])):
        after[t + 1:t + 1 + count, k] = True
    return after


def score_clip(clip, prediction, last_frame=True, leave_out_void=True):
    """J and F of every prompted target on every frame after the one it was prompted on
    (up to the last one, or the one before with ``last_frame=False``), by frames since its
    prompt (``ClipScores``). Where the target is absent, both are 1 for an empty
    prediction and 0 otherwise; pixels a labelled clip marks void count for neither
    (or, with ``leave_out_void=False``, as background)."""
    void = clip.void if leave_out_void else None
    end = len(clip.frames) - (0 if last_frame else 1)  # one past the last scored frame
    shape = (len(clip.frames) - 1, len(prediction.targets))
    J, F = np.full(shape, np.nan), np.full(shape, np.nan)
    kinds = np.full(shape, -1)
    scored, after, hidden = (np.zeros(shape, bool) for _ in range(3))
    correct = None if prediction.visible is None else np.zeros(shape, bool)
    for i, (target, start) in enumerate(zip(prediction.targets, prediction.starts)):
        rows = slice(0, max(0, end - start - 1))
        visibility = clip.visibility[start:end, target]
        scored[rows, i] = True
        # from its prompt on: showing for the first time is not a reappearance
        after[rows, i] = frames_after_occlusion(visibility[:, None])[1:, 0]
        hidden[rows, i] = visibility[1:] == 0
        if correct is not None:
            correct[rows, i] = prediction.visible[start + 1:end, i] == ~hidden[rows, i]
        for row, t in enumerate(range(start + 1, end)):
            pred, truth = prediction.masks[t, i], clip.masks[t, target]
            if void is not None:
                pred = pred & ~void[t]
            if truth.any():
                J[row, i] = region_similarity(pred, truth)
                F[row, i] = contour_accuracy(pred, truth)
                kinds[row, i] = ERROR_KINDS.index(error_kind(pred, truth))
            else:
                J[row, i] = F[row, i] = 0.0 if pred.any() else 1.0
    return ClipScores(J, F, after, hidden, correct, kinds, scored)


# ------------------------------------------------------------------ many clips

def _mean(values):
    return float(np.mean(values)) if values.size else None


def _j_and_f(J, F):
    j, f = _mean(J), _mean(F)
    return {"J": j, "F": f, "J&F": None if j is None else (j + f) / 2}


def standard_error(values):
    """Standard error of the mean of independent samples (None for fewer than two)."""
    values = np.asarray(values, float)
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None


def per_target_means(scores, measure, after_occlusion=False):
    """Each prompted target's mean ``measure`` ("J" or "F") over its frames (or over only
    its frames right after an occlusion: NaN for a target without any), in clip and column
    order."""
    values = [np.zeros(0)]
    for s in scores:
        counted = s.scored & s.after_occlusion if after_occlusion else s.scored
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append(np.where(counted, getattr(s, measure), 0).sum(0) / counted.sum(0))
    return np.concatenate(values)


def per_target_j_and_f(scores, after_occlusion=False):
    """Each prompted target's J&F (``per_target_means``' J and F averaged)."""
    return (per_target_means(scores, "J", after_occlusion)
            + per_target_means(scores, "F", after_occlusion)) / 2


def _listed(values):
    """A JSON-ready list: None for NaN."""
    return [None if np.isnan(v) else float(v) for v in values]


def paired_difference(a, b):
    """Mean of ``a - b`` over the targets scored in both (two runs on the same clips), its
    standard error and the number of targets: pairing cancels how hard each target is."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    both = np.isfinite(a) & np.isfinite(b)
    difference = a[both] - b[both]
    return (float(difference.mean()) if difference.size else None,
            standard_error(difference), int(both.sum()))


def j_over_time(scores, span=FRAMES_PER_SPAN):
    """Mean J on the frames where the target shows, in spans of ``span`` frames from the
    first after its prompt: ``[(first frame, last frame, mean J or None)]``, frames counted
    from the prompt. Clips and targets may differ in length."""
    length = max((len(s.J) for s in scores), default=0)
    spans = []
    for start in range(0, length, span):
        rows = slice(start, start + span)
        values = [s.J[rows][s.scored[rows] & ~s.hidden[rows]] for s in scores]
        spans.append((start + 1, min(start + span, length), _mean(np.concatenate(values))))
    return spans


def summarize(scores):
    """Some clips' ``ClipScores`` summed up. J, F and J&F are each target's mean over its
    frames, averaged over targets (as DAVIS's evaluation does: a long sequence weighs no
    more than a short one); the frames after occlusions and the rest are pooled over
    object-frames. Each target's J&F (for paired comparisons) and the standard error of
    J&F over targets: the yardstick for telling two checkpoints apart."""
    J = np.concatenate([s.J[s.scored] for s in scores])
    F = np.concatenate([s.F[s.scored] for s in scores])
    after = np.concatenate([s.after_occlusion[s.scored] for s in scores])
    per_target = per_target_j_and_f(scores)
    summary = {"objects": sum(s.J.shape[1] for s in scores), "object_frames": int(J.size),
               **_j_and_f(per_target_means(scores, "J"), per_target_means(scores, "F")),
               "J&F_standard_error": standard_error(per_target),
               "after_occlusion": {"object_frames": int(after.sum()),
                                   **_j_and_f(J[after], F[after])},
               "per_target": {"J&F": _listed(per_target),
                              "J&F_after_occlusion":
                                  _listed(per_target_j_and_f(scores, after_occlusion=True))},
               "J_over_time": j_over_time(scores)}
    if scores and all(s.kinds is not None for s in scores):
        kinds = np.concatenate([s.kinds[s.scored] for s in scores])
        shown = kinds[kinds >= 0]
        summary["shown_frames_by_kind"] = {
            kind: (float(np.mean(shown == k)) if shown.size else None)
            for k, kind in enumerate(ERROR_KINDS)}
    if all(s.visible_correct is not None for s in scores):
        hidden = np.concatenate([s.hidden[s.scored] for s in scores])
        correct = np.concatenate([s.visible_correct[s.scored] for s in scores])
        summary["visibility_accuracy"] = {
            "hidden": _mean(correct[hidden]), "visible": _mean(correct[~hidden]),
            "hidden_frames": int(hidden.sum()), "visible_frames": int((~hidden).sum())}
    return summary


@dataclass
class Setting:
    """One way of running a model: a row of the results."""

    name: str
    model: Any
    memory: bool = True
    precision: str = "float32"
    note: str = ""
    checkpoint: str = ""  # its file name, naming its rows where the mode does not
    fresh: bool = False  # memory off, prompted anew from the ground truth on every frame


def run_and_score(setting, clip, prompt="click", first_appearance=False, scoring="per-object"):
    """One setting on one clip, prompted as ``target_prompts`` says and scored as
    ``scoring`` says: the prediction and its ``ClipScores``. "davis" keeps each pixel for
    one target, leaves the last frame out and counts void as background, as DAVIS 2017's
    evaluation scores the one label PNG per frame a benchmark takes."""
    davis = scoring == "davis"
    if setting.memory:
        prediction = track_clip_with_memory(setting.model, clip, setting.precision, prompt,
                                            first_appearance, one_per_pixel=davis)
    else:
        prediction = segment_clip_without_memory(setting.model, clip, setting.precision,
                                                 prompt, first_appearance, davis,
                                                 setting.fresh)
    return prediction, score_clip(clip, prediction, last_frame=not davis,
                                  leave_out_void=not davis)


def evaluate(settings, clips, prompt="click", first_appearance=False, scoring="per-object"):
    """Run every setting on every clip (so each clip is made or read once), the targets
    prompted by ``prompt`` (one of ``PROMPTS``) as ``prompted_targets`` says and scored as
    ``scoring`` (one of ``SCORINGS``) says; returns ``{setting name: summary}`` with the
    model's milliseconds per frame."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    scores = {s.name: [] for s in settings}
    names, starts, looks = [], [], []  # of the prompted targets, in column order
    # the first frame's clicks, answered once per checkpoint (from its memory-off row)
    clicks = {s.name: [] for s in settings if not s.memory and not s.fresh}
    seconds = dict.fromkeys(scores, 0.0)
    frames = 0
    for clip in clips:
        for i, setting in enumerate(settings):
            prediction, clip_scores = run_and_score(setting, clip, prompt, first_appearance,
                                                    scoring)
            if i == 0:  # every setting prompts the same targets
                names += [clip.target_name(k) for k in prediction.targets]
                starts += prediction.starts
                looks += [clip.appearance[k] if clip.appearance else None
                          for k in prediction.targets]
            scores[setting.name].append(clip_scores)
            seconds[setting.name] += prediction.seconds
            if setting.name in clicks:
                clicks[setting.name] += answer_clicks(setting.model, clip, setting.precision,
                                                      first_appearance)
        frames += len(clip.frames)
    results = {s.name: {**summarize(scores[s.name]), "memory": s.memory,
                        "precision": s.precision, "image_size": s.model.image_size,
                        "note": s.note, "checkpoint": s.checkpoint,
                        "ms_per_frame": 1000 * seconds[s.name] / frames}
               for s in settings}
    for result in results.values():
        result["per_target"].update(targets=names, starts=starts, appearance=looks)
    for name, rows in clicks.items():
        means = np.mean(rows, axis=0).tolist() if rows else [None] * len(CLICK_MEASURES)
        results[name]["one_click"] = {"targets": len(rows), **dict(zip(CLICK_MEASURES, means)),
                                      "per_target_single_iou": [float(r[0]) for r in rows]}
    return results


def by_appearance(result, measure="J&F"):
    """A row's per-target ``measure`` by how its targets look: ``{appearance: (targets,
    mean)}`` in ``APPEARANCES`` order, for those that occur; empty where appearances are
    unknown (labelled video). ``measure`` is ``"J&F"``, or ``"click"`` for the IoU of the
    single mask that answers each target's click (memory-off rows)."""
    per_target = result["per_target"]
    values = (result["one_click"]["per_target_single_iou"] if measure == "click"
              else per_target[measure])
    pairs = [(look, value) for look, value in zip(per_target["appearance"], values)
             if look is not None and value is not None]
    groups = {look: [value for seen, value in pairs if seen == look] for look in APPEARANCES}
    return {look: (len(found), float(np.mean(found))) for look, found in groups.items()
            if found}


def later_prompts(result):
    """``"name@frame"`` of each target of a row prompted after frame 0 (an object first
    showing later), the frame counted among the clip's annotated frames."""
    per_target = result["per_target"]
    return [f"{name}@{start}" for name, start in zip(per_target["targets"],
                                                     per_target["starts"]) if start]


def worst_targets(result, count=5):
    """The ``count`` targets of a row with the lowest J&F: ``[(name, J&F)]``."""
    per_target = result["per_target"]
    scored = [(j_and_f, name) for name, j_and_f in zip(per_target["targets"],
                                                      per_target["J&F"]) if j_and_f is not None]
    return [(name, j_and_f) for j_and_f, name in sorted(scored)[:count]]


def labelled_clips(sequences, frames=None):
    """Labelled sequences, loaded one at a time (the first ``frames`` of each if given)."""
    for sequence in sequences:
        clip = sequence.load()
        if frames:
            clip = replace(clip, frames=clip.frames[:frames], masks=clip.masks[:frames],
                           visibility=clip.visibility[:frames],
                           void=None if clip.void is None else clip.void[:frames])
        yield clip


def held_out_clips(generator, videos, frames, seed_offset=0, occlusion=True):
    """The held-out clips, made one at a time (``occlusion`` as ``SceneGenerator.clip``'s;
    the evaluation's clips all hide a target mid-clip)."""
    for i in range(seed_offset, seed_offset + videos):
        yield generator.clip(test_seed(i), num_frames=frames, occlusion=occlusion)


def compile_image_encoder(model, precision="float32"):
    """Wrap the image encoder in ``torch.compile`` and compile it now, on a dummy image in
    the mode it will run in. Returns None, or why it failed (then the model is left
    uncompiled): inductor needs a C++ toolchain and cannot lower every kernel (torch 2.13
    fails on the encoder's fused oneDNN linears, used in float32 on CPU)."""
    encoder = model.image_encoder
    try:
        model.image_encoder = torch.compile(encoder)
        # a frame made as the tracker and the predictor make theirs, so that no guard
        # recompiles later; twice, as the first call fills the encoder's caches
        with torch.inference_mode(), autocast(model.device, precision):
            frame = preprocess(np.zeros((model.image_size, model.image_size, 3), np.uint8),
                               model.image_size, model.device)
            for _ in range(2):
                model.encode_image(frame)
    except Exception as exc:  # any backend failure: report it, keep evaluating
        model.image_encoder = encoder
        # inductor's first lines name the failing operation; the rest is its IR dump
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return " ".join([f"{type(exc).__name__}:"] + lines[:2])
    return None


# ------------------------------------------------------------------ output

def _cell(value, signed=False):
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def modes_table(results):
    """Markdown: one row per mode, all measures."""
    lines = ["| Mode | J | F | J&F | ± s.e. | J after occl. | F after occl. | J&F after occl. "
             "| Visibility acc. (hidden) | Visibility acc. (shown) | ms/frame |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        occl = r["after_occlusion"]
        vis = r.get("visibility_accuracy", {})
        lines.append(f"| {name} | {_cell(r['J'])} | {_cell(r['F'])} | {_cell(r['J&F'])} "
                     f"| {_cell(r['J&F_standard_error'])} | {_cell(occl['J'])} "
                     f"| {_cell(occl['F'])} | {_cell(occl['J&F'])} "
                     f"| {_cell(vis.get('hidden'))} | {_cell(vis.get('visible'))} "
                     f"| {r['ms_per_frame']:.1f} |")
    return "\n".join(lines)


def time_table(results):
    """Markdown: each mode's mean J on shown frames, span by span."""
    spans = next(iter(results.values()))["J_over_time"]
    lines = ["| Mode | " + " | ".join(f"J, frames {a}-{b}" if b > a else f"J, frame {a}"
                                 for a, b, _ in spans) + " |",
             "|---|" + "---|" * len(spans)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(_cell(j) for _, _, j in r["J_over_time"]) + " |")
    return "\n".join(lines)


def kinds_table(results):
    """Markdown: each mode's shown target-frames by what its mask is (shares)."""
    lines = ["| Mode | " + " | ".join(ERROR_KINDS) + " |", "|---|" + "---|" * len(ERROR_KINDS)]
    for name, r in results.items():
        shares = r["shown_frames_by_kind"]
        lines.append(f"| {name} | " + " | ".join(_cell(shares[k]) for k in ERROR_KINDS) + " |")
    return "\n".join(lines)


def appearance_table(results):
    """Markdown: each mode's J&F by how the targets look (``by_appearance``), and for each
    checkpoint the IoU of its single mask answering the first frame's clicks."""
    first = by_appearance(next(iter(results.values())))
    lines = ["| Mode | " + " | ".join(f"{look} ({count})" for look, (count, _) in first.items())
             + " |", "|---|" + "---|" * len(first)]
    rows = [(name, by_appearance(r)) for name, r in results.items()]
    rows += [(f"one click, IoU of the single mask ({r['checkpoint'] or name})",
              by_appearance(r, "click")) for name, r in results.items() if "one_click" in r]
    for name, groups in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(groups[look][1]) for look in first)
                     + " |")
    return "\n".join(lines)


def clicks_table(results):
    """Markdown: the targets' clicks, answered with one mask and with three; a row per
    checkpoint (from its memory-off row)."""
    lines = ["| Checkpoint | targets | " + " | ".join(CLICK_MEASURES) + " |",
             "|---|---|" + "---|" * len(CLICK_MEASURES)]
    for name, r in results.items():
        if "one_click" in r:
            clicks = r["one_click"]
            lines.append(f"| {r['checkpoint'] or name} | {clicks['targets']} | "
                         + " | ".join(_cell(clicks[m]) for m in CLICK_MEASURES) + " |")
    return "\n".join(lines)


def compare_table(results, failed, baseline):
    """Markdown: J&F of each faster path and its change against ``baseline``."""
    base = results[baseline]
    lines = ["| Path (memory on) | Image size | J&F | Δ J&F | J&F after occl. | Δ after occl. "
             "| ms/frame | Speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        occl, base_occl = r["after_occlusion"]["J&F"], base["after_occlusion"]["J&F"]
        delta_occl = None if occl is None or base_occl is None else occl - base_occl
        lines.append(f"| {name} | {r['image_size']} | {_cell(r['J&F'])} "
                     f"| {_cell(r['J&F'] - base['J&F'], signed=True)} | {_cell(occl)} "
                     f"| {_cell(delta_occl, signed=True)} | {r['ms_per_frame']:.1f} "
                     f"| {base['ms_per_frame'] / r['ms_per_frame']:.2f}x |")
    for name in failed:
        lines.append(f"| {name} | – | failed (below) | | | | | |")
    return "\n".join(lines)


# ------------------------------------------------------------------ command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=BUNDLED_CHECKPOINT,
                        help="model to score (default: the bundled sam_ros_mini)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--photos", help=f"folder of photographs for the generator (default: "
                        f"${PHOTOS_ENV}, else {SAMPLE_PHOTOS})")
    # 20 clips (30 targets) proved too few to rank checkpoints: two of them swapped
    # places between test clips 0-19 and 20-59 (CHANGELOG.md); 60 give a J&F standard error
    # of about 0.02 (0.025 for the bundled model with memory: MODEL_CARD.md)
    parser.add_argument("--videos", type=int,
                        help=f"held-out clips (default {DEFAULT_VIDEOS}; with --dataset: the "
                             "first N sequences, default all)")
    parser.add_argument("--frames", type=int,
                        help=f"frames per clip (default {DEFAULT_FRAMES}; with --dataset: the "
                             "first N annotated frames, default all)")
    parser.add_argument("--dataset", help="score on labelled video in the DAVIS layout "
                        "(lab.labelled) instead of generated clips")
    parser.add_argument("--prompt", choices=PROMPTS, default="click",
                        help="each target's prompt, on frame 0 (with --dataset: on the "
                             "first frame it shows on): one click on its most interior pixel, "
                             "its bounding box, or its mask (DAVIS's and YouTube-VOS's "
                             "protocol)")
    parser.add_argument("--scoring", choices=SCORINGS,
                        help="per-object: each target's own mask, every frame after its "
                             "prompt (the default for generated clips); davis: one target "
                             "per pixel, the last frame left out, as DAVIS 2017's "
                             "evaluation scores (the default with --dataset)")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="first held-out clip index (clips seed-offset .. +videos-1)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--image-size", type=int, help="reduced model input size")
    parser.add_argument("--compile", action="store_true",
                        help="run the image encoder through torch.compile")
    parser.add_argument("--compare", action="store_true",
                        help="memory on only: float32 against bfloat16, torch.compile and "
                             f"image sizes {', '.join(map(str, COMPARE_IMAGE_SIZES))}")
    parser.add_argument("--against", help="a second checkpoint scored on the same clips, with "
                        "the paired differences")
    parser.add_argument("--ceiling", action="store_true",
                        help="add a row: the image predictor given a fresh prompt from each "
                             "target's ground truth on every frame it shows on, blank where "
                             "it is hidden (what the masks would score if tracking were "
                             "perfect)")
    parser.add_argument("--json", help="also save the numbers to this file")
    args = parser.parse_args(argv)
    if args.compare and (args.precision != "float32" or args.image_size or args.compile
                         or args.against or args.ceiling):
        parser.error("--compare runs its own precisions, sizes and compilation: leave out "
                     "--precision, --image-size, --compile, --against and --ceiling")
    if args.ceiling and args.prompt == "mask":
        parser.error("--ceiling with --prompt mask would answer each frame with its own "
                     "ground truth: use a click or a box")
    if args.videos is not None and args.videos < 1:
        parser.error("need --videos >= 1")
    if args.dataset:
        if args.seed_offset or args.photos:
            parser.error("--seed-offset and --photos choose generated clips: leave them out "
                         "with --dataset")
        args.scoring = args.scoring or "davis"
        least = 2 if args.scoring == "per-object" else 3
        if args.frames is not None and args.frames < least:
            parser.error(f"need --frames >= {least}: frame 0 is prompted, the rest are "
                         f"scored{' but the last' * (least == 3)}")
        try:
            args.sequences = find_sequences(args.dataset)[:args.videos]
        except ValueError as exc:
            parser.error(str(exc))
    else:
        args.scoring = args.scoring or "per-object"
        args.videos = DEFAULT_VIDEOS if args.videos is None else args.videos
        args.frames = DEFAULT_FRAMES if args.frames is None else args.frames
        if args.frames < MIN_EVENT_FRAMES:
            parser.error(f"need --frames >= {MIN_EVENT_FRAMES} (room for an occlusion)")
        try:
            args.photo_files = find_photos(args.photos)
        except FileNotFoundError as exc:
            parser.error(str(exc))
    for checkpoint in (args.checkpoint, args.against):
        if checkpoint is not None and not os.path.isfile(checkpoint):
            parser.error(f"no checkpoint at {checkpoint}")
    return args


def scored_checkpoints(args):
    """The checkpoint, and the one it is compared with if any."""
    return [args.checkpoint] + ([args.against] if args.against else [])


def _settings(args, build):
    """The rows to run, and {row name: why it could not run}."""
    if args.compare:
        base = build()
        compiled = build()
        failed = {}
        settings = [Setting("float32", base), Setting("bfloat16", base, precision="bfloat16")]
        why = compile_image_encoder(compiled)
        if why is None:
            settings.append(Setting("torch.compile", compiled))
        else:
            failed["torch.compile"] = why
        settings += [Setting(f"image size {size}", build(image_size=size))
                     for size in COMPARE_IMAGE_SIZES]
        return settings, failed
    size = {"image_size": args.image_size} if args.image_size else {}
    settings = []
    for checkpoint in scored_checkpoints(args):
        model = build(checkpoint, **size)
        note = ""
        if args.compile:
            why = compile_image_encoder(model, args.precision)
            note = ("image encoder compiled with torch.compile" if why is None
                    else f"torch.compile failed ({why}); ran uncompiled")
        # rows named apart, even for a checkpoint against itself
        suffix = (f", {'against ' if settings else ''}{os.path.basename(checkpoint)}"
                  if args.against else "")
        memory_off = MEMORY_OFF.format(prompt=args.prompt)
        name = os.path.basename(checkpoint)
        settings += [Setting(MEMORY_ON + suffix, model, True, args.precision, note, name),
                     Setting(memory_off + suffix, model, False, args.precision, note, name)]
    if args.ceiling:
        first = settings[0]
        settings.append(Setting(CEILING.format(prompt=args.prompt)
                                + (f", {first.checkpoint}" if args.against else ""),
                                first.model, False, args.precision, first.note,
                                first.checkpoint, fresh=True))
    return settings, {}


def difference_line(label, a, b):
    """One line: the paired J&F difference of two rows, overall and after occlusions."""
    parts = []
    for key, what in (("J&F", "J&F"), ("J&F_after_occlusion", "after occlusions")):
        mean, error, count = paired_difference(a["per_target"][key], b["per_target"][key])
        parts.append(f"{what} {_cell(mean, signed=True)} ± {_cell(error)} ({count} targets)")
    return f"{label}, paired over the same targets (± standard error): {'; '.join(parts)}."


def differences(results, checkpoints):
    """The paired differences worth printing: memory on against off, and with
    ``--against`` each mode of the checkpoint against the same mode of the other, and
    their single masks for the clicks. The results hold both modes of each checkpoint, in
    order."""
    rows = list(results.values())
    names = [os.path.basename(c) for c in checkpoints]
    lines = [difference_line(f"Memory on minus off ({name})", rows[2 * i], rows[2 * i + 1])
             for i, name in enumerate(names)]
    if len(names) == 2:
        lines += [difference_line(f"{mode}: {names[0]} minus {names[1]}", rows[i], rows[i + 2])
                  for i, mode in enumerate(("Memory on", "Memory off"))]
        mean, error, count = paired_difference(
            *(rows[i]["one_click"]["per_target_single_iou"] for i in (1, 3)))
        lines.append(f"One click, IoU of the single mask: {names[0]} minus {names[1]}, paired "
                     f"(± standard error): {_cell(mean, signed=True)} ± {_cell(error)} "
                     f"({count} targets).")
    return lines


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()

    def build(checkpoint=args.checkpoint, **overrides):
        return build_sam2(checkpoint=checkpoint, device=args.device, **overrides)

    settings, failed = _settings(args, build)
    if args.dataset:
        clips = labelled_clips(args.sequences, args.frames)
        count = len(args.sequences)
        source = (f"Labelled videos in `{args.dataset}`: {count} sequence{'s' * (count != 1)}"
                  f"{f' (first {args.frames} annotated frames)' if args.frames else ''}")
    else:
        generator = SceneGenerator(args.photo_files)
        clips = held_out_clips(generator, args.videos, args.frames, args.seed_offset)
        source = (f"Held-out generated videos: {args.videos} clips x {args.frames} frames "
                  f"(test seeds {args.seed_offset}..{args.seed_offset + args.videos - 1})")
    results = evaluate(settings, clips, args.prompt, first_appearance=bool(args.dataset),
                       scoring=args.scoring)
    prompted_later = later_prompts(next(iter(results.values())))
    if prompted_later:
        source += (f" ({len(prompted_later)} object{'s' * (len(prompted_later) != 1)} first "
                   f"showing after frame 0, prompted and scored from there: "
                   f"{', '.join(prompted_later[:5])}{', ...' * (len(prompted_later) > 5)})")
    setup = {"checkpoint": os.path.abspath(args.checkpoint),
             "against": args.against and os.path.abspath(args.against), "device": args.device,
             "dataset": args.dataset and os.path.abspath(args.dataset),
             "prompted_later": prompted_later, "prompt": args.prompt, "scoring": args.scoring,
             "videos": args.videos, "frames": args.frames, "seed_offset": args.seed_offset,
             "objects": next(iter(results.values()))["objects"],
             "precision": args.precision, "image_size": settings[0].model.image_size,
             "torch": torch.__version__, "seconds": time.perf_counter() - start}
    where = "the first frame it shows on" if args.dataset else "frame 0"
    print(f"{source}, {setup['objects']} targets, each given {PROMPT_WORDS[args.prompt]} on "
          f"{where}; {SCORING_WORDS[args.scoring]}; \"after occl.\": the "
          f"{AFTER_OCCLUSION_FRAMES} frames from a "
          f"target's reappearance; ms/frame: model time per frame, all targets together. "
          f"Checkpoint `{os.path.basename(args.checkpoint)}`"
          + (f" against `{os.path.basename(args.against)}`" if args.against else "")
          + f", {args.device}, "
          f"torch {torch.__version__}.\n")
    if args.compare:
        print(compare_table(results, failed, baseline=settings[0].name))
    else:
        print(f"Image size {setup['image_size']}, {args.precision}.\n")
        print(modes_table(results) + "\n")
        print("Mean J over time, on the frames where the target shows (frames counted from "
              "the target's prompt):\n")
        print(time_table(results) + "\n")
        print(f"Shown target-frames by what the mask is (good: J >= {GOOD_J}; lost: under "
              f"{LOST_SHARE:.0%} of the mask on the target and of the target covered; too "
              f"large / small: {SIZE_SHARE:.0%} of the target covered / of the mask on it, "
              f"at the wrong size; partly off: the rest):\n")
        print(kinds_table(results) + "\n")
        if by_appearance(next(iter(results.values()))):
            print("J&F by how the target looks (its texture; targets in brackets), and the "
                  "first frame's clicks answered as in the table below:\n")
            print(appearance_table(results) + "\n")
        print(f"One click on each target's most interior pixel on {where}, answered by the "
              "image predictor with its single mask and with its three candidate masks "
              "(`multimask_output`); the IoU estimate errors are mean absolute differences "
              "between the model's estimates and the IoUs:\n")
        print(clicks_table(results) + "\n")
        print("\n".join(differences(results, scored_checkpoints(args))))
        if args.ceiling:
            print(difference_line("Memory on minus the ceiling", results[settings[0].name],
                                  results[settings[-1].name]))
        first = next(iter(results))
        print(f"Lowest J&F, {first}: " + ", ".join(
            f"{name} {j_and_f:.3f}" for name, j_and_f in worst_targets(results[first])) + ".")
    for name, why in failed.items():
        print(f"\n{name} failed: {why}")
    if settings[0].note:
        print(f"\nNote: {settings[0].note}")
    print(f"\n({setup['seconds']:.0f} s in all)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"setup": setup, "results": results, "failed": failed}, f, indent=2)


if __name__ == "__main__":
    main()
