"""Meta's ``sam2==1.1.0`` as the test oracle: reference models with random weights.

Only tests import this module. The reference builds its models from its own hydra configs;
every floating-point parameter and buffer is then redrawn from a seeded generator so that no
path is hidden by a zero or constant initialisation (layer scales of 1e-6, zero embeddings).
"""

import pathlib

import numpy as np
import torch

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGES = sorted((SHARED / "images").glob("*.jpg"))
VIDEOS = sorted((SHARED / "videos").glob("*.mp4"))

CONFIG_FILES = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}


def randomize_(module, seed=0, object_bias=1.0):
    """Redraw every float parameter and buffer: matrices ~ N(0, 1/fan_in), vectors around
    their role's typical value (norm weights near 1, everything else near 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if tensor.ndim >= 2:
                fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
                value = noise / max(fan_in, 1) ** 0.5
            elif "norm" in name and name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            tensor.copy_(value.to(tensor.dtype))
        # Random heads judge every object absent about half the time, which would hide
        # the masks behind the "no object" logit; bias them towards present.
        for name, tensor in module.named_parameters():
            if name.endswith("pred_obj_score_head.layers.2.bias"):
                tensor.add_(object_bias)
    return module


def build_oracle(variant, image_size=None, seed=0, video=False, overrides=()):
    """The reference SAM2Base (or SAM2VideoPredictor) for ``variant`` with random weights."""
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    extra = list(overrides)
    if image_size is not None:
        extra.append(f"++model.image_size={image_size}")
    builder = build_sam2_video_predictor if video else build_sam2
    model = builder(CONFIG_FILES[variant], None, device="cpu", hydra_overrides_extra=extra)
    return randomize_(model, seed).eval()


def read_image(path=None, size=None):
    """An RGB uint8 image from shared/data/images, optionally resized with OpenCV."""
    import cv2

    bgr = cv2.imread(str(path or IMAGES[0]), cv2.IMREAD_COLOR)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    if size is not None:
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb


def read_video_frames(path=None, count=8, start=0, size=None):
    """``count`` consecutive RGB uint8 frames from shared/data/videos."""
    import cv2

    cap = cv2.VideoCapture(str(path or VIDEOS[0]))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    while len(frames) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        if size is not None:
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        frames.append(rgb)
    cap.release()
    if len(frames) < count:
        raise RuntimeError(f"{path}: only {len(frames)} frames from {start}")
    return frames


def _install_torchvision_shim():
    """Let the reference's image predictor import without torchvision.

    torchvision cannot be installed beside this torch build. The reference only uses
    ``ToTensor``, ``Resize`` and ``Normalize`` from it, on tensors; this shim reproduces
    their documented tensor behaviour (ToTensor: HWC uint8 -> CHW float / 255; Resize on a
    tensor: bilinear, antialias=True; Normalize: (x - mean) / std). The oracle's prompt
    handling, decoding and post-processing then run as published.
    """
    import sys
    import types

    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        pass
    from typing import List

    import torch.nn.functional as F
    from torch import nn

    class ToTensor:
        def __call__(self, image):
            return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)

    class Resize(nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size: List[int] = list(size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x.unsqueeze(0), size=self.size, mode="bilinear",
                                 align_corners=False, antialias=True).squeeze(0)

    class Normalize(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.std

    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor, transforms.Resize, transforms.Normalize = ToTensor, Resize, Normalize
    package.transforms = transforms
    sys.modules["torchvision"] = package
    sys.modules["torchvision.transforms"] = transforms


def oracle_image_predictor(oracle_model):
    """The reference ``SAM2ImagePredictor`` over an oracle model."""
    _install_torchvision_shim()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(oracle_model)


def copy_weights(oracle_model, ours):
    """Load the oracle's state dict into ours, strictly."""
    ours.load_state_dict(oracle_model.state_dict(), strict=True)
    return ours.eval()


def oracle_video_state(predictor, frames, image_size, folder):
    """An inference state of the reference video predictor over ``frames`` whose model
    inputs are replaced by ours (the reference resizes video frames with PIL, its image
    path with antialiased bilinear; we compare on identical inputs)."""
    import cv2

    from sam_ros.model.transforms import preprocess

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), frame[:, :, ::-1])
    state = predictor.init_state(video_path=str(folder))
    state["images"] = torch.cat([preprocess(f, image_size) for f in frames])
    state["cached_features"] = {}
    assert (state["video_height"], state["video_width"]) == frames[0].shape[:2]
    return state
