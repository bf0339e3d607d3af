"""Image encoder and prompt-to-mask step: ours against Meta's reference, one run, same
random weights, same real frames. Also our bfloat16 path and its agreement with float32.

    .venv/bin/python bench/bench_model.py [--variant sam2.1_hiera_t] [--image-size 1024]
"""

import argparse

import numpy as np
import torch

from common import describe_machine, sync, timed
from lab.oracle import (
    IMAGES,
    VIDEOS,
    build_oracle,
    copy_weights,
    oracle_image_predictor,
    read_image,
    read_video_frames,
)
from sam_ros.model import SAM2, SamImagePredictor, get_config
from sam_ros.model.transforms import preprocess


def frames_for_bench(count):
    frames = [read_image(IMAGES[0])]
    for video in VIDEOS:
        frames += read_video_frames(video, count=1, start=40)
    return frames[:count]


def click_for(image):
    h, w = image.shape[:2]
    return dict(point_coords=[[w * 0.45, h * 0.55]], point_labels=[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="sam2.1_hiera_t")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = args.device

    oracle = build_oracle(args.variant, image_size=args.image_size).to(device)
    config = get_config(args.variant, image_size=args.image_size)
    model = copy_weights(oracle, SAM2(config)).to(device)
    frames = frames_for_bench(args.frames)
    print(f"{args.variant} at {args.image_size}, {len(frames)} real frames, "
          f"{describe_machine(device)}")

    def encoder_time(encode):
        total = 0.0
        for frame in frames:
            x = preprocess(frame, args.image_size, device)

            def run():
                out = encode(x)
                sync(device)
                return out
            seconds, _ = timed(run, args.repeats)
            total += seconds
        return total / len(frames)

    with torch.inference_mode():
        t_ref = encoder_time(oracle.forward_image)
        t_f32 = encoder_time(model.encode_image)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            t_bf16 = encoder_time(model.encode_image)

    reference = oracle_image_predictor(oracle)
    ours = SamImagePredictor(model)
    fast = SamImagePredictor(model, precision="bfloat16")

    def decode_time(predictor):
        total = 0.0
        for frame in frames:
            predictor.set_image(frame)
            seconds, _ = timed(lambda: predictor.predict(**click_for(frame)), args.prompts)
            total += seconds
        return total / len(frames)

    d_ref, d_f32, d_bf16 = decode_time(reference), decode_time(ours), decode_time(fast)

    # bfloat16 against float32: sign agreement where float32 is confident (|logit| > 1).
    agree = confident = 0
    worst = 1.0
    for frame in frames:
        for predictor in (ours, fast):
            predictor.set_image(frame)
        for dx in (0.3, 0.5, 0.7):
            h, w = frame.shape[:2]
            prompt = dict(point_coords=[[w * dx, h * 0.5]], point_labels=[1], return_logits=True)
            ref_logits = ours.predict(**prompt)[0]
            fast_logits = fast.predict(**prompt)[0]
            mask = np.abs(ref_logits) > 1
            same = np.sign(ref_logits[mask]) == np.sign(fast_logits[mask])
            agree += int(same.sum())
            confident += int(mask.sum())
            if mask.any():
                worst = min(worst, float(same.mean()))

    print(f"{'step':<28}{'reference':>11}{'ours fp32':>11}{'ours bf16':>11}{'fp32 x':>9}"
          f"{'bf16 x':>9}")
    for name, ref, f32, bf16 in [("image encoder (s/frame)", t_ref, t_f32, t_bf16),
                                 ("prompt to mask (s/prompt)", d_ref, d_f32, d_bf16)]:
        print(f"{name:<28}{ref:>11.4f}{f32:>11.4f}{bf16:>11.4f}{ref / f32:>9.2f}{ref / bf16:>9.2f}")
    print("(x = reference time / ours: above 1 means ours is faster)")
    print(f"bf16 vs fp32 mask-logit sign agreement where |fp32 logit| > 1: "
          f"{agree / max(confident, 1):.4%} overall, worst prompt {worst:.4%} "
          f"({confident} pixels, {3 * len(frames)} prompts)")


if __name__ == "__main__":
    main()
