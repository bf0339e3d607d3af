"""Train a small SAM 2 on generated video: SAM 2's training recipe in miniature.

Each step takes a batch of generated clips (one tracked target per clip; the clip's other
targets are segmented as images on some frames, with the tracked one). The first frame is
prompted from the ground truth (one click, a few clicks, a box or the mask itself), with a
corrective click half of the time; the rest of the clip is tracked through memory attention
with the tracker's own memory bank and selection; one later frame may get a corrective
click and become a conditioning frame, as in SAM 2. Every prediction is scored with cross-entropy
(or SAM 2's focal, ``--pixel-loss focal``) + dice mask losses (on the best of the candidate
masks), an IoU-prediction loss and an
object-score loss, and the sum is back-propagated through the whole clip.
``--candidates-only`` instead trains the three candidate masks alone, for a model (like the
bundled one) whose config answers with its single mask. ``--dataset`` takes the clips from
labelled video of one's own (DAVIS layout, ``labelled.py``) instead of the generator.

    python -m lab.train --out sam_ros_mini.pt --minutes 50
    python -m lab.train --init sam_ros_mini.pt --dataset my_videos --out tuned.pt

The result is a checkpoint in Meta's layout (``{"model": state_dict}``) that
``build_sam2("auto", checkpoint=...)`` loads like an official one.
"""

import argparse
import math
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sam_ros.model import build_sam2, save_checkpoint
from sam_ros.model.sam2 import ImageFeatures
from sam_ros.model.transforms import PIXEL_MEAN, PIXEL_STD
from sam_ros.tracker import step
from sam_ros.tracker.memory_bank import ObjectMemory

from .labelled import find_sequences, masks_of, object_ids_in
from .synthetic import (
    MAX_TARGETS,
    MIN_EVENT_FRAMES,
    PHOTOS_ENV,
    SAMPLE_PHOTOS,
    TRAIN_SEED_LIMIT,
    SceneGenerator,
    find_photos,
)

# SAM 2's loss weights: focal 20 (alpha 0.25), dice 1, IoU prediction 1, object score 1.
FOCAL_WEIGHT, DICE_WEIGHT, IOU_WEIGHT, SCORE_WEIGHT = 20.0, 1.0, 1.0, 1.0
FOCAL_ALPHA = 0.25
# The per-pixel mask losses --pixel-loss offers. SAM 2's focal loss (alpha 0.25): from scratch
# it holds a model at "all background" for hundreds of steps, where plain cross-entropy + dice
# climbs at once; on the bundled model it trades masks that bleed for masks that fall short
# (CHANGELOG.md: stages 1-8, 22 and 23).
PIXEL_LOSSES = ("bce", "focal")
# First-frame prompt kinds and how often each is drawn.
PROMPT_KINDS = ("click", "box", "clicks", "mask")
PROMPT_ODDS = (0.4, 0.25, 0.2, 0.15)
# Random windows of labelled video in a row with no object to track before giving up.
EMPTY_WINDOW_LIMIT = 1000
# Frames the image encoder takes in one pass. On an H200 the encoder's attention failed
# ("CUDA error: invalid argument") at 1,024 frames of 256 px, where its first stage attends
# in 65,536 windows of 8 x 8: one more than the 65,535 blocks that a CUDA grid's second and
# third dimensions allow (our reading of the error). 512 frames ran.
ENCODE_CHUNK = 512
# Parameters that the model builds as zeros (a checkpoint fills them); training starts them
# as SAM 2 does, from a truncated normal.
ZERO_BUILT = ("maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr",
              "no_obj_embed_spatial", "image_encoder.trunk.pos_embed",
              "image_encoder.trunk.pos_embed_window")


