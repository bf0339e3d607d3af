"""The model and the tracker on a CUDA device give what they give on the CPU.

Runs only where PyTorch sees a GPU (CI has none; run it on a GPU machine with
``python -m pytest test/test_cuda.py``). Random weights, generated frames: this checks that
every code path has a CUDA twin that computes the same thing, not what the masks look like.
"""

import numpy as np
import pytest
import torch

from lab.oracle import randomize_
from sam_ros.model import SAM2, SamImagePredictor, get_config
from sam_ros.tracker import StreamingTracker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module", autouse=True)
def exact_cuda_math():
    """TF32 convolutions and matrix products would round differently from the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def frames(count, height=240, width=320):
    """A bright disc moving over a smooth gradient: structure for the encoder to see."""
    yy, xx = np.mgrid[:height, :width]
    out = []
    for i in range(count):
        img = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1)
        disc = (xx - 80 - 12 * i) ** 2 + (yy - 120) ** 2 < 40 ** 2
        img[disc] = (250, 240, 30)
        out.append(img.astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def models():
    cpu = randomize_(SAM2(get_config("sam2.1_hiera_t", image_size=512)), seed=5).eval()
    gpu = randomize_(SAM2(get_config("sam2.1_hiera_t", image_size=512)), seed=5).eval().cuda()
    return cpu, gpu


def test_image_predictor_matches_cpu(models):
    image = frames(1)[0]
    results = []
    for model in models:
        predictor = SamImagePredictor(model)
        predictor.set_image(image)
        results.append(predictor.predict(point_coords=[[80, 120]], point_labels=[1],
                                         box=[30, 70, 140, 170], multimask_output=False))
    (cpu_masks, cpu_scores, cpu_low), (gpu_masks, gpu_scores, gpu_low) = results
    assert np.abs(cpu_low - gpu_low).max() <= 1e-3
    assert np.abs(cpu_scores - gpu_scores).max() <= 1e-4


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_tracker_matches_cpu(models, precision):
    clip = frames(6)
    logits = []
    for model in models:
        tracker = StreamingTracker(model, precision=precision)
        per_frame = []
        for i, image in enumerate(clip):
            tracker.step(image)
            if i == 0:
                tracker.add_prompt(1, points=[[80, 120]], labels=[1])
                tracker.add_prompt(2, box=[200, 20, 300, 100])
            per_frame.append({k: tracker.result(k).logits for k in (1, 2)})
        logits.append(per_frame)
    for i, (cpu, gpu) in enumerate(zip(*logits)):
        for obj in (1, 2):
            if precision == "float32":
                err = np.abs(cpu[obj] - gpu[obj]).max()
                assert err <= 1e-3, f"frame {i} object {obj}: {err}"
            else:  # bfloat16 rounds differently on each device: compare the masks
                confident = np.abs(cpu[obj]) > 1.0
                agree = ((cpu[obj] > 0) == (gpu[obj] > 0))[confident].mean()
                assert agree >= 0.99, f"frame {i} object {obj}: {agree:.3f}"
