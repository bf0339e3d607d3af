"""Segment one image from a click or a box and write the mask and an overlay.

    python -m sam_ros.tools.segment_image IMAGE --point X,Y [--point X,Y,0] [--box X0,Y0,X1,Y1]
        [--checkpoint FILE] [--variant auto|sam2.1_hiera_t|...] [--device cpu|cuda]
        [--precision float32|bfloat16] --out OUT.png

Without --checkpoint the model has random weights (Meta's files cannot be downloaded on
every machine); the run then shows the pipeline working, not a meaningful mask.
"""

import argparse
import pathlib
import sys
import time

import cv2
import numpy as np
import torch

from sam_ros.model import CheckpointError, SamImagePredictor, build_sam2


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--point", type=parse_point, action="append", default=[])
    parser.add_argument("--box", type=parse_box)
    parser.add_argument("--checkpoint")
    parser.add_argument("--variant", default=None,
                        help="default: auto with a checkpoint, sam2.1_hiera_t without")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        parser.error(f"cannot read image {args.image}")
    image = np.ascontiguousarray(bgr[:, :, ::-1])
    variant = args.variant or ("auto" if args.checkpoint else "sam2.1_hiera_t")
    if args.checkpoint is None:
        print("segment_image: no --checkpoint, using RANDOM weights (pipeline check only)",
              file=sys.stderr)
        torch.manual_seed(0)
    try:
        model = build_sam2(variant, checkpoint=args.checkpoint, device=args.device)
    except CheckpointError as exc:
        parser.exit(2, f"segment_image: {exc}\n")
    predictor = SamImagePredictor(model, precision=args.precision)

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
    print(f"{model.config.name}: {image.shape[1]}x{image.shape[0]} image, encoder "
          f"{encoded - start:.2f} s, prompt {1000 * (done - encoded):.0f} ms, mask "
          f"{int(masks[best].sum())} px, score {scores[best]:.3f} -> {out}")


if __name__ == "__main__":
    main()