class ClipStream(IterableDataset):
    """An endless stream of training clips, ``(frames T x S x S x 3 uint8, masks T x K x S x S)``
    from lab seeds only, K = ``MAX_TARGETS``: the target to track first, then the
    clip's other targets, then empty masks. Worker ``w`` draws its seeds from a generator
    seeded with ``(seed, w)``, so a run is reproducible for a given worker count."""

    def __init__(self, photos, size, frames, seed, occlusion_odds=0.3):
        self.photos, self.size, self.frames = photos, size, frames
        self.seed, self.occlusion_odds = seed, occlusion_odds

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        cv2.setNumThreads(1)  # one rendering thread per worker process
        generator = SceneGenerator(self.photos, size=self.size)
        while True:
            occlusion = (True if self.frames >= MIN_EVENT_FRAMES
                         and rng.random() < self.occlusion_odds else None)
            clip = generator.clip(int(rng.integers(TRAIN_SEED_LIMIT)), num_frames=self.frames,
                                  occlusion=occlusion)
            # the target must be there to be prompted on the first frame
            candidates = [0] if occlusion else np.flatnonzero(clip.visibility[0] >= 0.3)
            if len(candidates) == 0:
                continue
            target = int(rng.choice(candidates))
            yield torch.from_numpy(clip.frames), target_first(clip.masks, target)


class LabelledClipStream(IterableDataset):
    """An endless stream of training clips from labelled video (``labelled.find_sequences``),
    in ``ClipStream``'s form: a random window of ``frames`` consecutive annotated frames of a
    random sequence, resized to ``size x size``, tracking a random object present on the
    window's first frame."""

    def __init__(self, sequences, size, frames, seed):
        self.sequences = [s for s in sequences if len(s.frames) >= frames]
        if not self.sequences:
            raise ValueError(f"no labelled sequence has {frames} annotated frames: lower "
                             "--frames")
        self.size, self.frames, self.seed = size, frames, seed

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        cv2.setNumThreads(1)  # one decoding thread per worker process
        misses = 0
        while True:
            sequence = self.sequences[rng.integers(len(self.sequences))]
            first = int(rng.integers(len(sequence.frames) - self.frames + 1))
            frames, ids = sequence.read(range(first, first + self.frames), size=self.size)
            masks = masks_of(ids, object_ids_in(ids))
            present = np.flatnonzero(masks[0].any(axis=(1, 2)))
            if not len(present):
                misses += 1
                if misses == EMPTY_WINDOW_LIMIT:
                    raise ValueError(f"{misses} windows in a row showed no object on their "
                                     "first frame: are the annotations empty?")
                continue
            misses = 0
            target = int(rng.choice(present))
            yield torch.from_numpy(frames), target_first(masks, target)


class MixedClipStream(IterableDataset):
    """Clips drawn from ``first`` with odds ``odds``, else from ``second``: fine-tuning on
    labelled video while the generated clips keep coming, against forgetting them."""

    def __init__(self, first, second, odds, seed):
        self.first, self.second, self.odds, self.seed = first, second, odds, seed

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0, 1])
        first, second = iter(self.first), iter(self.second)
        while True:
            yield next(first if rng.random() < self.odds else second)


def clip_stream(options, size):
    """The training clips ``options`` ask for: generated, labelled, or a mix."""
    if options.dataset:
        labelled = LabelledClipStream(options.sequences, size, options.frames, options.seed)
        if options.dataset_odds >= 1.0:
            return labelled
    generated = ClipStream(options.photo_files, size, options.frames, options.seed,
                           options.occlusion_odds)
    if not options.dataset:
        return generated
    return MixedClipStream(labelled, generated, options.dataset_odds, options.seed)


def target_first(masks, target):
    """T x K x S x S masks -> T x ``MAX_TARGETS`` x S x S: the target to track first, then
    the clip's other targets (as many as fit), then empty masks."""
    order = [target] + [k for k in range(masks.shape[1]) if k != target]
    order = order[:MAX_TARGETS]
    padded = np.zeros((masks.shape[0], MAX_TARGETS, *masks.shape[2:]), bool)
    padded[:, :len(order)] = masks[:, order]
    return torch.from_numpy(padded)


def init_for_training(model):
    """Start a freshly built model as SAM 2's training does."""
    params = dict(model.named_parameters())
    for name in ZERO_BUILT:
        if name in params:
            torch.nn.init.trunc_normal_(params[name].data, std=0.02)
    return model


