"""Segment one image from a click or a box and write an overlay of the mask (and the mask).

    python -m sam_ros.tools.segment_image IMAGE --point X,Y [--point X,Y,0] [--box X0,Y0,X1,Y1]
        [--checkpoint FILE|NAME] [--variant auto|sam2.1_hiera_t|sam_vit_b|mobile_sam|...]
        [--device cpu|cuda]
        [--precision float32|bfloat16] --out OUT.png [--mask-out MASK.png]

    python -m sam_ros.tools.segment_image IMAGE --all [--points-per-side 32]
        [--pred-iou-thresh T] [--stability-score-thresh 0.95] [--box-nms-thresh 0.7]
        [--min-mask-region-area 0] [--crop-n-layers 0] [--boxes] ... --out OUT.png
        [--mask-out LABELS.png]

--all finds every mask (``AutomaticMaskGenerator``: a grid of clicks, filtered and
de-duplicated) and overlays them in distinct colours, smaller ones on top; --mask-out then
writes the label image (16-bit PNG: 0 none, i the i-th mask, best predicted IoU first).

Every family works: SAM 2 / 2.1, SAM and MobileSAM (a file, or a name such as
sam2.1_hiera_tiny or mobile_sam, downloaded on first use). Without --checkpoint it uses the
bundled small model (trained on generated scenes, see its
model card); a named --variant without a checkpoint has random weights, which shows the
pipeline working, not a meaningful mask. Where the model gives several candidate masks,
the overlay shows the one it rates best.
"""

import argparse
import pathlib
import sys
import time

import cv2
import numpy as np
import torch

from sam_ros.drawing import overlay_image
from sam_ros.model import AutomaticMaskGenerator, CheckpointError, SamImagePredictor, build_model
from sam_ros.model.automatic import label_image


def parse_point(text):
    values = [float(v) for v in text.split(",")]
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--point takes X,Y or X,Y,LABEL, got {text!r}")
    return values[:2], int(values[2]) if len(values) == 3 else 1


def parse_box(text):
    values = [float(v) for v in text.split(",")]
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box takes X0,Y0,X1,Y1, got {text!r}")
    return values


def overlay(image_rgb, mask, colour=(255, 64, 32)):
    out = image_rgb.astype(np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * np.array(colour, np.float32)
    return out.astype(np.uint8)


class _Outline:
    """A found mask as ``overlay_image`` draws a track: its box and number."""

    visible = True

    def __init__(self, number, record):
        x, y, w, h = record["bbox"]
        ys, xs = np.nonzero(record["segmentation"])
        self.id, self.bbox = number, (x, y, x + w, y + h)
        self.centroid = (xs.mean(), ys.mean())


def segment_everything(parser, args, predictor, image):
    """--all: every mask, overlaid in distinct colours."""
    try:
        generator = AutomaticMaskGenerator(
            predictor, points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch, pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            box_nms_thresh=args.box_nms_thresh, min_mask_region_area=args.min_mask_region_area,
            crop_n_layers=args.crop_n_layers)
    except ValueError as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    records = generator.generate(image)
    seconds = time.perf_counter() - start
    labels = label_image(records, image.shape[:2])
    outlines = [_Outline(i + 1, r) for i, r in enumerate(records)] if args.boxes else []
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), overlay_image(image, labels, outlines)[:, :, ::-1])
    if args.mask_out:
        cv2.imwrite(args.mask_out, labels.astype(np.uint16))
    print(f"{predictor.model.config.name}: {image.shape[1]}x{image.shape[0]} image, "
          f"{len(records)} masks from {len(generator.point_grids[0])} points in {seconds:.2f} s "
          f"(predicted IoU > {generator.pred_iou_thresh}, stability >= "
          f"{generator.stability_score_thresh}) -> {out}")
    if not records:
        print("segment_image: no mask passed the thresholds; lower --pred-iou-thresh or "
              "--stability-score-thresh (the bundled model's IoU estimates stay low on photos)",
              file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--point", type=parse_point, action="append", default=[])
    parser.add_argument("--box", type=parse_box)
    parser.add_argument("--checkpoint", help="a checkpoint file or an official name such as "
                        "sam2.1_hiera_tiny or sam_vit_b (default: the bundled model)")
    parser.add_argument("--variant", default="auto", help="auto (read off the checkpoint), or "
                        "a name such as sam2.1_hiera_t, sam_vit_b, mobile_sam")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", required=True, help="overlay image to write")
    parser.add_argument("--mask-out", help="also write the mask (0 / 255, 8-bit PNG; with --all "
                        "the label image, 16-bit)")
    every = parser.add_argument_group("--all: every mask on the image (AutomaticMaskGenerator)")
    every.add_argument("--all", action="store_true", help="find every mask from a grid of clicks")
    every.add_argument("--points-per-side", type=int, default=32)
    every.add_argument("--points-per-batch", type=int, default=64)
    every.add_argument("--pred-iou-thresh", type=float,
                       help="default: the model family's (0.8 for SAM 2, 0.88 for SAM)")
    every.add_argument("--stability-score-thresh", type=float, default=0.95)
    every.add_argument("--box-nms-thresh", type=float, default=0.7)
    every.add_argument("--min-mask-region-area", type=int, default=0,
                       help="remove holes and islands smaller than this (pixels)")
    every.add_argument("--crop-n-layers", type=int, default=0)
    every.add_argument("--boxes", action="store_true", help="draw each mask's box and number")
    args = parser.parse_args(argv)
    if args.all and (args.point or args.box):
        parser.error("--all finds every mask by itself: give no --point or --box with it")

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        parser.error(f"cannot read image {args.image}")
    image = np.ascontiguousarray(bgr[:, :, ::-1])
    torch.manual_seed(0)  # the same random weights every run where no checkpoint gives them
    try:
        model = build_model(args.variant, checkpoint=args.checkpoint, device=args.device)
    except (CheckpointError, ValueError) as exc:  # a bad file, or an unknown variant name
        parser.exit(2, f"segment_image: {exc}\n")
    if args.checkpoint is None and args.variant != "auto":
        print(f"segment_image: {args.variant} without --checkpoint has RANDOM weights "
              "(pipeline check only)", file=sys.stderr)
    predictor = SamImagePredictor(model, precision=args.precision)
    if args.all:
        segment_everything(parser, args, predictor, image)
        return

    start = time.perf_counter()
    predictor.set_image(image)
    encoded = time.perf_counter()
    prompt = {}
    if args.point:
        prompt["point_coords"] = [p for p, _ in args.point]
        prompt["point_labels"] = [label for _, label in args.point]
    if args.box:
        prompt["box"] = args.box
    try:
        masks, scores, _ = predictor.predict(**prompt)
    except ValueError as exc:
        parser.exit(2, f"segment_image: bad prompt: {exc}\n")
    done = time.perf_counter()
    best = int(np.argmax(scores))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), overlay(image, masks[best])[:, :, ::-1])
    if args.mask_out:
        cv2.imwrite(args.mask_out, masks[best].astype(np.uint8) * 255)
    print(f"{model.config.name}: {image.shape[1]}x{image.shape[0]} image, encoder "
          f"{encoded - start:.2f} s, prompt {1000 * (done - encoded):.0f} ms, mask "
          f"{int(masks[best].sum())} px, score {scores[best]:.3f} -> {out}")


if __name__ == "__main__":
    main()
