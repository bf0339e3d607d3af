"""The node's label image (``~/masks``, ``~/overlay``) at 1080p: one id per pixel, where
masks overlap the object with the higher mask logit (``tracker.label_image``), against
simply drawing the higher id on top, for rectangles of 400 x 600 px overlapping more and
more. Their logits vary smoothly, as a tracker's do: random on a grid of one cell per 7.5 px
(a 1024-pixel model's 256 x 256 low-resolution logits at 1080p), upscaled bilinearly.

    .venv/bin/python bench/bench_labels.py

Prints milliseconds per label image (median of 9). The label image reads each mask inside
its bounding box only, and logits only where boxes meet.
"""

import cv2
import numpy as np

from common import timed
from sam_ros.tracker import TrackResult, label_image

HEIGHT, WIDTH = 1080, 1920
# (objects, horizontal step between their rectangles: 700 apart, then overlapping)
LAYOUTS = ((1, 0), (2, 700), (3, 400), (3, 150), (6, 250))


def higher_id_on_top(results):
    labels = np.zeros((HEIGHT, WIDTH), np.uint16)
    for obj_id in sorted(results):
        if results[obj_id].visible:
            np.copyto(labels, np.uint16(obj_id), where=results[obj_id].mask)
    return labels


def rectangles(count, step, rng):
    results = {}
    for obj_id in range(1, count + 1):
        logits = np.full((HEIGHT, WIDTH), -1.0, np.float32)
        x = step * (obj_id - 1)
        coarse = rng.random((54, 80), np.float32)
        logits[100:500, x:x + 600] = cv2.resize(coarse, (600, 400),
                                                interpolation=cv2.INTER_LINEAR) + 0.01
        results[obj_id] = TrackResult(obj_id, 0, None, logits > 0, logits, 1.0, True, 0.5)
    return results


def main():
    rng = np.random.default_rng(0)
    print("| objects | overlapping px | higher id on top, ms | higher logit, ms |")
    print("|---|---|---|---|")
    for count, step in LAYOUTS:
        results = rectangles(count, step, rng)
        overlap = int((sum(r.mask.astype(np.int32) for r in results.values()) > 1).sum())
        by_id, _ = timed(lambda: higher_id_on_top(results), 9)
        by_logit, _ = timed(lambda: label_image((HEIGHT, WIDTH), results), 9)
        print(f"| {count} | {overlap:,} | {by_id * 1e3:.1f} | {by_logit * 1e3:.1f} |")


if __name__ == "__main__":
    main()
