"""Image and prompt transforms between a camera image and the model's square input.

SAM 2's image predictor converts to [0, 1], resizes to ``image_size`` x ``image_size``
(bilinear with antialiasing) and normalises with ImageNet statistics; we do the same with
plain torch so that torchvision is not needed. SAM (2023) keeps the aspect ratio instead:
the longest side is resized to ``image_size`` (Pillow's bilinear filter on the uint8 image,
as its predictor does through torchvision), the normalised image is zero-padded to a square
at the bottom and right, and masks are cropped back out of the padded frame.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
# The same statistics on the 0..255 scale, as SAM (2023) applies them.
PIXEL_MEAN_255 = (123.675, 116.28, 103.53)
PIXEL_STD_255 = (58.395, 57.12, 57.375)


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


class SquareResize:
    """SAM 2's framing of an H x W image: stretched to the S x S model input."""

    def __init__(self, image_hw, image_size):
        self.image_hw = tuple(image_hw)
        self.image_size = image_size

    def image(self, image, device="cpu"):
        """RGB uint8 H x W x 3 -> normalised 1 x 3 x S x S on ``device``."""
        return preprocess(image, self.image_size, device)

    def points(self, coords):
        """(x, y) image pixels -> model-input pixels."""
        return to_model_coords(coords, self.image_hw, self.image_size)

    def masks(self, logits):
        """Mask logits over the model input -> the image's H x W."""
        return upscale_logits(logits, self.image_hw)


def longest_side_shape(image_hw, image_size):
    """(h, w) of an image whose longest side is resized to ``image_size`` (rounded half up)."""
    h, w = image_hw
    scale = image_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class LongestSideResize:
    """SAM (2023)'s framing: the longest side resized to S, the rest zero-padded (after
    normalisation) at the bottom and right of the S x S model input."""

    def __init__(self, image_hw, image_size):
        self.image_hw = tuple(image_hw)
        self.image_size = image_size
        self.resized_hw = longest_side_shape(self.image_hw, image_size)

    def image(self, image, device="cpu"):
        """RGB uint8 H x W x 3 -> normalised, padded 1 x 3 x S x S on ``device``."""
        check_rgb_image(image)
        h, w = self.resized_hw
        if (h, w) != image.shape[:2]:
            image = np.array(Image.fromarray(np.ascontiguousarray(image)).resize(
                (w, h), Image.Resampling.BILINEAR))
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
        x = x.permute(2, 0, 1).unsqueeze(0).float()
        mean = torch.tensor(PIXEL_MEAN_255, device=device).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD_255, device=device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def points(self, coords):
        """(x, y) image pixels -> pixels of the resized (unpadded) image."""
        (h, w), (new_h, new_w) = self.image_hw, self.resized_hw
        return coords * coords.new_tensor([new_w / w, new_h / h])

    def masks(self, logits):
        """Mask logits over the padded model input -> the image's H x W: upsampled to S x S,
        the padding cropped off, then resized to H x W (bilinear both times)."""
        size = (self.image_size, self.image_size)
        h, w = self.resized_hw
        full = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        return upscale_logits(full[..., :h, :w], self.image_hw)
