"""Resident memory over a long stream: our StreamingTracker against Meta's
SAM2VideoPredictor, same random weights, same frames (small, so the run is quick).

    .venv/bin/python bench/bench_tracker_memory.py [--frames 2000] [--image-size 128]

Prints the process's resident set size at frame 100 and at the last frame, for each.
The reference needs the whole video up front (its frames are part of its footprint).
"""

import argparse
import gc
import itertools
import pathlib
import tempfile
import warnings

import cv2
import torch

from common import describe_machine
from lab.oracle import VIDEOS, build_oracle, copy_weights, oracle_video_state, read_video_frames
from sam_ros.model import SAM2, get_config
from sam_ros.tracker import StreamingTracker


def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def stream(count, width):
    source = read_video_frames(VIDEOS[0], count=120, start=0)
    height = width * source[0].shape[0] // source[0].shape[1]
    small = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in source]
    # play forwards then backwards, so that the motion stays continuous
    loop = itertools.cycle(small + small[::-1])
    return [next(loop) for _ in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--skip-oracle", action="store_true")
    args = parser.parse_args()
    frames = stream(args.frames, args.width)
    h, w = frames[0].shape[:2]
    prompt_points = [[[0.45 * w, 0.55 * h]], [[0.25 * w, 0.3 * h]], [[0.7 * w, 0.35 * h]]]
    checkpoints = sorted({min(100, args.frames), args.frames})
    oracle = build_oracle("sam2.1_hiera_t", image_size=args.image_size, video=True)
    model = copy_weights(oracle, SAM2(get_config("sam2.1_hiera_t", image_size=args.image_size)))
    print(f"{args.frames} frames of {w}x{h}, image_size {args.image_size}, {args.objects} "
          f"objects, {describe_machine('cpu')}")

    with torch.inference_mode():
        gc.collect()
        tracker = StreamingTracker(model)
        ours = {}
        for i, frame in enumerate(frames, start=1):
            tracker.step(frame)
            if i == 1:
                for obj_id in range(1, args.objects + 1):
                    tracker.add_prompt(obj_id, points=prompt_points[obj_id - 1], labels=[1])
            if i in checkpoints:
                ours[i] = rss_mib()
        del tracker
        gc.collect()
        print(f"ours:      RSS {ours[checkpoints[0]]:.1f} MiB at frame {checkpoints[0]}, "
              f"{ours[checkpoints[-1]]:.1f} MiB at frame {checkpoints[-1]} "
              f"({100 * (ours[checkpoints[-1]] / ours[checkpoints[0]] - 1):+.2f}%)")
        if args.skip_oracle:
            return
        theirs = {}
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = oracle_video_state(oracle, frames, args.image_size, pathlib.Path(folder))
            for obj_id in range(1, args.objects + 1):
                oracle.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id,
                                             points=prompt_points[obj_id - 1], labels=[1])
            for frame_idx, _, _ in oracle.propagate_in_video(state):
                if frame_idx + 1 in checkpoints:
                    theirs[frame_idx + 1] = rss_mib()
        print(f"reference: RSS {theirs[checkpoints[0]]:.1f} MiB at frame {checkpoints[0]}, "
              f"{theirs[checkpoints[-1]]:.1f} MiB at frame {checkpoints[-1]} "
              f"({100 * (theirs[checkpoints[-1]] / theirs[checkpoints[0]] - 1):+.2f}%)")


if __name__ == "__main__":
    main()
