"""Render the demo's generated scene into ``data/demo/``, so that the demo (robot side)
plays it with no generator: held-out clip 0 at 256 px, whose target is fully visible on
frame 0, then fully hidden for a few frames, then back.

    .venv/bin/python -m lab.demo_scene data/demo

Writes ``generated.mp4`` (the frames; MPEG-4, lossy) and ``generated.npz`` (``truth``: the
target's mask on every frame, bit-packed along rows; ``hidden``: whether it is fully hidden).
The masks are exact for the rendered frames; the video's compression moves pixels by about
3.5 grey levels on average, not the objects.
"""

import argparse
import os

import cv2
import numpy as np

from .synthetic import SceneGenerator, find_photos, test_seed

SIZE, FRAMES, FPS = 256, 60, 10


def render(folder, frames=FRAMES):
    clip = SceneGenerator(find_photos(), size=SIZE).clip(test_seed(0), num_frames=frames,
                                                        occlusion=True)
    os.makedirs(folder, exist_ok=True)
    writer = cv2.VideoWriter(os.path.join(folder, "generated.mp4"),
                             cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    for frame in clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    np.savez_compressed(os.path.join(folder, "generated.npz"),
                        truth=np.packbits(clip.masks[:, 0], axis=-1),
                        hidden=clip.visibility[:, 0] == 0)
    return clip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="where to write generated.mp4 and generated.npz")
    parser.add_argument("--frames", type=int, default=FRAMES)
    args = parser.parse_args(argv)
    clip = render(args.folder, args.frames)
    print(f"wrote {len(clip.frames)} frames of {SIZE} px to {args.folder}")


if __name__ == "__main__":
    main()