def normalise(frames):
    """uint8 N x S x S x 3 -> the model's normalised N x 3 x S x S input."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    mean = x.new_tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------- prompts


def sample_points(regions, generator):
    """One pixel (x, y) drawn uniformly inside each of B boolean regions (anywhere when a
    region is empty)."""
    weights = regions.flatten(1).float()
    weights = torch.where(weights.sum(1, keepdim=True) == 0, 1.0, weights)
    # inverse-CDF sampling: torch.multinomial over a 256 x 256 image costs ~20 ms on CPU
    cumulative = weights.cumsum(1)
    draw = torch.rand(len(weights), 1, generator=generator, device=weights.device)
    index = torch.searchsorted(cumulative, draw * cumulative[:, -1:], right=True).squeeze(1)
    index = index.clamp(max=weights.shape[1] - 1)
    width = regions.shape[-1]
    return torch.stack([index % width, index // width], dim=1).float()


def corrective_clicks(predicted, truth, generator):
    """A click on each object's larger error: positive in a missed region, negative on a
    false one, as SAM 2 samples its corrective clicks. Returns B x 1 x 2, B x 1."""
    missed, false = truth & ~predicted, predicted & ~truth
    positive = missed.flatten(1).sum(1) >= false.flatten(1).sum(1)
    region = torch.where(positive[:, None, None], missed, false)
    perfect = region.flatten(1).sum(1) == 0
    region = torch.where(perfect[:, None, None], truth, region)
    positive = positive | perfect
    return sample_points(region, generator)[:, None], positive.int()[:, None]


def noisy_boxes(truth, generator):
    """Ground-truth boxes with each corner moved by Gaussian noise of 10% of the box side
    (at most 20 px), as box corner points (labels 2, 3). Returns B x 2 x 2, B x 2.
    Batched, with no per-object loop: on a GPU each object's ``nonzero`` would wait for
    the device."""
    size = truth.shape[-1]
    coords = torch.arange(size, device=truth.device)

    def extent(occupied):  # first and last occupied index along the last axis
        first = torch.where(occupied, coords, size).amin(-1)
        last = torch.where(occupied, coords, -1).amax(-1)
        return first, last

    x0, x1 = extent(truth.any(dim=1))
    y0, y1 = extent(truth.any(dim=2))
    box = torch.stack([x0, y0, x1, y1], dim=1).float()
    side = (box[:, 2:] - box[:, :2]).repeat(1, 2)
    noise = torch.randn(box.shape, generator=generator, device=truth.device) * 0.1 * side
    boxes = (box + noise.clamp(-20, 20)).clamp(0, size - 1)
    labels = torch.tensor([[2, 3]], device=truth.device).expand(len(boxes), 2)
    return boxes.view(-1, 2, 2), labels.int()


def first_prompt(kind, truth, generator):
    """Points and labels (B x P x 2, B x P) of a first-frame prompt of ``kind``."""
    if kind == "click":
        return sample_points(truth, generator)[:, None], truth.new_ones(len(truth), 1).int()
    if kind == "box":
        return noisy_boxes(truth, generator)
    # two clicks on the object and one off it
    points = [sample_points(truth, generator), sample_points(truth, generator),
              sample_points(~truth, generator)]
    labels = torch.tensor([[1, 1, 0]], device=truth.device).expand(len(truth), 3)
    return torch.stack(points, dim=1), labels.int()


# ----------------------------------------------------------------- losses


def prediction_loss(out, truth, present, pixel_loss="bce", hidden_weight=1.0,
                    focal_alpha=FOCAL_ALPHA, dice_weight=DICE_WEIGHT):
    """SAM 2's losses for one prediction of B objects against B x S x S truth masks.

    The mask losses (``pixel_loss`` per pixel, plus dice) count only the best of the
    candidate masks and only where the object is present, the IoU-prediction loss all the
    candidates where it is present; the object-score loss counts everywhere, ``hidden_weight``
    times over where the object is absent. ``focal_alpha`` is the focal loss's weight of a
    target pixel (a background pixel gets 1 - alpha).
    """
    logits = out.high_res_multimasks
    target = truth[:, None].float().expand_as(logits)
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if pixel_loss == "focal":
        p_t = prob * target + (1 - prob) * (1 - target)
        alpha_t = focal_alpha * target + (1 - focal_alpha) * (1 - target)
        pixel = FOCAL_WEIGHT * (alpha_t * bce * (1 - p_t) ** 2).flatten(2).mean(-1)
    else:
        pixel = bce.flatten(2).mean(-1)
    inter = (prob * target).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    mask_loss = pixel + dice_weight * dice
    best = mask_loss.argmin(dim=1)
    rows = torch.arange(len(best), device=best.device)
    with torch.no_grad():
        binary = logits > 0
        actual_iou = ((binary & (target > 0)).flatten(2).sum(-1)
                      / (binary | (target > 0)).flatten(2).sum(-1).clamp(min=1))
    # every candidate's predicted IoU is supervised (SAM 2.1's supervise_all_iou): the
    # tracker keeps the candidate with the highest, so the ranking must be learnt too
    iou_loss = (out.ious.float() - actual_iou).abs().mean(dim=1)
    present_f = present.float()
    per_object = (mask_loss[rows, best] + IOU_WEIGHT * iou_loss) * present_f
    score = F.binary_cross_entropy_with_logits(out.object_score_logits[:, 0].float(),
                                               present_f, reduction="none")
    score = score * torch.where(present, 1.0, hidden_weight)
    total = (per_object + SCORE_WEIGHT * score).mean()
    return total, actual_iou[rows, best]


# ------------------------------------------------------------- one clip


def encode_frames(model, images):
    """``model.encode_image`` over any number of images, ``ENCODE_CHUNK`` at a time."""
    parts = [model.encode_image(chunk) for chunk in images.split(ENCODE_CHUNK)]
    if len(parts) == 1:
        return parts[0]
    return ImageFeatures(embed=torch.cat([p.embed for p in parts]),
                         pos=torch.cat([p.pos for p in parts]),
                         high_res=[torch.cat(level) for level in zip(*(p.high_res for p in parts))])


def mask_terms(options):
    """``prediction_loss``'s mask-loss options, as the command line set them."""
    return dict(pixel_loss=options.pixel_loss, focal_alpha=options.focal_alpha,
                dice_weight=options.dice_weight)


