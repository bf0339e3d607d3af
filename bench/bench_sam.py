"""SAM (2023) ViT-B, MobileSAM, SAM 2.1 tiny and small in one run: image encoder and
prompt-to-mask times, ours against the references (segment-anything 1.0, MobileSAM's code,
sam2 1.1.0), same random weights, same real image.

    .venv/bin/python bench/bench_sam.py [--repeats 3] [--prompts 10]

The encoder is timed on the model input (each family frames the image its own way: SAM pads
the longest side to 1024, SAM 2 stretches to 1024 x 1024); prompt-to-mask is one click
through each predictor, three candidate masks, upscaled to the image.
"""

import argparse
import gc

import torch
from common import describe_machine, timed

from sam_ros.model import SAM, SAM2, SamImagePredictor, get_config
from training.oracle import (
    IMAGES,
    build_oracle,
    build_sam_oracle,
    copy_weights,
    oracle_image_predictor,
    oracle_sam_predictor,
    read_image,
)

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


def measure(variant, family, image, repeats, prompts):
    reference_encoder, reference, ours = build_pair(variant, family)
    model_input = ours.input_transform(image.shape[:2]).image(image)
    click = {"point_coords": [[image.shape[1] * 0.45, image.shape[0] * 0.55]],
             "point_labels": [1], "multimask_output": True}
    with torch.inference_mode():
        encoder = [timed(lambda: reference_encoder(model_input), repeats)[0],
                   timed(lambda: ours.encode_image(model_input), repeats)[0]]
        predictor = SamImagePredictor(ours)
        reference.set_image(image)
        predictor.set_image(image)
        reference_click = {k: torch.as_tensor(v).numpy() if k != "multimask_output" else v
                           for k, v in click.items()}
        decode = [timed(lambda: reference.predict(**reference_click), prompts)[0],
                  timed(lambda: predictor.predict(**click), prompts)[0]]
    return encoder, decode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="encoder runs per model")
    parser.add_argument("--prompts", type=int, default=10, help="clicks per model")
    args = parser.parse_args()
    image = read_image(IMAGES[0])
    print(f"{describe_machine('cpu')}, image {IMAGES[0].name} {image.shape[1]}x{image.shape[0]}, "
          f"median of {args.repeats} encoder runs and {args.prompts} clicks, float32")
    results = {}
    for name, variant, family in MODELS:
        results[name] = measure(variant, family, image, args.repeats, args.prompts)
        gc.collect()  # the last pair's models go before the next are built
        print(f"  measured {name}", flush=True)

    print(f"\n{'model':<15}{'encoder s':>22}{'x':>7}{'prompt to mask ms':>24}{'x':>7}")
    print(f"{'':<15}{'reference':>11}{'ours':>11}{'':>7}{'reference':>12}{'ours':>12}")
    for name, ((enc_ref, enc_ours), (dec_ref, dec_ours)) in results.items():
        print(f"{name:<15}{enc_ref:>11.3f}{enc_ours:>11.3f}{enc_ref / enc_ours:>7.2f}"
              f"{dec_ref * 1e3:>12.1f}{dec_ours * 1e3:>12.1f}{dec_ref / dec_ours:>7.2f}")
    print("(x = reference time / ours: above 1 means ours is faster)")
    sam = results["SAM ViT-B"][0]
    for name in ("SAM 2.1 tiny", "SAM 2.1 small"):
        other = results[name][0]
        print(f"SAM ViT-B encoder / {name} encoder: {sam[0] / other[0]:.2f}x with the "
              f"references, {sam[1] / other[1]:.2f}x with ours")


if __name__ == "__main__":
    main()
