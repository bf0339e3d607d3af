"""Image and prompt transforms between a camera image and the model's square input.

The reference's image predictor converts to [0, 1], resizes to ``image_size`` x
``image_size`` (bilinear with antialiasing) and normalises with ImageNet statistics; we
do the same with plain torch so that torchvision is not needed.
"""

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def check_rgb_image(image):
    """Raise a ValueError unless ``image`` is an H x W x 3 uint8 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 (RGB), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")


def preprocess(image, image_size, device="cpu"):
    """RGB uint8 H x W x 3 -> normalised float 1 x 3 x S x S on ``device``."""
    check_rgb_image(image)
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
    mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_model_coords(coords, image_hw, image_size):
    """Pixel coordinates (x, y) in an H x W image -> coordinates in the model's input."""
    h, w = image_hw
    return coords / coords.new_tensor([w, h]) * image_size


def upscale_logits(logits, image_hw):
    """Mask logits at any resolution -> the image's own H x W (bilinear)."""
    return F.interpolate(logits.float(), size=tuple(image_hw), mode="bilinear",
                         align_corners=False)