def clip_loss(model, frames, targets, options, rng, generator):
    """Loss of one batch of clips (B x T x S x S x 3 uint8) with the masks of their targets
    (B x T x K x S x S): target 0 is tracked through the clip, and every target is
    segmented as an image on some of the frames where it shows."""
    b, t = targets.shape[:2]
    truth = targets[:, :, 0]
    present = truth.flatten(2).any(-1)  # B x T
    # The host reads which slots show and which frames show every target before the frames
    # are encoded: on a GPU, reading waits for all the work queued before it. Nothing else
    # in a step is read back (see mean_loss_and_iou).
    slots = targets.flatten(0, 2)
    shown = torch.nonzero(slots.flatten(1).any(-1)).squeeze(1)
    all_present = present.all(dim=0).tolist()
    features = encode_frames(model, normalise(frames.flatten(0, 1)))
    embed, pos = (x.unflatten(0, (b, t)) for x in (features.embed, features.pos))
    high_res = [h.unflatten(0, (b, t)) for h in features.high_res]
    bank = ObjectMemory(0)
    losses, ious, showing = [], [], []
    terms = mask_terms(options)

    def score(out, frame):
        loss, iou = prediction_loss(out, truth[:, frame], present[:, frame],
                                    hidden_weight=options.hidden_weight, **terms)
        losses.append(loss)
        ious.append(iou)
        showing.append(present[:, frame])

    # Every (frame, target) pair where the target shows is also an image to segment from a
    # prompt of its own (SAM 2 trains on images beside videos, several masks per image): the
    # dense signal that teaches a model from scratch where a prompt points, long before its
    # memory is of any use, for the price of a decode (the frame is encoded anyway). A fixed
    # share of the B x T x K slots (all the shown pairs when fewer show), so that the batch
    # keeps its size from step to step: on a GPU each new size costs new kernel plans.
    count = min(len(shown), max(1, round(options.image_odds * len(slots))))
    if options.image_odds > 0 and count > 0:
        order = torch.randperm(len(shown), generator=generator, device=shown.device)
        rows = shown[order[:count]]
        image_truth = slots[rows]
        frame_rows = rows // targets.shape[2]
        points, labels = first_prompt(rng.choice(PROMPT_KINDS[:3]), image_truth, generator)
        out = model.predict_masks(model.without_memory(features.embed[frame_rows]),
                                  [h[frame_rows] for h in features.high_res], points, labels,
                                  multimask=model.use_multimask(True, labels.shape[1]))
        loss, iou = prediction_loss(out, image_truth, image_truth.new_ones(len(image_truth)),
                                    **terms)
        losses.append(loss)
        ious.append(iou)
        showing.append(torch.ones_like(iou, dtype=torch.bool))

    def frame(f):
        return ImageFeatures(embed[:, f], pos[:, f], [h[:, f] for h in high_res])

    # Frame 0: the prompt, maybe a corrective click, then its memory.
    kind = rng.choice(PROMPT_KINDS, p=PROMPT_ODDS)
    first = frame(0)
    if kind == "mask":
        out, entry = step.mask_step(model, first, truth[:, 0, None])
    else:
        pix = model.without_memory(first.embed)
        points, labels = first_prompt(kind, truth[:, 0], generator)
        out, entry = step.prompt_step(model, first, pix, points, labels)
        score(out, 0)
        if rng.random() < options.correct_odds:
            points, labels = corrective_clicks(out.high_res_masks[:, 0] > 0, truth[:, 0],
                                               generator)
            out, entry = step.prompt_step(model, first, pix, points, labels, entry)
            score(out, 0)
    if t == 1:  # an image, not a clip: nothing will read a memory
        return mean_loss_and_iou(losses, ious, showing)
    entry.features = step.remember_prompt(model, first, entry.low_res, entry.score)
    bank.set_prompt_entry(0, entry)

    # A later frame where every object is present may get a corrective click.
    candidates = [f for f in range(1, t) if all_present[f]]
    corrected = (int(rng.choice(candidates))
                 if candidates and rng.random() < options.correct_odds else None)
    cfg = model.config
    for f in range(1, t):
        picks = [bank.select(f, cfg.num_maskmem, cfg.max_obj_ptrs_in_encoder)]
        pix, out, entry = step.tracked_step(model, frame(f), picks, remember=f != corrected)
        score(out, f)
        if f == corrected:
            points, labels = corrective_clicks(out.high_res_masks[:, 0] > 0, truth[:, f],
                                               generator)
            out, entry = step.prompt_step(model, frame(f), pix, points, labels, entry,
                                          initial=False)
            score(out, f)
            entry.features = step.remember_prompt(model, frame(f), entry.low_res, entry.score)
            bank.set_prompt_entry(f, entry)
        else:
            bank.recent[f] = entry
    return mean_loss_and_iou(losses, ious, showing)


