"""SAM (2023) ViT-B, MobileSAM, SAM 2.1 tiny and small in one run: image encoder and
prompt-to-mask times, ours against the references (segment-anything 1.0, MobileSAM's code,
sam2 1.1.0), same random weights, same real image.

    .venv/bin/python bench/bench_sam.py [--repeats 3] [--prompts 10] [--threads N]

The encoder is timed on the model input (each family frames the image its own way: SAM pads
the longest side to 1024, SAM 2 stretches to 1024 x 1024); prompt-to-mask is one click
through each predictor, three candidate masks, upscaled to the image.
"""

import argparse
import gc
import os
import statistics
import time

import numpy as np
import torch

from common import describe_machine
from lab.oracle import (
    IMAGES,
    build_oracle,
    build_sam_oracle,
    copy_weights,
    oracle_image_predictor,
    oracle_sam_predictor,
    read_image,
)
from sam_ros.model import SAM, SAM2, SamImagePredictor, get_config

MODELS = [  # (name, variant, family)
    ("SAM ViT-B", "sam_vit_b", "sam"),
    ("MobileSAM", "mobile_sam", "sam"),
    ("SAM 2.1 tiny", "sam2.1_hiera_t", "sam2"),
    ("SAM 2.1 small", "sam2.1_hiera_s", "sam2"),
]


def build_pair(variant, family):
    """(the reference's encoder call, the reference's predictor, our model)."""
    if family == "sam":
        oracle = build_sam_oracle(variant)
        ours = copy_weights(oracle, SAM(get_config(variant)))
        return oracle.image_encoder, oracle_sam_predictor(oracle), ours
    oracle = build_oracle(variant)
    ours = copy_weights(oracle, SAM2(get_config(variant)))
    return oracle.forward_image, oracle_image_predictor(oracle), ours


def alternating(fns, repeats):
    """Median wall and CPU (process) seconds of each of ``fns`` after one warm-up call each,
    the calls interleaved round by round so that a change in the machine's load falls on
    all of them alike. CPU time is the steadier figure on a shared machine."""
    for fn in fns:
        fn()
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[i].append(time.perf_counter() - start_wall)
            cpu[i].append(time.process_time() - start_cpu)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def measure(variant, family, image, repeats, prompts):
    """[(wall, cpu) of the reference, of ours] for the encoder and for one click."""
    reference_encoder, reference, ours = build_pair(variant, family)
    model_input = ours.input_transform(image.shape[:2]).image(image)
    click = {"point_coords": [[image.shape[1] * 0.45, image.shape[0] * 0.55]],
             "point_labels": [1], "multimask_output": True}
    reference_click = {**click, "point_coords": np.asarray(click["point_coords"]),
                       "point_labels": np.asarray(click["point_labels"])}
    with torch.inference_mode():
        encoder = alternating([lambda: reference_encoder(model_input),
                               lambda: ours.encode_image(model_input)], repeats)
        predictor = SamImagePredictor(ours)
        reference.set_image(image)
        predictor.set_image(image)
        decode = alternating([lambda: reference.predict(**reference_click),
                              lambda: predictor.predict(**click)], prompts)
    return encoder, decode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="encoder runs per model")
    parser.add_argument("--prompts", type=int, default=10, help="clicks per model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    image = read_image(IMAGES[0])
    start_load = os.getloadavg()[0]
    print(f"{describe_machine('cpu')}, image {IMAGES[0].name} {image.shape[1]}x{image.shape[0]}, "
          f"median of {args.repeats} encoder runs and {args.prompts} clicks, float32, "
          f"reference and ours interleaved")
    results = {}
    for name, variant, family in MODELS:
        results[name] = measure(variant, family, image, args.repeats, args.prompts)
        gc.collect()  # the last pair's models go before the next are built
        print(f"  measured {name}", flush=True)

    for column, label in ((1, "CPU (process) time"), (0, "wall time")):
        print(f"\n{label}, median")
        print(f"{'model':<15}{'encoder s':>22}{'x':>7}{'prompt to mask ms':>24}{'x':>7}")
        print(f"{'':<15}{'reference':>11}{'ours':>11}{'':>7}{'reference':>12}{'ours':>12}")
        for name, (encoder, decode) in results.items():
            (enc_ref, enc_ours), (dec_ref, dec_ours) = ([t[column] for t in encoder],
                                                        [t[column] for t in decode])
            print(f"{name:<15}{enc_ref:>11.3f}{enc_ours:>11.3f}{enc_ref / enc_ours:>7.2f}"
                  f"{dec_ref * 1e3:>12.1f}{dec_ours * 1e3:>12.1f}{dec_ref / dec_ours:>7.2f}")
        sam = [t[column] for t in results["SAM ViT-B"][0]]
        for name in ("SAM 2.1 tiny", "SAM 2.1 small"):
            other = [t[column] for t in results[name][0]]
            print(f"SAM ViT-B encoder / {name} encoder: {sam[0] / other[0]:.2f}x with the "
                  f"references, {sam[1] / other[1]:.2f}x with ours")
    print("(x = reference time / ours: above 1 means ours is faster; CPU time adds up both "
          "threads)")
    print(f"load average over the run: {os.getloadavg()[0]:.1f} (1 min) at the end, "
          f"{start_load:.1f} at the start")


if __name__ == "__main__":
    main()
