"""Segment one image from a click or a box and write an overlay of the mask (and the mask).

    python -m sam_ros.tools.segment_image IMAGE --point X,Y [--point X,Y,0] [--box X0,Y0,X1,Y1]
        [--checkpoint FILE] [--variant auto|sam2.1_hiera_t|...] [--device cpu|cuda]
        [--precision float32|bfloat16] --out OUT.png [--mask-out MASK.png]

Without --checkpoint it uses the bundled small model (trained on generated scenes, see its
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
    parser.add_argument("--checkpoint", help="Meta's checkpoint file (default: the bundled model)")
    parser.add_argument("--variant", default="auto",
                        help="auto (read off the checkpoint), or a name such as sam2.1_hiera_t")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", required=True, help="overlay image to write")
    parser.add_argument("--mask-out", help="also write the mask (0 / 255, 8-bit PNG)")
    args = parser.parse_args(argv)

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        parser.error(f"cannot read image {args.image}")
    image = np.ascontiguousarray(bgr[:, :, ::-1])
    torch.manual_seed(0)  # the same random weights every run where no checkpoint gives them
    try:
        model = build_sam2(args.variant, checkpoint=args.checkpoint, device=args.device)
    except (CheckpointError, ValueError) as exc:  # a bad file, or an unknown variant name
        parser.exit(2, f"segment_image: {exc}\n")
    if args.checkpoint is None and args.variant != "auto":
        print(f"segment_image: {args.variant} without --checkpoint has RANDOM weights "
              "(pipeline check only)", file=sys.stderr)
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
    if args.mask_out:
        cv2.imwrite(args.mask_out, masks[best].astype(np.uint8) * 255)
    print(f"{model.config.name}: {image.shape[1]}x{image.shape[0]} image, encoder "
          f"{encoded - start:.2f} s, prompt {1000 * (done - encoded):.0f} ms, mask "
          f"{int(masks[best].sum())} px, score {scores[best]:.3f} -> {out}")


if __name__ == "__main__":
    main()
