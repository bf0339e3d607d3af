"""Training throughput of the bundled model's recipe: seconds per step and frames per second
for batches of clips, counting the model's forward, backward and optimiser step (the clips
are generated beforehand, so data generation is not counted; train.py reports that apart).

    .venv/bin/python bench/bench_training.py [--device cuda] [--batches 4,32] [--frames 8]
                                             [--steps 3] [--profile] [--freeze-encoder]

It also counts the operators a step dispatches: on a GPU each is at least one kernel launch
from Python, so a step cannot be faster than that count times the launch cost, whatever the
batch. And the operators whose answer the host must read, so that on a GPU it waits for all
the work queued before them (``HOST_READS``; the timed step's ``loss.item()`` not counted).
``--profile`` prints the operators that take the most time (device time on a GPU).
"""

import argparse
import itertools
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from common import describe_machine, sync
from lab import train
from sam_ros.model import build_sam2

# Operators whose result sizes or values the host needs: on a GPU each waits for the device.
HOST_READS = ("aten::nonzero", "aten::is_nonzero", "aten::masked_select")


def make_batch(stream, batch):
    clips = list(itertools.islice(stream, batch))
    return torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="4", help="comma-separated clips per step")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per batch size")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--photos", help="folder of photographs (as train.py)")
    parser.add_argument("--freeze-encoder", action="store_true", help="as train.py's")
    args = parser.parse_args()
    device = torch.device(args.device)
    train.configure_device(device)
    options = train.parse_args(["--out", "unused.pt", "--frames", str(args.frames)]
                               + (["--photos", args.photos] if args.photos else [])
                               + (["--freeze-encoder"] if args.freeze_encoder else []))
    model = build_sam2(device=device).train()
    optimizer = torch.optim.AdamW(train.trained_parameters(model, options), lr=1e-5)
    stream = iter(train.ClipStream(options.photo_files, model.image_size, args.frames, seed=0))
    print(f"{model.config.name}, {args.frames} frames per clip, image loss on "
          f"{options.image_odds:.0%} of frame x target slots"
          f"{', image encoder frozen' if args.freeze_encoder else ''}, "
          f"{describe_machine(device)}")
    print(f"{'clips':>6}{'s/step':>9}{'frames/s':>10}{'ops/step':>10}{'reads/step':>11}"
          f"{'peak GiB':>10}")
    for batch in (int(b) for b in args.batches.split(",")):
        frames, targets = (t.to(device) for t in make_batch(stream, batch))
        rng, generator = np.random.default_rng(0), torch.Generator(device).manual_seed(0)

        def step():
            loss, _ = train.train_step(model, optimizer, frames, targets, options, rng, generator)
            return loss.item()  # waits for the device

        step()  # warm-up: allocator, kernels' first launches
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync(device)
        seconds = (time.perf_counter() - start) / args.steps
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                               else [])
        with profile(activities=activities) as prof:
            step()
            sync(device)
        events = prof.key_averages()
        ops = sum(e.count for e in events if e.key.startswith("aten::"))
        reads = sum(e.count for e in events if e.key in HOST_READS)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        print(f"{batch:>6}{seconds:>9.3f}{batch * args.frames / seconds:>10.1f}{ops:>10d}"
              f"{reads:>11d}{peak:>10.1f}", flush=True)
        if args.profile:
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(events.table(sort_by=key, row_limit=20), flush=True)


if __name__ == "__main__":
    main()
