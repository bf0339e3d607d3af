"""Write generated clips as labelled video in the DAVIS layout (``labelled.py``): to try
fine-tuning (``train --dataset``) and scoring (``evaluate --dataset``) end to end before
labelling footage of one's own, or to move the generator onto other backgrounds
(``--photos``) and measure what fine-tuning on them buys.

    python -m lab.export_clips OUT --videos 100 --frames 32      # training seeds
    python -m lab.export_clips OUT --held-out                    # evaluate's clips

``--held-out`` writes ``evaluate``'s own held-out clips (test seeds, a target hidden
mid-clip) with only the targets it prompts, so ``evaluate --dataset OUT`` scores exactly
what ``evaluate`` scores on the generated clips. Otherwise clips come from lab seeds
(``seed-offset`` onwards) with all their targets.
"""

import argparse

from .evaluate import DEFAULT_FRAMES, DEFAULT_VIDEOS, held_out_clips, prompted_targets
from .labelled import write_sequence
from .synthetic import PHOTOS_ENV, SAMPLE_PHOTOS, TRAIN_SEED_LIMIT, SceneGenerator, find_photos


def training_clips(generator, videos, frames, seed_offset=0):
    """Clips of training seeds ``seed_offset``.., their events drawn by the generator."""
    for seed in range(seed_offset, seed_offset + videos):
        yield generator.clip(seed, num_frames=frames)


def export(root, clips, held_out):
    """Write each clip as sequence ``clipNNNN``; returns how many were written."""
    count = 0
    for count, clip in enumerate(clips, 1):
        targets = prompted_targets(clip)[0] if held_out else list(range(clip.masks.shape[1]))
        write_sequence(root, f"clip{count - 1:04d}", clip.frames, clip.masks[:, targets])
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="dataset folder to write (JPEGImages/, Annotations/)")
    parser.add_argument("--videos", type=int, default=DEFAULT_VIDEOS)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--held-out", action="store_true",
                        help="evaluate's held-out clips instead of training seeds")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="first clip: a training seed, or with --held-out a held-out index")
    parser.add_argument("--photos", help=f"folder of photographs for the generator (default: "
                        f"${PHOTOS_ENV}, else {SAMPLE_PHOTOS})")
    args = parser.parse_args(argv)
    if args.videos < 1 or args.seed_offset < 0:
        parser.error("need --videos >= 1 and --seed-offset >= 0")
    if not args.held_out and args.seed_offset + args.videos > TRAIN_SEED_LIMIT:
        parser.error(f"training seeds end at {TRAIN_SEED_LIMIT}")
    try:
        generator = SceneGenerator(find_photos(args.photos))
    except FileNotFoundError as exc:
        parser.error(str(exc))
    make = held_out_clips if args.held_out else training_clips
    try:
        count = export(args.out, make(generator, args.videos, args.frames, args.seed_offset),
                       args.held_out)
    except ValueError as exc:  # a clip too short for the held-out occlusion
        parser.error(str(exc))
    print(f"wrote {count} sequences of {args.frames} frames to {args.out}")


if __name__ == "__main__":
    main()
