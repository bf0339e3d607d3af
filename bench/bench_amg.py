"""Segment everything (automatic mask generation): ours against Meta's
SAM2AutomaticMaskGenerator in one run, same random weights, same photo, with the time of
its parts (image encoder, decoding every batch of clicks, the rest: upscaling, filtering,
boxes, NMS).

    .venv/bin/python bench/bench_amg.py [--variant sam2.1_hiera_t] [--points-per-side 32]
        [--image 1] [--repeats 1]

Meta's generator calls torchvision's NMS operator, which does not load beside this torch:
here it runs on the test-only kernel of ``lab.oracle.enable_torchvision_nms`` (greedy
NMS in plain Python), so its NMS time says nothing about torchvision's. With random weights
no predicted IoU reaches Meta's thresholds, so two settings are timed: Meta's defaults
(every candidate dropped by its predicted IoU, so filtering costs little) and every
threshold off (every candidate upscaled, scored, boxed and de-duplicated: the most work the
filtering can have; the masks of random weights all span the image, so NMS keeps one).
"""

import argparse
import collections
import time

import torch

from common import describe_machine
from lab.oracle import (
    IMAGES,
    build_oracle,
    copy_weights,
    enable_torchvision_nms,
    oracle_mask_generator,
    read_image,
)
from sam_ros.model import SAM2, AutomaticMaskGenerator, automatic, get_config


def clocks():
    """(wall, CPU) seconds: the process's CPU time (all its threads) moves little when
    other work shares the machine, its wall time a lot."""
    return time.perf_counter(), time.process_time()


class Stopwatch:
    """Adds up the wall and CPU time spent in wrapped callables, by part."""

    def __init__(self):
        self.seconds = collections.defaultdict(lambda: [0.0, 0.0])
        self._undo = []

    def wrap(self, owner, name, part):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = clocks()
            try:
                return original(*args, **kwargs)
            finally:
                for i, (now, then) in enumerate(zip(clocks(), start)):
                    self.seconds[part][i] += now - then

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self):
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def run(generator, image, wraps):
    """(wall, CPU) seconds in total and per part for one ``generate``, and the number of
    masks."""
    watch = Stopwatch()
    for owner, name, part in wraps:
        watch.wrap(owner, name, part)
    try:
        start = clocks()
        masks = generator.generate(image)
        total = [now - then for now, then in zip(clocks(), start)]
    finally:
        watch.restore()
    return total, watch.seconds, len(masks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="sam2.1_hiera_t")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--image", type=int, default=1, help="index into lab.samples.IMAGES")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    enable_torchvision_nms()
    import sam2.automatic_mask_generator as reference_amg

    oracle = build_oracle(args.variant, image_size=args.image_size)
    model = copy_weights(oracle, SAM2(get_config(args.variant, image_size=args.image_size)))
    image = read_image(IMAGES[args.image])
    print(f"{args.variant} at {args.image_size}, random weights, {IMAGES[args.image].name} "
          f"({image.shape[1]}x{image.shape[0]}), {args.points_per_side}^2 clicks x 3 "
          f"candidates, {describe_machine('cpu')}")
    settings = {"Meta's defaults": {},
                "thresholds off": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}}
    print("CPU seconds (wall seconds in brackets; other work shares this machine):")
    print(f"{'setting':<17}{'generator':<10}{'total':>16}{'encoder':>9}{'decode':>9}"
          f"{'rest':>9}{'of it NMS':>11}{'masks':>7}", flush=True)
    for setting, options in settings.items():
        ours = AutomaticMaskGenerator(model, points_per_side=args.points_per_side, **options)
        theirs = oracle_mask_generator(oracle, points_per_side=args.points_per_side, **options)
        for name, generator, wraps in [
            ("ours", ours, [(ours.predictor, "set_image", "encoder"),
                            (ours.predictor, "predict_low_res", "decode"),
                            (automatic, "box_nms", "nms")]),
            ("Meta's", theirs, [(theirs.predictor, "set_image", "encoder"),
                                (theirs.predictor, "_predict", "decode"),
                                (reference_amg, "batched_nms", "nms")]),
        ]:
            for _ in range(args.repeats):
                (wall, cpu), parts, count = run(generator, image, wraps)
                encoder, decode, nms = (parts[p][1] for p in ("encoder", "decode", "nms"))
                print(f"{setting:<17}{name:<10}{cpu:>8.1f}{f' ({wall:.1f})':>8}{encoder:>9.1f}"
                      f"{decode:>9.1f}{cpu - encoder - decode:>9.1f}{nms:>11.3f}{count:>7}",
                      flush=True)
    print("decode: ours, the decoder's low-resolution answers; Meta's, those upscaled to the "
          "image, every candidate. rest: everything else (upscaling for ours, filtering, "
          "stability, boxes, NMS, mask encoding).")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
