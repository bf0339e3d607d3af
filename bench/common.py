"""Shared helpers of the benchmarks: timing, real frames, the lab on the import path."""

import pathlib
import statistics
import sys
import time

import torch

# The repository root, appended: the lab (oracles, samples) is importable, and sam_ros comes
# from the built workspace when it is sourced (PYTHONPATH comes first), else from the source.
ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def timed(fn, repeats, warmup=1):
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs, and its
    last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def describe_machine(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU, {torch.get_num_threads()} threads"


def sample_frame(h, w):
    """A real photograph (BGR, as a camera driver's bgr8) resized to ``w`` x ``h``."""
    import cv2

    from lab.samples import IMAGES
    return cv2.resize(cv2.imread(str(IMAGES[2])), (w, h), interpolation=cv2.INTER_AREA)
