"""The test oracles: Meta's ``sam2==1.1.0`` and ``segment-anything==1.0`` and MobileSAM's
published code (``mobile_sam``), as reference models with random weights.

Only tests and benchmarks import this module. The references build their models from their
own configs and builders; every floating-point parameter and stored buffer is then redrawn
from a seeded generator so that no path is hidden by a zero or constant initialisation
(layer scales of 1e-6, zero embeddings).
"""

import numpy as np
import torch

from .samples import IMAGES, VIDEOS

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


def _stored_buffers(module):
    """(name, buffer) of the buffers a state dict holds: not the non-persistent ones
    (SAM's pixel statistics, TinyViT's cached bias tables), which are derived, not learned."""
    for prefix, owner in module.named_modules():
        skip = getattr(owner, "_non_persistent_buffers_set", ())
        for name, buffer in owner.named_buffers(recurse=False):
            if name not in skip:
                yield (f"{prefix}.{name}" if prefix else name), buffer


def randomize_(module, seed=0, object_bias=1.0):
    """Redraw every float parameter and stored buffer: matrices ~ N(0, 1/fan_in), vectors
    around their role's typical value (norm weights and batch-norm variances near 1,
    everything else near 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(_stored_buffers(module)):
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if tensor.ndim >= 2:
                fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
                value = noise / max(fan_in, 1) ** 0.5
            elif ("norm" in name and name.endswith("weight")) or name.endswith("running_var"):
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


def build_sam_oracle(variant, depth=None, global_attn_indexes=None, seed=0):
    """The reference ``Sam`` of a SAM (2023) variant with random weights: segment_anything's
    for ``sam_vit_b`` / ``_l`` / ``_h``, mobile_sam's for ``mobile_sam``.

    ``depth`` with ``global_attn_indexes`` builds a shallower ViT of the official width,
    heads and window size (read off the official model, built on the meta device), to keep
    tests of the large encoders fast.
    """
    import_torchvision()
    if variant == "mobile_sam":
        from mobile_sam import sam_model_registry

        return randomize_(sam_model_registry["vit_t"](), seed).eval()
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    kind = variant.removeprefix("sam_")
    if depth is None:
        model = sam_model_registry[kind]()
    else:
        with torch.device("meta"):
            official = sam_model_registry[kind]().image_encoder
        model = _build_sam(encoder_embed_dim=official.patch_embed.proj.out_channels,
                           encoder_depth=depth, encoder_num_heads=official.blocks[0].attn.num_heads,
                           encoder_global_attn_indexes=list(global_attn_indexes))
    return randomize_(model, seed).eval()


def oracle_sam_predictor(oracle_model):
    """The reference ``SamPredictor`` (segment_anything's, or mobile_sam's for MobileSAM)."""
    import_torchvision()
    if type(oracle_model).__module__.startswith("mobile_sam"):
        from mobile_sam import SamPredictor
    else:
        from segment_anything import SamPredictor
    return SamPredictor(oracle_model)


def read_image(path=None, size=None):
    """An RGB uint8 sample image (``samples.IMAGES``), optionally resized with OpenCV."""
    import cv2

    path = str(path or IMAGES[0])
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read sample image {path}")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    if size is not None:
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb


def read_video_frames(path=None, count=8, start=0, size=None):
    """``count`` consecutive RGB uint8 frames of a sample clip (``samples.VIDEOS``)."""
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


_TORCHVISION_OPS = None


def import_torchvision():
    """Import torchvision beside this CPU build of torch, for the oracles (tests only).

    The installable torchvision is built against another torch: its compiled operators do
    not load, and its Python side then fails on import, registering fake kernels for the
    ``nms`` operators it cannot find. Defining those two schemas first lets it import; its
    transforms (all the references use) work, ``torchvision.ops.nms`` does not.
    """
    global _TORCHVISION_OPS
    try:
        import torchvision
        return torchvision
    except RuntimeError:
        pass
    if _TORCHVISION_OPS is None:
        _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
        _TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision
    return torchvision


def import_transformers():
    """Hugging Face ``transformers`` (the second SAM 2 oracle), whose image utilities import
    torchvision (``import_torchvision``)."""
    import_torchvision()
    import transformers
    return transformers


def oracle_image_predictor(oracle_model):
    """The reference ``SAM2ImagePredictor`` over an oracle model."""
    import_torchvision()
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


_NMS_KERNEL = None


def greedy_nms_by_definition(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression spelled out: boxes ranked by score (ties keep their
    order), each kept unless a kept box ranked above it overlaps it by IoU > threshold.
    Plain Python over pairs, for small inputs only: the definition the tests hold both our
    NMS and the reference's (through ``enable_torchvision_nms``) to."""
    boxes = boxes.double().tolist()
    ranked = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    kept = []
    for i in ranked:
        x0, y0, x1, y1 = boxes[i]
        survives = True
        for j in kept:
            u0, v0, u1, v1 = boxes[j]
            inter = max(0.0, min(x1, u1) - max(x0, u0)) * max(0.0, min(y1, v1) - max(y0, v0))
            union = (x1 - x0) * (y1 - y0) + (u1 - u0) * (v1 - v0) - inter
            if union > 0 and inter / union > iou_threshold:
                survives = False
                break
        if survives:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64)


