"""Per-frame tracking time, one and three objects: our StreamingTracker (float32 and
bfloat16) against Meta's SAM2VideoPredictor, one run, same random weights, same frames.

    .venv/bin/python bench/bench_tracker.py [--image-size 1024] [--frames 9] [--timed 3]
    python bench/bench_tracker.py --skip-oracle --device cuda    # ours alone, on a GPU

The first frames fill the memory bank (6 recent memories + the prompt); only the last
``--timed`` frames, with a full bank, are timed. For ours it also prints where a timed
frame's time goes: the model's modules (the image encoder, shared by all objects; memory
attention, mask decoder and memory encoder, run for every object) and the rest.
"""

import argparse
import contextlib
import tempfile
import time
import warnings

import numpy as np
import torch

from common import describe_machine, sync
from lab.oracle import (
    VIDEOS,
    build_oracle,
    copy_weights,
    oracle_video_state,
    randomize_,
    read_video_frames,
)
from sam_ros.model import SAM2, get_config
from sam_ros.tracker import StreamingTracker


def prompts(frame, count):
    h, w = frame.shape[:2]
    clicks = [(0.45, 0.55), (0.25, 0.3), (0.7, 0.35)]
    return [(i + 1, dict(points=[[w * x, h * y]], labels=[1]))
            for i, (x, y) in enumerate(clicks[:count])]


MODULES = {"image_encoder": "encoder", "memory_attention": "memory attention",
           "sam_mask_decoder": "decoder", "memory_encoder": "memory encoder"}


@contextlib.contextmanager
def module_clock(model, seconds):
    """Add each of ``MODULES``' wall time (device synchronised) to ``seconds[name]``."""

    def clocked(name, forward):
        def run(*args, **kwargs):
            sync(model.device)
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            sync(model.device)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            return out
        return run

    for name in MODULES:
        module = getattr(model, name)
        module.forward = clocked(name, module.forward)  # an instance attribute, shadowing
    try:
        yield seconds
    finally:
        for name in MODULES:
            del getattr(model, name).forward  # the class's forward again


def time_ours(model, frames, count, timed, precision):
    """(mean seconds per timed frame, {module: mean seconds per timed frame})."""
    tracker = StreamingTracker(model, precision=precision)
    tracker.step(frames[0])
    for obj_id, prompt in prompts(frames[0], count):
        tracker.add_prompt(obj_id, **prompt)
    for frame in frames[1:-timed]:
        tracker.step(frame)
    seconds = {}
    start = time.perf_counter()
    with module_clock(model, seconds):
        for frame in frames[-timed:]:
            tracker.step(frame)
        sync(model.device)
    total = (time.perf_counter() - start) / timed
    return total, {name: value / timed for name, value in seconds.items()}


def time_oracle(oracle, frames, count, timed, image_size):
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pathlib
        state = oracle_video_state(oracle, frames, image_size, pathlib.Path(folder))
        for obj_id, prompt in prompts(frames[0], count):
            oracle.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, **prompt)
        times, last = [], time.perf_counter()
        for frame_idx, _, _ in oracle.propagate_in_video(state):
            now = time.perf_counter()
            if frame_idx:
                times.append(now - last)
            last = time.perf_counter()
    return float(np.mean(times[-timed:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="sam2.1_hiera_t")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--timed", type=int, default=3)
    parser.add_argument("--skip-oracle", action="store_true",
                        help="time ours alone (the oracle's random weights, drawn the same "
                             "way, without Meta's package)")
    parser.add_argument("--device", default="cpu", help="ours only; the oracle runs on CPU")
    args = parser.parse_args()
    if args.device != "cpu" and not args.skip_oracle:
        parser.error("the oracle runs on CPU only: add --skip-oracle to time ours on a GPU")
    ours = SAM2(get_config(args.variant, image_size=args.image_size))
    if args.skip_oracle:
        oracle, model = None, randomize_(ours).eval()
    else:
        oracle = build_oracle(args.variant, image_size=args.image_size, video=True)
        model = copy_weights(oracle, ours)
    model = model.to(args.device)
    frames = read_video_frames(VIDEOS[0], count=args.frames, start=100)
    print(f"{args.variant} at {args.image_size}, {frames[0].shape[1]}x{frames[0].shape[0]} "
          f"real frames, mean of the last {args.timed} of {args.frames - 1} tracked frames, "
          f"{describe_machine(args.device)}")
    print(f"{'objects':<9}{'reference':>11}{'ours fp32':>11}{'ours bf16':>11}{'fp32 x':>9}"
          f"{'bf16 x':>9}")
    rows, shares = {}, []
    with torch.inference_mode():
        for count in (1, 3):
            ref = float("nan") if args.skip_oracle else time_oracle(
                oracle, frames, count, args.timed, args.image_size)
            (f32, f32_parts), (bf16, bf16_parts) = (
                time_ours(model, frames, count, args.timed, precision)
                for precision in ("float32", "bfloat16"))
            rows[count] = (ref, f32, bf16)
            shares += [(count, "fp32", f32, f32_parts), (count, "bf16", bf16, bf16_parts)]
            print(f"{count:<9}{ref:>11.3f}{f32:>11.3f}{bf16:>11.3f}{ref / f32:>9.2f}"
                  f"{ref / bf16:>9.2f}")
    print("(seconds per frame; x = reference / ours, above 1 means ours is faster)")
    for i, name in ((0, "reference"), (1, "ours fp32"), (2, "ours bf16")):
        print(f"three objects / one object, {name}: {rows[3][i] / rows[1][i]:.2f}")
    print("where a frame of ours goes (s/frame):")
    for count, precision, total, parts in shares:
        listed = ", ".join(f"{label} {parts.get(name, 0.0):.3f}" for name, label in MODULES.items())
        print(f"  {count} object{'s' if count > 1 else ''}, {precision}: {listed}, "
              f"the rest {total - sum(parts.values()):.3f}")


if __name__ == "__main__":
    main()
