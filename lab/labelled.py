"""Labelled video in the DAVIS / YouTube-VOS layout: a user's own footage, to score a model
on (``evaluate --dataset``) and to fine-tune it on (``train --dataset``).

    ROOT/JPEGImages/[480p/]SEQUENCE/00000.jpg    frames (.jpg, .jpeg or .png)
    ROOT/Annotations/[480p/]SEQUENCE/00000.png   object ids: 0 background, 255 void

An annotation is an indexed (palette) or greyscale PNG whose pixel values are object ids,
as DAVIS, YouTube-VOS and most labelling tools write them. A sequence is its annotated
frames, in file-name order: YouTube-VOS labels every fifth frame, and those are the frames
it is scored and trained on. Colour-coded RGB annotations are refused, since colours
cannot be told from ids without the tool's palette.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image

FRAMES_DIR, ANNOTATIONS_DIR = "JPEGImages", "Annotations"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
# DAVIS marks uncertain pixels (object borders in some sets) with this value: no object,
# and left out of J and F by ``evaluate --scoring per-object`` (as DAVIS's evaluation does
# for its unsupervised task; its semi-supervised one, ``--scoring davis``, counts them as
# background).
VOID_ID = 255


@dataclass
class LabelledClip:
    """A labelled sequence loaded for scoring; the fields ``evaluate`` reads from a
    generated ``synthetic.Clip``."""

    name: str
    frames: np.ndarray  # T x H x W x 3 uint8, RGB
    masks: np.ndarray  # T x K x H x W bool, K = len(object_ids)
    visibility: np.ndarray  # T x K float32: 1 where the object has pixels, else 0
    object_ids: list  # the annotation value of each mask, ascending
    # T x H x W bool: pixels labelled void (``VOID_ID``); None if none
    void: Optional[np.ndarray] = None
    appearance = ()  # how the objects look is not known, unlike a generated clip's

    def target_name(self, target):
        """How evaluation names a target: ``"sequence:object id"``."""
        return f"{self.name}:{self.object_ids[target]}"


@dataclass
class Sequence:
    """One sequence on disk: its annotated frames and their annotations, in order."""

    name: str
    frames: list
    annotations: list

    def read(self, indices=None, size=None):
        """Frames ``T x H x W x 3`` (RGB) and annotations ``T x H x W`` (object ids) of the
        given frame indices (default: all), resized to ``size x size`` when given (as the
        model sees them: SAM 2 does not keep the aspect ratio)."""
        indices = range(len(self.frames)) if indices is None else indices
        images, ids = [], []
        for i in indices:
            image = cv2.imread(self.frames[i], cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"cannot read frame {self.frames[i]}")
            label = read_annotation(self.annotations[i])
            if label.shape != image.shape[:2]:
                raise ValueError(f"{self.annotations[i]} is {label.shape[1]}x{label.shape[0]} "
                                 f"but its frame is {image.shape[1]}x{image.shape[0]}")
            if size is not None:
                image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
                label = cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST)
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            ids.append(label)
        return np.array(images), np.array(ids)

    def load(self):
        """The whole sequence at its own resolution, one mask per object."""
        frames, ids = self.read()
        object_ids = object_ids_in(ids)
        masks = masks_of(ids, object_ids)
        visibility = masks.any(axis=(2, 3)).astype(np.float32)
        void = ids == VOID_ID
        return LabelledClip(self.name, frames, masks, visibility, object_ids,
                            void if void.any() else None)


def object_ids_in(ids):
    """The object ids present in an array of annotations, ascending (no background, no
    void)."""
    return [int(v) for v in np.unique(ids) if v not in (0, VOID_ID)]


def masks_of(ids, object_ids):
    """T x H x W annotations -> T x K x H x W bool, one mask per id of ``object_ids``."""
    return ids[:, None] == np.array(object_ids, ids.dtype).reshape(1, -1, 1, 1)


def read_annotation(path):
    """H x W object ids (uint8) of an indexed or greyscale PNG."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path} is a {image.mode} image: annotations must be indexed "
                             "(palette) or greyscale PNGs whose values are object ids")
        return np.array(image, dtype=np.uint8)


def find_sequences(root):
    """Every sequence under ``root`` (see the module docstring), sorted by name. Raises
    ValueError with what is wrong when the layout does not hold."""
    root = Path(root)
    annotations_root, frames_root = root / ANNOTATIONS_DIR, root / FRAMES_DIR
    if not annotations_root.is_dir() or not frames_root.is_dir():
        raise ValueError(f"{root} is not a DAVIS-layout dataset: it needs {FRAMES_DIR}/ and "
                         f"{ANNOTATIONS_DIR}/ folders")
    sequences = []
    for folder, _, files in sorted(os.walk(annotations_root)):
        pngs = sorted(f for f in files if f.lower().endswith(".png"))
        if not pngs:
            continue
        relative = Path(folder).relative_to(annotations_root)
        image_folder = frames_root / relative
        frames = []
        for png in pngs:
            stem = os.path.splitext(png)[0]
            found = [image_folder / (stem + s) for s in FRAME_SUFFIXES
                     if (image_folder / (stem + s)).is_file()]
            if not found:
                raise ValueError(f"{Path(folder) / png} has no frame {stem}.jpg/.png in "
                                 f"{image_folder}")
            frames.append(str(found[0]))
        sequences.append(Sequence(relative.as_posix(), frames,
                                  [str(Path(folder) / p) for p in pngs]))
    if not sequences:
        raise ValueError(f"no annotated sequences (PNG files) under {annotations_root}")
    return sequences


def write_sequence(root, name, frames, masks):
    """Write one sequence in the DAVIS layout: ``frames`` T x H x W x 3 RGB as lossless
    PNGs, ``masks`` T x K x H x W bool as indexed PNGs with object ids 1..K (a later
    object drawn over an earlier one). Turns generated clips into a labelled dataset, to
    try the fine-tuning path before labelling footage of one's own."""
    image_folder = Path(root) / FRAMES_DIR / name
    label_folder = Path(root) / ANNOTATIONS_DIR / name
    image_folder.mkdir(parents=True, exist_ok=True)
    label_folder.mkdir(parents=True, exist_ok=True)
    for t, (frame, frame_masks) in enumerate(zip(frames, masks)):
        cv2.imwrite(str(image_folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        ids = np.zeros(frame.shape[:2], np.uint8)
        for k, mask in enumerate(frame_masks):
            ids[mask] = k + 1
        write_annotation(label_folder / f"{t:05d}.png", ids)


def write_annotation(path, ids):
    """An H x W uint8 array of object ids as an indexed PNG with DAVIS's palette."""
    label = Image.fromarray(ids)
    label.putpalette(davis_palette())  # greyscale -> indexed, ids unchanged
    label.save(path)


def davis_palette():
    """The 256-colour palette DAVIS and PASCAL VOC annotations use (id 1 red, 2 green,
    ...), as a flat RGB list: the bits of the id spread over the three channels."""
    palette = []
    for index in range(256):
        rgb, value = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette += rgb
    return palette
