"""Interactive image segmentation with the semantics of Meta's ``SAM2ImagePredictor`` for
SAM 2 models and of its ``SamPredictor`` for SAM (2023) and MobileSAM models.

``set_image`` runs the encoder once; every ``predict`` after it only runs the prompt
encoder and mask decoder, so many prompts on one image are cheap.

The families differ in how an image becomes a model input, how prompts are tokenised and
what is handed back; the predictor leaves that to the model, which answers (``SAM2`` and
``sam.SAM`` alike): ``image_size``, ``device``, ``input_transform(image_hw)`` (image in,
points in, masks out), ``encode_image``, ``without_memory``, ``mask_input_size``,
``default_multimask_output``, ``masks_from_prompts`` and ``low_res_logit_limit``.
"""

import numpy as np
import torch

from .common import autocast
from .prompts import parse_points_and_box


class SamImagePredictor:
    """Prompted masks on one image at a time, from a built SAM 2, SAM or MobileSAM model.

    ``precision="bfloat16"`` runs the image encoder under bfloat16 autocast (the fast
    path). The prompt encoder and mask decoder always run in float32: they are a small
    share of the work, and on CPUs without AMX bfloat16 made them slower (casts dominate).
    """

    def __init__(self, model, mask_threshold=0.0, precision="float32"):
        self.model = model
        self.mask_threshold = mask_threshold
        self.precision = precision
        autocast(model.device, precision)  # validates the name early
        self.reset_image()

    def reset_image(self):
        """Forget the current image and its embeddings."""
        self._features = None
        self._image_hw = None
        self._transform = None

    @property
    def is_image_set(self):
        return self._features is not None

    @property
    def device(self):
        return self.model.device

    @torch.inference_mode()
    def set_image(self, image):
        """Encode an RGB uint8 H x W x 3 image (any size) and cache its features."""
        self.reset_image()
        transform = self.model.input_transform(image.shape[:2])
        model_input = transform.image(image, self.device)
        with autocast(self.device, self.precision):
            features = self.model.encode_image(model_input).float()
        features.embed = self.model.without_memory(features.embed)
        self._features = features
        self._image_hw = image.shape[:2]
        self._transform = transform

    def get_image_embedding(self):
        """The cached 1 x C x h x w image embedding (with SAM 2's no-memory term added)."""
        self._require_image()
        return self._features.embed

    def _require_image(self):
        if self._features is None:
            raise ValueError("no image set: call set_image(image) before predict()")

    def _prompts(self, point_coords, point_labels, box, mask_input):
        """Validate user prompts; return batched model-space (points, boxes, mask): points
        as (coords B x P x 2, labels B x P) or None, boxes B x 4 or None."""
        if point_coords is None and box is None and mask_input is None:
            raise ValueError("empty prompt: give point_coords+point_labels, a box or a mask_input")
        coords, labels = parse_points_and_box(point_coords, point_labels, box, self._image_hw)
        points = boxes = None
        if coords is not None:
            coords = self._transform.points(torch.as_tensor(coords, device=self.device))
            labels = torch.as_tensor(labels, device=self.device)
            if box is not None:  # the box corners come first
                boxes = coords[:, :2].reshape(-1, 4)
                coords, labels = coords[:, 2:], labels[:, 2:]
            if coords.shape[1]:
                points = (coords, labels)
        mask = None
        if mask_input is not None:
            expected = self.model.mask_input_size
            mask = np.asarray(mask_input, dtype=np.float32)
            mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape) if mask.ndim < 4 else mask
            if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != expected:
                raise ValueError(f"mask_input must be 1 x {expected[0]} x {expected[1]} "
                                 f"low-resolution logits (as returned by predict), got shape "
                                 f"{np.shape(mask_input)}")
            if not np.all(np.isfinite(mask)):
                raise ValueError("mask_input contains NaN or infinite values")
            mask = torch.as_tensor(mask, device=self.device)
        return points, boxes, mask

    @torch.inference_mode()
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output=None, return_logits=False):
        """Masks for a prompt on the current image.

        Coordinates are (x, y) pixels of the image given to ``set_image``; labels are 1 for
        foreground and 0 for background; ``box`` is [x_min, y_min, x_max, y_max];
        ``mask_input`` is low-resolution logits from an earlier call. ``multimask_output``
        defaults to the model's config: three candidates for Meta's and MobileSAM's models
        (as their predictors give), the one trained mask for the bundled one. Returns
        ``(masks C x H x W, iou_scores C, low_res_logits C x h x w)`` as numpy arrays, with a
        leading batch axis when several prompts were given at once.
        """
        low_res, ious = self.predict_low_res(point_coords, point_labels, box, mask_input,
                                             multimask_output)
        masks = self.logits_at_image_size(low_res)
        if not return_logits:
            masks = masks > self.mask_threshold
        limit = self.model.low_res_logit_limit
        if limit is not None:
            low_res = low_res.clamp(-limit, limit)
        out = [masks.cpu().numpy(), ious.cpu().numpy(), low_res.cpu().numpy()]
        if low_res.shape[0] == 1:
            out = [a[0] for a in out]
        return tuple(out)

    @torch.inference_mode()
    def predict_low_res(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                        multimask_output=None):
        """``predict``'s prompts and validation, but the decoder's answer as it comes:
        ``(low_res_logits B x C x h x w, iou_scores B x C)``, float tensors on the model's
        device, batch axis always there, logits neither clamped nor upscaled. For callers
        that decode many prompts and upscale only the masks they keep
        (``logits_at_image_size``), such as the automatic mask generator."""
        self._require_image()
        if multimask_output is None:
            multimask_output = self.model.default_multimask_output
        points, boxes, mask = self._prompts(point_coords, point_labels, box, mask_input)
        low_res, ious = self.model.masks_from_prompts(self._features, points, boxes, mask,
                                                      multimask_output)
        return low_res.float(), ious.float()

    def logits_at_image_size(self, low_res_logits):
        """Low-resolution logits N x C x h x w -> logits N x C x H x W of the image given to
        ``set_image`` (as the model frames images: SAM crops its padding out first)."""
        self._require_image()
        return self._transform.masks(low_res_logits)