def enable_torchvision_nms():
    """Give ``torchvision::nms`` a CPU kernel (``greedy_nms_by_definition``) so that Meta's
    automatic mask generators, which call ``torchvision.ops.batched_nms``, run here. Tests
    and benchmarks only; torchvision's own kernels do not load beside this torch."""
    global _NMS_KERNEL
    torchvision = import_torchvision()
    if _NMS_KERNEL is None:
        _NMS_KERNEL = torch.library.Library("torchvision", "IMPL")
        _NMS_KERNEL.impl("nms", greedy_nms_by_definition, "CPU")
        # torchvision checks for its compiled library before calling the operator
        import torchvision.ops.boxes
        torchvision.ops.boxes._assert_has_ops = lambda: None
    return torchvision


def oracle_mask_generator(oracle_model, min_mask_region_area=0, **options):
    """Meta's ``SAM2AutomaticMaskGenerator`` over an oracle model (any image size), with
    the test-only NMS kernel of ``enable_torchvision_nms``.

    ``min_mask_region_area`` > 0 adds segment-anything's small-region post-processing
    (``SamAutomaticMaskGenerator.postprocess_small_regions``, which sam2 1.1.0 carries but
    never calls: it gives the value to its predictor, whose hole filling needs a CUDA
    extension) after sam2's own steps, as our generator does for every family.
    """
    enable_torchvision_nms()
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from segment_anything import SamAutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(oracle_model, **options)
    # the reference predictor hard-codes the feature sizes of a 1024-pixel input
    size = oracle_model.image_size
    generator.predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    if min_mask_region_area > 0:
        generate_masks = generator._generate_masks
        nms_thresh = max(generator.box_nms_thresh, generator.crop_nms_thresh)

        def generate_masks_then_clean(image):
            return SamAutomaticMaskGenerator.postprocess_small_regions(
                generate_masks(image), min_mask_region_area, nms_thresh)

        generator._generate_masks = generate_masks_then_clean
    return generator


IMAGE_PATH_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.",
                       "no_mem_embed")


def build_image_oracle(config, state_dict):
    """The reference SAM2Base for any of our configs (the bundled ``sam_ros_mini`` too, which
    no official config describes), with the image path (image encoder, prompt encoder, mask
    decoder, no-memory embedding) loaded from ``state_dict``; what only video tracking uses
    is left as built. The reference hard-codes its heads' sizes, so they are rebuilt here
    from the config with the reference's own classes."""
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    trunk = config.trunk
    encoder = {
        "scalp": config.scalp,
        "trunk.embed_dim": trunk.embed_dim,
        "trunk.num_heads": trunk.num_heads,
        "trunk.stages": trunk.stages,
        "trunk.global_att_blocks": trunk.global_att_blocks,
        "trunk.window_spec": trunk.window_spec,
        "trunk.window_pos_embed_bkg_spatial_size": trunk.window_pos_embed_bkg_spatial_size,
        "neck.d_model": config.d_model,
        "neck.position_encoding.num_pos_feats": config.d_model,
        "neck.backbone_channel_list": trunk.channel_list,
        "neck.fpn_top_down_levels": config.fpn_top_down_levels,
    }
    overrides = [f"++model.image_encoder.{key}=" + (
        "[" + ",".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value))
        for key, value in encoder.items()]
    model = build_oracle("sam2.1_hiera_t" if config.sam2_1 else "sam2_hiera_t",
                         image_size=config.image_size, overrides=overrides)
    side = config.image_size // config.backbone_stride
    model.sam_prompt_encoder = PromptEncoder(
        embed_dim=config.d_model, image_embedding_size=(side, side),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans)
    model.sam_mask_decoder = MaskDecoder(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=TwoWayTransformer(depth=config.decoder_depth, embedding_dim=config.d_model,
                                      mlp_dim=config.decoder_mlp_dim,
                                      num_heads=config.decoder_heads),
        transformer_dim=config.d_model, iou_head_depth=3, iou_head_hidden_dim=256,
        use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
        pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=config.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=config.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=config.dynamic_multimask_stability_thresh)
    image_path = {k: v for k, v in state_dict.items() if k.startswith(IMAGE_PATH_PREFIXES)}
    missing, unexpected = model.load_state_dict(image_path, strict=False)
    missing = [k for k in missing if k.startswith(IMAGE_PATH_PREFIXES)]
    if missing or unexpected:
        raise RuntimeError(f"image path does not load: missing {missing}, unexpected "
                           f"{unexpected}")
    return model.eval()