def candidate_parameters(model):
    """Freeze ``model`` except what only its three candidate masks go through: their
    hypernetwork MLPs and the IoU head's outputs that rate them (rows 1-3 of its last
    layer; row 0 rates the single mask). Returns the optimiser's parameter groups. The
    single mask, its IoU estimate, the object score and all that the tracker reads stay
    bit for bit."""
    decoder = model.sam_mask_decoder
    model.requires_grad_(False)
    hypernetworks = list(decoder.output_hypernetworks_mlps[1:].parameters())
    rating = list(decoder.iou_prediction_head.layers[-1].parameters())
    for parameter in hypernetworks + rating:
        parameter.requires_grad_(True)
    for parameter in rating:
        parameter.register_hook(lambda grad: torch.cat([torch.zeros_like(grad[:1]), grad[1:]]))
    # no weight decay where row 0 must not move
    return [{"params": hypernetworks}, {"params": rating, "weight_decay": 0.0}]


def trained_parameters(model, options):
    """The optimiser's parameters: all of them; with ``--candidates-only`` those of
    ``candidate_parameters``; with ``--freeze-encoder`` all but the image encoder's, which
    then builds no autograd graph (a step takes about half the time on the CPU)."""
    if options.candidates_only:
        return candidate_parameters(model)
    if options.freeze_encoder:
        model.image_encoder.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def candidate_loss(model, frames, targets, options, generator):
    """Loss of the three candidate masks (``--candidates-only``) answering one click on every
    shown target of every frame: the mask loss on the best of them, every one's IoU
    estimate supervised, as SAM 2 trains them."""
    slots = targets.flatten(0, 2)
    rows = torch.nonzero(slots.flatten(1).any(-1)).squeeze(1)  # read before the encoder runs
    if not len(rows):
        return None, None
    with torch.no_grad():  # the encoder is frozen: no graph to keep
        features = encode_frames(model, normalise(frames.flatten(0, 1)))
    truth = slots[rows]
    frame_rows = rows // targets.shape[2]
    points, labels = first_prompt("click", truth, generator)
    out = model.predict_masks(model.without_memory(features.embed[frame_rows]),
                              [h[frame_rows] for h in features.high_res], points, labels,
                              multimask=True)
    loss, iou = prediction_loss(out, truth, truth.new_ones(len(truth)), **mask_terms(options))
    return mean_loss_and_iou([loss], [iou], [torch.ones_like(iou, dtype=torch.bool)])


