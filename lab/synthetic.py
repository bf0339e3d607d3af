"""Seeded synthetic videos with exact ground-truth masks, to train and evaluate our SAM 2.

A clip is a pure function of (photos, size, seed, arguments): one ``np.random.default_rng(seed)``
makes every choice, so a seed names the same clip (given the same NumPy and OpenCV). Training
draws seeds below ``TRAIN_SEED_LIMIT``; ``test_seed(i)`` names held-out clips no training run
can have seen.

A scene is a photo background that pans slowly, target objects (whose visible pixels are the
masks), look-alike distractors and sometimes a large photo-textured slab in front of
everything. Objects are polygons filled with cv2, so a mask is exactly the set of pixels where
the object's colour was drawn and a perfect model scores IoU 1.0.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .samples import PHOTOS as SAMPLE_PHOTOS

TRAIN_SEED_LIMIT = 1_000_000_000
PHOTOS_ENV = "SAM_ROS_PHOTOS"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

MAX_TARGETS = 3  # targets a clip draws when not told how many
MIN_EVENT_FRAMES = 8  # frame 0 seen, a transition, 2 hidden frames, a transition, 3 seen again
_EDGE = 2.0  # px kept between outlines that must (not) overlap, more than rasterising moves them
_TEX = 128  # side of the generated object textures
_PEEK = 4.0  # px, at least, that a planned-hidden object sticks out on the frames either side
_ATTEMPTS = 20  # scenes drawn before giving up on a forced occlusion (one is almost always enough)
# How an object's texture is made (``_texture``), in the order its draw picks them; the
# evaluation scores targets by it, since some are much harder to tell from the background.
APPEARANCES = ("noisy colour", "stripes or checks", "gradient", "photo crop")


def test_seed(i):
    """The i-th held-out seed: above every training seed."""
    if i < 0:
        raise ValueError(f"held-out seed index must be >= 0, got {i}")
    return TRAIN_SEED_LIMIT + int(i)


test_seed.__test__ = False  # its name would make pytest collect it where a test module imports it


@dataclass
class Clip:
    """One synthetic video: T frames, K targets."""

    frames: np.ndarray  # T x H x W x 3 uint8, RGB
    masks: np.ndarray  # T x K x H x W bool: visible pixels of each target
    visibility: np.ndarray  # T x K float32: visible / whole-shape pixels; 0 = hidden or off-frame
    seed: int
    appearance: tuple = ()  # per target, how its texture was made: one of ``APPEARANCES``
    void = None  # no pixel is left out of scoring (labelled clips may have some)

    def target_name(self, target):
        """How evaluation names a target: ``"seed S:target index"``."""
        return f"seed {self.seed}:{target}"


@dataclass(eq=False)  # compared by identity when reordered
class _Layer:
    """A filled polygon moving over the clip; a target, a distractor or an occluding slab."""

    outline: np.ndarray  # N x 2 polygon in local coordinates
    texture: np.ndarray  # S x S x 3 uint8, centred on the local origin
    tex_scale: float  # texture pixels per local unit
    affine: np.ndarray  # T x 2 x 3, local -> frame coordinates, one per frame
    luts: np.ndarray  # T x 256 uint8: the brightness / contrast drift, one per frame
    target: int  # index into the clip's masks, -1 when no mask is wanted
    appearance: str = "photo crop"  # how its texture was made (``APPEARANCES``)

    def polygons(self):
        """T x N x 2 outline in frame coordinates."""
        linear, shift = self.affine[:, :, :2], self.affine[:, None, :, 2]
        return np.einsum("nj,tij->tni", self.outline, linear) + shift


@dataclass
class _Background:
    photo: int
    matrices: np.ndarray  # T x 2 x 3, photo -> frame coordinates
    lut: np.ndarray  # 256 x 1 x 3 uint8 colour jitter
    window: np.ndarray  # x0, y0, x1, y1 of frame 0's crop in photo pixels
    mean: np.ndarray  # mean colour of frame 0, against which object textures keep contrast


@dataclass
class _Scene:
    layers: list  # back to front
    cover: object  # the slab planned to hide a target, drawn on top; None if there is none
    hidden: tuple  # (first frame, number of frames) of the planned disappearance, or None


def _drift(rng, num_frames, gain, bias):
    """T x 256 lookup tables moving linearly between two random gain/bias settings."""
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    g0, g1 = rng.uniform(*gain, 2)
    b0, b1 = rng.uniform(*bias, 2)
    values = np.arange(256.0) * (g0 + (g1 - g0) * t) + (b0 + (b1 - b0) * t)
    return np.clip(values, 0, 255).astype(np.uint8)


def _outline(rng):
    """A random unit shape (farthest vertex at radius 1): ellipse, polygon, star or rounded box."""
    kind = rng.integers(4)
    if kind == 0:
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(a), rng.uniform(0.35, 1.0) * np.sin(a)], 1)
    elif kind == 1:  # radial polygon; concave where neighbouring radii differ enough
        n = int(rng.integers(5, 13))
        a = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2 * np.pi / n)
        pts = rng.uniform(0.45, 1.0, n)[:, None] * np.stack([np.cos(a), np.sin(a)], 1)
    elif kind == 2:
        n = int(rng.integers(4, 9))
        a = np.arange(2 * n) * (np.pi / n)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.35, 0.7))
        pts = r[:, None] * np.stack([np.cos(a), np.sin(a)], 1)
    else:
        half = np.array([1.0, rng.uniform(0.35, 1.0)])
        radius = rng.uniform(0.05, 1.0) * half[1]
        arcs = []
        for i, (sx, sy) in enumerate([(1, 1), (-1, 1), (-1, -1), (1, -1)]):
            a = np.linspace(i * np.pi / 2, (i + 1) * np.pi / 2, 8)
            corner = np.array([sx, sy]) * (half - radius)
            arcs.append(corner + radius * np.stack([np.cos(a), np.sin(a)], 1))
        pts = np.concatenate(arcs)
    return pts / np.linalg.norm(pts, axis=1).max()


def _fold(x, lo, hi):
    """Reflect x into [lo, hi] as if it bounced off the ends: keeps objects in a region smoothly."""
    q = np.mod((x - lo) / (hi - lo), 2.0)
    return lo + np.where(q > 1.0, 2.0 - q, q) * (hi - lo)


def _rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _timeline(rng, num_frames):
    """(first frame, length) of a planned disappearance that leaves room to leave and come back."""
    length = int(rng.integers(2, min(6, num_frames - 6) + 1))
    lo, hi = 2, num_frames - 4 - length
    pad = (hi - lo) // 4  # long clips: keep the event in the middle half
    return int(rng.integers(lo + pad, hi - pad + 1)), length


class SceneGenerator:
    """Renders seeded synthetic clips over the given photos (paths or H x W x 3 uint8 RGB)."""

    def __init__(self, photos, size=256):
        if int(size) < 32:
            raise ValueError(f"size must be >= 32, got {size}")
        self.size = int(size)
        self.photos = [self._load(p) for p in photos]
        if not self.photos:
            raise ValueError("need at least one photo")
        yy, xx = np.mgrid[0:_TEX, 0:_TEX].astype(np.float32)
        self._grid = (xx, yy)

    def _load(self, photo):
        """RGB uint8, shrunk once so that per-frame crops are cheap: shorter side 1.5 x size."""
        if isinstance(photo, (str, Path)):
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"cannot read image {photo}")
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        else:
            image = np.asarray(photo)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"photos must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}")
        factor = 1.5 * self.size / min(image.shape[:2])
        if factor < 1.0:
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image)

    def clip(self, seed, num_frames=8, num_targets=None, occlusion=None):
        """The clip named by ``seed``.

        ``num_targets``: None draws 1..``MAX_TARGETS``. ``occlusion``: None draws the events;
        True makes target 0 fully visible on frame 0, then fully hidden (behind a slab or out
        of frame) for 2..6 frames, then visible (> 0.5) on at least 3 later frames; False
        keeps target 0's visibility >= 0.5 on every frame.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if num_frames < 1 or (occlusion is True and num_frames < MIN_EVENT_FRAMES):
            raise ValueError(f"num_frames={num_frames} is too short "
                             f"(occlusion=True needs {MIN_EVENT_FRAMES})")
        if num_targets is not None and num_targets < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        rng = np.random.default_rng(int(seed))
        if num_targets is None:
            num_targets = int(rng.integers(1, MAX_TARGETS + 1))
        num_targets = int(num_targets)
        background = self._background(rng, num_frames)
        for _ in range(_ATTEMPTS):
            scene = self._scene(rng, num_frames, num_targets, occlusion, background)
            if scene is None:
                continue
            for reorder in (False, True):
                if reorder:  # what is in front spoilt it: lift target 0 (under the planned slab)
                    layer = next(layer for layer in scene.layers if layer.target == 0)
                    scene.layers.remove(layer)
                    planned = occlusion and scene.cover
                    top = scene.layers.index(scene.cover) if planned else len(scene.layers)
                    scene.layers.insert(top, layer)
                frames, masks, visibility = self._render(background, scene.layers, num_targets)
                if self._acceptable(visibility[:, 0], occlusion, scene.hidden):
                    appearance = {layer.target: layer.appearance for layer in scene.layers}
                    return Clip(frames, masks, visibility, int(seed),
                                tuple(appearance[k] for k in range(num_targets)))
        raise RuntimeError(
            f"seed {seed}: no scene met occlusion={occlusion} in {_ATTEMPTS} attempts")

    # -- planning ---------------------------------------------------------------------------

    def _background(self, rng, num_frames):
        """A random crop of a random photo, flipped maybe, panning a little, colour-jittered."""
        index = int(rng.integers(len(self.photos)))
        photo = self.photos[index]
        h, w = photo.shape[:2]
        side = rng.uniform(0.5, 1.0) * min(h, w)
        zoom = self.size / side
        lo, hi = np.full(2, side / 2), np.array([w, h]) - side / 2
        start = rng.uniform(lo, hi)
        heading = rng.uniform(0, 2 * np.pi)
        pan = rng.uniform(0, 0.01) * side * (num_frames - 1)  # up to 1% of the frame per frame
        end = np.clip(start + pan * np.array([np.cos(heading), np.sin(heading)]), lo, hi)
        centres = start + (end - start) * np.linspace(0.0, 1.0, num_frames)[:, None]
        flip = -1.0 if rng.random() < 0.5 else 1.0
        matrices = np.zeros((num_frames, 2, 3))
        matrices[:, 0, 0], matrices[:, 1, 1] = zoom * flip, zoom
        matrices[:, 0, 2] = self.size / 2 - zoom * flip * centres[:, 0]
        matrices[:, 1, 2] = self.size / 2 - zoom * centres[:, 1]
        gain = rng.uniform(0.85, 1.15) * rng.uniform(0.9, 1.1, 3)
        bias = rng.uniform(-15, 15)
        lut = np.clip(np.arange(256.0)[:, None] * gain + bias, 0, 255).astype(np.uint8)[:, None, :]
        x0, y0 = (centres[0] - side / 2).astype(int)
        window = np.array([x0, y0, x0 + int(side), y0 + int(side)])
        mean = photo[y0 : y0 + int(side) : 4, x0 : x0 + int(side) : 4].mean((0, 1)) * gain + bias
        return _Background(index, matrices, lut, window, mean)

    def _scene(self, rng, num_frames, num_targets, occlusion, background):
        """Targets and distractors in random depth order, plus the occlusion events.

        None when the planned disappearance cannot work out with these objects.
        """
        count = num_targets + int(rng.integers(0, 3))
        candidates = [0] if occlusion else list(range(0 if occlusion is None else 1, num_targets))
        event = None
        if num_frames >= MIN_EVENT_FRAMES and candidates and (occlusion or rng.random() < 0.4):
            event = candidates[int(rng.integers(len(candidates)))]
        objects = []
        for i in range(count):
            inside = i == event or (i == 0 and occlusion is False)
            target = i if i < num_targets else -1
            objects.append(self._object(rng, num_frames, target, inside, background))
        layers = [objects[i] for i in rng.permutation(count)]
        cover, hidden = None, None
        if event is not None:
            hidden = _timeline(rng, num_frames)
            if rng.random() < 0.5:
                if not self._plan_exit(rng, objects[event], *hidden):
                    return None
            else:
                cover = self._plan_cover(rng, objects[event], *hidden, background)
                layers.append(cover)
        if not occlusion and rng.random() < 0.25:
            layers.append(self._passing_slab(rng, num_frames, background))
        return _Scene(layers, cover, hidden)

    def _object(self, rng, num_frames, target, inside, background):
        """A textured shape that moves, turns, grows or shrinks and changes brightness.

        ``inside`` keeps the whole shape in the frame; otherwise up to about half of it may
        leave the frame at times.
        """
        size, t = self.size, np.arange(num_frames)
        outline = _outline(rng)
        texture, appearance = self._texture(rng, background)
        growth = np.log(rng.uniform(0.77, 1.3)) * np.linspace(0.0, 1.0, num_frames)
        scale = rng.uniform(0.075, 0.225) * size * np.exp(growth)  # diameter 15..45% of the side
        angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.06, 0.06) * t
        # Linear motion, slow acceleration and a sway; together at most 6% of the side per frame.
        heading = rng.uniform(0, 2 * np.pi, 2)
        unit = np.stack([np.cos(heading), np.sin(heading)], 1)
        velocity = rng.uniform(0, 0.04) * size * unit[0]
        accel = rng.uniform(0, 0.01) * size / max(num_frames - 1, 1) * unit[1]
        omega = rng.uniform(0.1, 0.5, 2)
        sway = rng.uniform(0, 0.01 / np.sqrt(2), 2) * size / omega
        raw = (rng.uniform(0, size, 2) + velocity * t[:, None] + 0.5 * accel * t[:, None] ** 2
               + sway * np.sin(omega * t[:, None] + rng.uniform(0, 2 * np.pi, 2)))
        margin = (scale + 1.0) if inside else 0.35 * scale
        centres = _fold(raw, margin[:, None], size - 1 - margin[:, None])
        affine = np.concatenate([scale[:, None, None] * _rotation(angle), centres[:, :, None]], 2)
        luts = _drift(rng, num_frames, (0.8, 1.2), (-20, 20))
        return _Layer(outline, texture, _TEX / 2, affine, luts, target, appearance)

    def _plan_exit(self, rng, layer, first, length):
        """Send the object out through the nearest frame edge and back in: a cosine bump.

        The bump is just tall enough that the shape's innermost point is past the edge on the
        planned hidden frames; it is zero on frame 0 and on the last 3 frames, where the object
        is on its own (fully inside) path. False when the object's own motion towards the edge
        would keep it hidden on a frame next to the planned ones.
        """
        num_frames, size = len(layer.affine), self.size
        t = np.arange(num_frames)
        middle = first + (length - 1) / 2
        half = rng.uniform(length / 2 + 1, min(middle, num_frames - 3 - middle, length / 2 + 6))
        centre = layer.affine[round(middle), :, 2]
        gaps = np.array([size - centre[0], size - centre[1], centre[0], centre[1]])
        edge = int(np.argmin(gaps))  # right, bottom, left, top
        axis, sign = edge % 2, (1.0 if edge < 2 else -1.0)
        inner = (sign * layer.polygons()[:, :, axis]).min(1)  # innermost point, outwards positive
        beyond = (size - 0.5) if sign > 0 else 0.5  # the edge, in the same signed coordinate
        bump = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - middle) / half, -1.0, 1.0))
        hidden = slice(first, first + length)
        height = np.max((beyond + _EDGE - inner[hidden]) / bump[hidden])
        layer.affine[:, axis, 2] += sign * height * bump
        either_side = [first - 1, first + length]
        peek = np.maximum(_PEEK, 0.1 * np.linalg.norm(layer.affine[either_side, :, 0], axis=1))
        return bool((inner[either_side] + height * bump[either_side] <= beyond - peek).all())

    def _plan_cover(self, rng, layer, first, length, background):
        """A slab that slides over the object and hides all of it exactly on the planned frames.

        Along the slab's normal n the slab keeps pace with the object's own sway and passes it
        at a constant relative speed, so its width and speed follow from the object's extent:
        wide enough to cover it on the hidden frames, fast enough to have uncovered frame 0, the
        last 3 frames and part of the frames either side of the hidden ones.
        """
        num_frames, size = len(layer.affine), self.size
        t = np.arange(num_frames)
        middle = first + (length - 1) / 2
        velocity = layer.affine[min(first + 1, num_frames - 1), :, 2] - layer.affine[first, :, 2]
        speed = np.linalg.norm(velocity)
        still = rng.random() < 0.6 and speed > 0.005 * size  # a pillar the object walks behind
        heading = rng.uniform(0, 2 * np.pi)
        normal = -velocity / speed if still else np.array([np.cos(heading), np.sin(heading)])
        centre = np.full(2, size / 2)
        along = (layer.polygons() - centre) @ normal
        mid = (layer.affine[:, :, 2] - centre) @ normal
        back, front = mid - along.min(1), along.max(1) - mid  # extents behind / ahead of the centre
        wave = rng.uniform(0, 0.015) * size
        pad = _EDGE + wave
        reach = max(back[first : first + length].max(), front[first : first + length].max())
        peek = max(_PEEK, 0.1 * reach)
        needed = max(
            (reach + back[0] + 2 * pad) / first,
            (reach + front[num_frames - 3] + 2 * pad) / (num_frames - 2 - first - length),
            reach + 2 * pad + peek - front[first - 1],
            reach + 2 * pad + peek - back[first + length],
        )
        wanted = -velocity @ normal if still else rng.uniform(0.01, 0.06) * size
        rel = max(needed, wanted)
        half_width = rel * (length - 1) / 2 + reach + pad
        return self._slab(rng, normal, mid + rel * (t - middle), half_width, wave, background)

    def _passing_slab(self, rng, num_frames, background):
        """A slab crossing the scene on its own: partial or full occlusions nobody planned."""
        heading = rng.uniform(0, 2 * np.pi)
        normal = np.array([np.cos(heading), np.sin(heading)])
        start, speed = rng.uniform(-0.9, 0.9), rng.uniform(-0.05, 0.05)
        offset = (start + speed * np.arange(num_frames)) * self.size
        half_width = rng.uniform(0.06, 0.18) * self.size
        wave = rng.uniform(0, 0.015) * self.size
        return self._slab(rng, normal, offset, half_width, wave, background)

    def _slab(self, rng, normal, offset, half_width, wave, background):
        """A photo-textured band across the frame with wavy edges.

        Its centre line runs through the frame centre shifted by ``offset`` (one per frame)
        along ``normal``; its edges wander within ``half_width`` +- ``wave``.
        """
        size = self.size
        length = 1.5 * size
        y = np.linspace(-length, length, 48)
        waves = []
        for _ in range(2):
            f, p = rng.uniform(0.5, 3.0, 2), rng.uniform(0, 2 * np.pi, 2)
            phase = 2 * np.pi * f[:, None] * y / size + p[:, None]
            waves.append(0.6 * np.sin(phase[0]) + 0.4 * np.sin(phase[1]))
        right = np.stack([half_width + wave * waves[0], y], 1)
        left = np.stack([-half_width - wave * waves[1], y], 1)[::-1]
        outline = np.concatenate([right, left])
        rotation = np.array([[normal[0], -normal[1]], [normal[1], normal[0]]])
        centres = size / 2 + offset[:, None] * normal
        rotations = np.broadcast_to(rotation, (len(offset), 2, 2))
        affine = np.concatenate([rotations, centres[:, :, None]], 2)
        texture = self._photo_crop(rng, background, size, (0.5, 1.0))
        luts = _drift(rng, len(offset), (0.7, 1.1), (-25, 15))
        return _Layer(outline, texture, 1.0, affine, luts, -1)

    # -- appearance -------------------------------------------------------------------------

    def _colour(self, rng):
        """Half the time a colour taken from a photo, so objects do not stand out by palette."""
        if rng.random() < 0.5:
            photo = self.photos[int(rng.integers(len(self.photos)))]
            y, x = rng.integers(photo.shape[0]), rng.integers(photo.shape[1])
            return photo[y, x].astype(np.float32)
        return rng.uniform(0, 255, 3).astype(np.float32)

    def _texture(self, rng, background):
        """Flat colour with noise, stripes or checks, a smooth gradient, or a photo crop;
        returns the texture and which of ``APPEARANCES`` it is."""
        kind = rng.integers(4)
        if kind == 0:
            coarse = rng.normal(0, rng.uniform(0, 20), (4, 4)).astype(np.float32)
            blotches = cv2.resize(coarse, (_TEX, _TEX))
            grain = rng.normal(0, rng.uniform(2, 10), (_TEX, _TEX)).astype(np.float32)
            texture = self._colour(rng) + (blotches + grain)[:, :, None]
        elif kind == 1:
            first, second = self._colour(rng), self._colour(rng)
            if np.linalg.norm(first - second) < 60:
                second = 255 - first
            a, period = rng.uniform(0, np.pi), rng.uniform(6, 24)
            xx, yy = self._grid
            u = np.floor((xx * np.cos(a) + yy * np.sin(a)) / period)
            if rng.random() < 0.5:  # checks rather than stripes
                u += np.floor((yy * np.cos(a) - xx * np.sin(a)) / period)
            texture = np.where((u % 2 == 0)[:, :, None], first, second)
        elif kind == 2:
            cells = int(rng.integers(2, 4))
            corners = np.stack([self._colour(rng) for _ in range(cells * cells)])
            corners = corners.reshape(cells, cells, 3)
            texture = cv2.resize(corners, (_TEX, _TEX), interpolation=cv2.INTER_CUBIC)
        else:
            texture = self._photo_crop(rng, background, _TEX, (0.15, 0.5)).astype(np.float32)
        # Keep the mean colour away from the background's, so shapes stay segmentable.
        diff = texture.mean((0, 1)) - background.mean
        dist = np.linalg.norm(diff)
        if dist < 40:
            direction = diff if dist > 1 else 128 - background.mean
            texture = texture + direction / max(np.linalg.norm(direction), 1e-6) * (40 - dist)
        return np.clip(texture, 0, 255).astype(np.uint8), APPEARANCES[kind]

    def _photo_crop(self, rng, background, side, fraction):
        """A square crop of a random photo resized to ``side``, away from the background's crop.

        ``fraction`` is the crop's side as a range of fractions of the photo's shorter side.
        """
        for _ in range(8):
            index = int(rng.integers(len(self.photos)))
            photo = self.photos[index]
            h, w = photo.shape[:2]
            crop = int(rng.uniform(*fraction) * min(h, w))
            x0, y0 = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
            bx0, by0, bx1, by1 = background.window
            overlap = (max(0, min(x0 + crop, bx1) - max(x0, bx0))
                       * max(0, min(y0 + crop, by1) - max(y0, by0)))
            if index != background.photo or overlap < 0.25 * crop * crop:
                break
        patch = photo[y0 : y0 + crop, x0 : x0 + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        shrink = cv2.INTER_AREA if crop > side else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(patch), (side, side), interpolation=shrink)

    # -- rendering --------------------------------------------------------------------------

    def _render(self, background, layers, num_targets):
        """Frames, masks and visibility; each pixel remembers the last target painted on it."""
        size, num_frames = self.size, len(background.matrices)
        frames = np.empty((num_frames, size, size, 3), np.uint8)
        owner = np.full((num_frames, size, size), -1, np.int8)
        whole = np.zeros((num_frames, num_targets))
        outlines = [layer.polygons() for layer in layers]
        photo = self.photos[background.photo]
        for t in range(num_frames):
            cv2.warpAffine(photo, background.matrices[t], (size, size), dst=frames[t],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            cv2.LUT(frames[t], background.lut, dst=frames[t])
            for layer, outline in zip(layers, outlines):
                area = self._draw(layer, t, outline[t], frames[t], owner[t])
                if layer.target >= 0:
                    whole[t, layer.target] = area
        masks = owner[:, None] == np.arange(num_targets, dtype=np.int8)[None, :, None, None]
        visibility = (masks.sum((2, 3)) / whole).astype(np.float32)
        return frames, masks, visibility

    def _draw(self, layer, t, points, frame, owner):
        """Paint one layer on one frame; returns its whole-shape pixel count for targets.

        A target's shape is rasterised in full, even off-frame, so that visibility can be
        measured against it; other layers are rasterised inside the frame only.
        """
        size = self.size
        lo = np.floor(points.min(0)).astype(int)
        hi = np.ceil(points.max(0)).astype(int) + 1
        if layer.target < 0:
            lo, hi = np.maximum(lo, 0), np.minimum(hi, size)
            if (hi <= lo).any():
                return 0
        shape = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8)
        cv2.fillPoly(shape, [np.round((points - lo) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        (x0, y0), (x1, y1) = np.maximum(lo, 0), np.minimum(hi, size)
        if x1 > x0 and y1 > y0:
            inside = shape[y0 - lo[1] : y1 - lo[1], x0 - lo[0] : x1 - lo[0]].view(bool)
            linear = layer.affine[t, :, :2] / layer.tex_scale
            shift = layer.affine[t, :, 2] - linear.sum(1) * (layer.texture.shape[0] / 2) - (x0, y0)
            matrix = np.hstack([linear, shift[:, None]])
            colour = cv2.warpAffine(layer.texture, matrix, (x1 - x0, y1 - y0),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            cv2.LUT(colour, layer.luts[t], dst=colour)
            np.copyto(frame[y0:y1, x0:x1], colour, where=inside[:, :, None])
            owner[y0:y1, x0:x1][inside] = layer.target
        return cv2.countNonZero(shape)

    @staticmethod
    def _acceptable(visibility, occlusion, hidden):
        """Whether target 0's visibility keeps the promise made by ``occlusion``."""
        if occlusion is None:
            return True
        if occlusion is False:
            return bool((visibility >= 0.5).all())
        first, length = hidden
        after = visibility[first + length :]
        return bool(visibility[0] >= 0.9 and (visibility[first : first + length] == 0).all()
                    and visibility[first - 1] > 0 and after[0] > 0 and (after > 0.5).sum() >= 3)


def find_photos(photos=None):
    """Photo files for the generator: from ``photos``, else $SAM_ROS_PHOTOS, else the
    repository's sample photographs (``data/images``)."""
    folder = Path(photos or os.environ.get(PHOTOS_ENV) or SAMPLE_PHOTOS)
    files = sorted(str(p) for p in folder.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {folder}: "
                                f"pass --photos DIR or set {PHOTOS_ENV}")
    return files