def mean_loss_and_iou(losses, ious, showing):
    """(mean loss, mean IoU of the predictions whose object shows, as ``showing`` says of
    each), or (None, None) when nothing was scored (a one-frame clip prompted by its mask).
    A weighted mean, not an indexed one: indexing by a mask would make a GPU step wait."""
    if not losses:
        return None, None
    iou, weight = torch.cat(ious), torch.cat(showing).float()
    return torch.stack(losses).mean(), (iou * weight).sum() / weight.sum().clamp(min=1)


# -------------------------------------------------------------- the loop


def learning_rate(options, progress):
    """Linear warm-up over the first 5%, then cosine decay to 1% of the peak."""
    if progress < 0.05:
        return options.lr * progress / 0.05
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.05) / 0.95)))
    return options.lr * (0.01 + 0.99 * cosine)


def configure_device(device):
    """Backend choices for training on ``device``. On CUDA, cuDNN's attention is switched off
    (PyTorch then takes its flash or memory-efficient kernels): on an H200 with PyTorch
    2.11 its backward failed ("mha_graph.execute ... is_good()") at 128 clips x 8 frames,
    and at 32 clips each backward call took 2.3 ms of CPU (profiler)."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def train_step(model, optimizer, frames, targets, options, rng, generator):
    """One optimiser step on a batch of clips (bfloat16 autocast on CUDA): the (loss, IoU)
    tensors, or (None, None) when nothing was scored."""
    cuda = frames.device.type == "cuda"
    with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=cuda):
        if options.candidates_only:
            loss, iou = candidate_loss(model, frames, targets, options, generator)
        else:
            loss, iou = clip_loss(model, frames, targets, options, rng, generator)
    if loss is None:
        return None, None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), options.clip)
    optimizer.step()
    return loss, iou


def train(options):
    torch.manual_seed(options.seed)
    device = torch.device(options.device)
    if options.init:
        model = build_sam2("auto", checkpoint=options.init, device=device)
    else:
        model = init_for_training(build_sam2(options.variant, device=device))
    model.train()
    optimizer = torch.optim.AdamW(trained_parameters(model, options), lr=options.lr,
                                  weight_decay=options.weight_decay)
    stream = clip_stream(options, model.image_size)
    # pinned batches make the copies below asynchronous: at 320 clips a batch is 1 GB
    # (uint8 frames and bool masks), copied from pageable memory while the GPU waits
    loader = DataLoader(stream, batch_size=options.batch, num_workers=options.workers,
                        persistent_workers=options.workers > 0,
                        pin_memory=device.type == "cuda")
    rng = np.random.default_rng(options.seed)
    generator = torch.Generator(device=device).manual_seed(options.seed)
    configure_device(device)
    budget = options.minutes * 60.0
    start = last_save = last_log = time.monotonic()
    step, seen, loss_sum, iou_sum, count = 0, 0, 0.0, 0.0, 0
    print(f"training {model.config.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}"
          f" M parameters) on {device}: batch {options.batch} x {options.frames} frames, "
          f"{options.minutes} min or {options.steps} steps", flush=True)
    data_time = compute_time = 0.0
    fetched = time.monotonic()
    for frames, targets in loader:
        began = time.monotonic()
        data_time += began - fetched
        elapsed = began - start
        progress = max(elapsed / budget, step / options.steps if options.steps else 0.0)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(options, progress)
        frames = frames.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        loss, iou = train_step(model, optimizer, frames, targets, options, rng, generator)
        if loss is None:
            fetched = time.monotonic()
            continue
        step += 1
        seen += len(targets)
        loss_sum, iou_sum, count = loss_sum + loss.item(), iou_sum + iou.item(), count + 1
        now = time.monotonic()
        compute_time += now - began
        if now - last_log >= options.log_every:
            print(f"step {step:6d}  {now - start:7.0f} s  clips {seen:7d}  "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}  loss {loss_sum / count:.4f}  "
                  f"train IoU {iou_sum / count:.3f}  s/step: data {data_time / count:.3f} "
                  f"compute {compute_time / count:.3f}", flush=True)
            loss_sum, iou_sum, count, last_log = 0.0, 0.0, 0, now
            data_time = compute_time = 0.0
        if now - last_save >= options.save_every:
            save_checkpoint(model, options.out)
            last_save = now
        fetched = time.monotonic()
    save_checkpoint(model, options.out)
    minutes = (time.monotonic() - start) / 60
    print(f"done: {step} steps, {seen} clips in {minutes:.1f} min -> {options.out}", flush=True)
    return model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint to write (Meta's layout)")
    parser.add_argument("--variant", default="sam_ros_mini")
    parser.add_argument("--init", help="checkpoint to start from instead of a fresh model")
    parser.add_argument("--photos", help=f"folder of photographs for backgrounds and "
                        f"textures (default: ${PHOTOS_ENV}, else {SAMPLE_PHOTOS})")
    parser.add_argument("--dataset", help="train on labelled video in the DAVIS layout "
                        "(lab.labelled) instead of generated clips: fine-tuning "
                        "on one's own footage, usually with --init")
    parser.add_argument("--dataset-odds", type=float, default=1.0,
                        help="with --dataset: share of clips taken from it; the rest are "
                             "generated, against forgetting what the model knew")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=50.0, help="wall-clock budget")
    parser.add_argument("--steps", type=int, default=0, help="step budget (0: time only)")
    parser.add_argument("--batch", type=int, default=4, help="clips per step")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--pixel-loss", choices=PIXEL_LOSSES, default="bce",
                        help="per-pixel mask loss beside dice: cross-entropy, or SAM 2's "
                             "focal (x20)")
    parser.add_argument("--focal-alpha", type=float, default=FOCAL_ALPHA,
                        help="focal loss's weight of target pixels (background: 1 - alpha)")
    parser.add_argument("--dice-weight", type=float, default=DICE_WEIGHT,
                        help="weight of the dice loss beside the per-pixel loss")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    parser.add_argument("--correct-odds", type=float, default=0.5,
                        help="chance of a corrective click on the first / on a later frame")
    parser.add_argument("--image-odds", type=float, default=0.5,
                        help="share of the frame x target slots (%d per frame; empty ones "
                             "are never drawn) also segmented from a prompt without memory"
                             % MAX_TARGETS)
    parser.add_argument("--occlusion-odds", type=float, default=0.3,
                        help="share of clips whose target is hidden for a few frames mid-clip")
    parser.add_argument("--hidden-weight", type=float, default=1.0,
                        help="weight of the object-score loss on frames where the target is "
                             "hidden (SAM 2: 1). Hidden frames are rare; but 4 on the bundled "
                             "model made the head say 'hidden' everywhere (CHANGELOG.md, stage 5)")
    parser.add_argument("--candidates-only", action="store_true",
                        help="train only the three candidate masks (their hypernetworks and "
                             "their rows of the IoU head) from one click on each target of each "
                             "frame; the single mask and tracking stay bit for bit")
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="leave the image encoder (trunk and neck) as it is and train the "
                             "rest: about twice the clips per minute on a CPU")
    parser.add_argument("--workers", type=int, default=1, help="data-generating processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--save-every", type=float, default=300.0, help="seconds")
    options = parser.parse_args(argv)
    if not 0.0 < options.dataset_odds <= 1.0:
        parser.error("--dataset-odds must be in (0, 1]")
    if options.freeze_encoder and options.candidates_only:
        parser.error("--candidates-only freezes the encoder already: leave out "
                     "--freeze-encoder")
    if options.dataset_odds < 1.0 and not options.dataset:
        parser.error("--dataset-odds needs --dataset")
    if options.dataset:
        try:
            options.sequences = find_sequences(options.dataset)
        except ValueError as e:
            parser.error(str(e))
        if options.dataset_odds == 1.0:
            if options.photos:
                parser.error("--photos is for generated clips: with --dataset, leave it out "
                             "or mix them in with --dataset-odds below 1")
            return options
    try:
        options.photo_files = find_photos(options.photos)
    except FileNotFoundError as e:
        parser.error(str(e))
    return options


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    main()
