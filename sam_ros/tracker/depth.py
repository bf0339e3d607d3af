"""Where a tracked object is in 3D: its mask's pixels read in an aligned depth image.

NumPy and OpenCV only (no torch, no rclpy), for the node's frame worker. Conventions are
ROS's (REP 103, REP 118): the depth image is registered to the colour camera pixel for pixel,
``uint16`` millimetres (16UC1) or ``float32`` metres (32FC1), and holds z (the distance along
the optical axis), not the length of the ray. Points are in the colour camera's optical
frame: x right, y down, z forward, metres.

What is read. The mask is eroded first: its outline is where depth is least trustworthy
(SAM 2 decodes masks at 256 x 256 and upsamples them, so the outline is uncertain by about
one such cell, ``ceil(long side / 256)`` px: 3 px at 640 x 480, 5 px at 1280 x 720; registered
depth is misaligned by a pixel or two, and depth cameras give mixed "flying" pixels along
depth edges). A mask too thin for that keeps a smaller erosion: the radius halves until at
least a quarter of the mask (and ``min_points`` pixels, where it has them) remains, so small
objects never vanish. The image border is not an outline and is not eroded. Of the eroded
mask, pixels whose depth is zero, NaN, infinite or outside ``[min_depth, max_depth]`` are
ignored. Then a depth band drops outliers that survived (speckle, background seen through a
loose outline): Tukey's outer fences on z, 3 interquartile ranges beyond the quartiles (at
least 1 % of the median z), which keep a skewed but real surface (a sphere's rim, a box's
side seen edge-on).

What the figures mean. A depth camera sees an object's near side only, so they describe the
visible surface. Its points are the eroded mask's pixels with valid depth inside the band;
for x and y, pixels without valid depth (holes, NaN, outliers) are put on the plane fitted
to those points (1/z affine in the ray's x/z and y/z, exact for a plane), so that holes
neither shrink nor move the object sideways.
- ``centre``: per axis, the median of the points (x and y holes filled): robust to holes
  and outliers; for a solid it lies on the near side (for a sphere of radius R about 0.7 R
  in front of its centre).
- ``size``: in x and y the spread between the 0.1st and 99.9th percentiles, widened by what
  erosion took off each side of the mask (radius x z / f; not where the mask meets the
  image border), so that it measures the mask's outline; in z the spread between the 0.5th
  and 99.5th percentiles (speckle weighs more there). An axis-aligned box in the camera
  frame (orientation identity) whose z is the depth of the visible surface only. On the
  test scenes: a box's sides within 4 %, a sphere's 5 to 7 % under its diameter (its rim is
  seen edge-on), a tilted plate's x and y within 2 % and its depth span 5 % under (erosion
  trims its near and far ends).
- ``depth_share``: of the pixels read (the eroded mask), the share with valid depth.
When fewer than ``min_points`` pixels have valid depth the object gets no centre or size
(``available`` is False) rather than a wrong number.

Everything is read on a regular grid of every n-th row and column of the eroded mask, n
chosen so that at most about ``max_samples`` pixels are read (all of a small mask; the
median of 4096 points moves by about 2 % of their spread): that bounds the cost of a large
object. ``depth_share`` and ``valid_pixels`` are counted on that grid too. Percentiles are
nearest-rank.
"""

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from sam_ros.masks import mask_stats

# Coefficients each supported CameraInfo distortion model has (OpenCV's order and meaning).
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8}
_NO_DISTORTION = ("", "none")
_MM = 0.001  # metres per unit of a uint16 depth image
_SIDE_PERCENTILES = (0.1, 50.0, 99.9)  # of x and y, where depth outliers weigh little
_DEPTH_PERCENTILES = (0.5, 50.0, 99.5)  # of z
_FENCE_IQRS = 3.0
_BAND_FLOOR = 0.01  # of the median z
_KEEP_FRACTION = 0.25  # of the mask, at least, that erosion keeps


class DepthError(ValueError):
    """Input the 3D step cannot use. ``reason`` is a short key for a diagnostics counter:
    ``depth_size``, ``camera_size``, ``depth_encoding``, ``intrinsics`` or ``distortion``."""

    def __init__(self, reason, message):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class CameraModel:
    """A colour camera's intrinsics: pinhole without skew, and OpenCV's lens distortion
    coefficients (``()`` = none). Build it with ``from_camera_info`` or ``from_matrix``, which
    check it; the node should keep one while its CameraInfo does not change (equal models
    share their per-pixel rays, computed once)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple = ()

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise DepthError("intrinsics", f"image size {self.width} x {self.height} must be "
                                           f"positive")
        numbers = (self.fx, self.fy, self.cx, self.cy) + tuple(self.distortion)
        if not all(math.isfinite(n) for n in numbers):
            raise DepthError("intrinsics", f"non-finite intrinsics or distortion {numbers}")
        if self.fx <= 0 or self.fy <= 0:
            raise DepthError("intrinsics", f"focal lengths fx={self.fx}, fy={self.fy} must be "
                                           f"positive (is the camera calibrated?)")

    @classmethod
    def from_camera_info(cls, info, rectified=False):
        """From a ``sensor_msgs/CameraInfo`` (anything with its fields ``k``, ``d``, ``p``,
        ``distortion_model``, ``width``, ``height``). ``rectified``: the colour image is the
        rectified one (``image_rect*``), whose camera is P's left 3 x 3 without distortion."""
        if rectified:
            p = np.asarray(info.p, np.float64)
            if p.size != 12:
                raise DepthError("intrinsics", f"P has {p.size} numbers, not 12")
            return cls.from_matrix(p.reshape(3, 4)[:, :3], info.width, info.height)
        return cls.from_matrix(info.k, info.width, info.height, info.distortion_model, info.d)

    @classmethod
    def from_matrix(cls, k, width, height, distortion_model="", d=()):
        """From K (3 x 3 or its 9 numbers, row-major), the image size, and a CameraInfo
        distortion model with its coefficients: ``plumb_bob`` (5), ``rational_polynomial``
        (8), or none (``""``/``"none"`` with no or only zero coefficients)."""
        k = np.asarray(k, np.float64)
        if k.size != 9:
            raise DepthError("intrinsics", f"K has {k.size} numbers, not 9")
        k = k.reshape(3, 3)
        if not np.array_equal(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0.0:
            raise DepthError("intrinsics", f"K {k.ravel().tolist()} is not a pinhole camera "
                                           f"matrix (all zeros: the camera is not calibrated)")
        if k[0, 1] != 0.0:
            raise DepthError("intrinsics", f"K has skew {k[0, 1]}, which is not supported")
        return cls(int(width), int(height), float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
                   float(k[1, 2]), _distortion(distortion_model, d))


def _distortion(model, d):
    """The coefficients to keep for a CameraInfo distortion model: () when they are all zero."""
    d = tuple(float(c) for c in np.asarray(d, np.float64).ravel())
    if model in _NO_DISTORTION:
        if any(d):
            raise DepthError("distortion", f"coefficients {d} given without a distortion model")
        return ()
    if model not in DISTORTION_MODELS:
        raise DepthError("distortion", f"distortion model {model!r} is not supported (only "
                                       f"{', '.join(DISTORTION_MODELS)} or none): give the "
                                       f"rectified image and its camera_info instead")
    if len(d) != DISTORTION_MODELS[model]:
        raise DepthError("distortion", f"{model} needs {DISTORTION_MODELS[model]} "
                                       f"coefficients, got {len(d)}")
    return d if any(d) else ()


@functools.lru_cache(maxsize=4)
def _rays(camera):
    """x/z and y/z of the pixels' rays, float32: without distortion x/z of each column and
    y/z of each row (``per_pixel`` False), with it two flat arrays of every pixel in raster
    order, where OpenCV inverts the lens model, iterated to convergence (about a second at
    1280 x 720, once per camera model)."""
    columns = np.arange(camera.width, dtype=np.float64)
    rows = np.arange(camera.height, dtype=np.float64)
    if not camera.distortion:
        return _Rays(((columns - camera.cx) / camera.fx).astype(np.float32),
                     ((rows - camera.cy) / camera.fy).astype(np.float32), False)
    u, v = np.meshgrid(columns, rows)
    k = np.array([[camera.fx, 0, camera.cx], [0, camera.fy, camera.cy], [0, 0, 1]])
    pixels = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    until = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
    rays = cv2.undistortPoints(pixels, k, np.array(camera.distortion), None, None, None,
                               until).reshape(-1, 2)
    return _Rays(np.ascontiguousarray(rays[:, 0], np.float32),
                 np.ascontiguousarray(rays[:, 1], np.float32), True)


class _Rays(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    per_pixel: bool


@dataclass(frozen=True)
class DepthOptions:
    """How depth is read; see the module's docstring."""

    min_depth: float = 0.1  # m: nearer readings are ignored
    max_depth: float = 10.0  # m: farther readings are ignored
    min_points: int = 30  # fewer pixels with valid depth: no centre or size
    erosion_px: int | None = None  # None: ceil(long side / 256) px
    max_samples: int = 4096  # pixels read per object, about, at most

    def __post_init__(self):
        if not 0 < self.min_depth < self.max_depth < math.inf:
            raise ValueError(f"need 0 < min_depth < max_depth < inf, got {self.min_depth}, "
                             f"{self.max_depth}")
        if self.min_points < 1 or self.max_samples < self.min_points:
            raise ValueError(f"need 1 <= min_points <= max_samples, got {self.min_points}, "
                             f"{self.max_samples}")
        if self.erosion_px is not None and self.erosion_px < 0:
            raise ValueError(f"erosion_px must be >= 0 or None, got {self.erosion_px}")


@dataclass(frozen=True)
class ObjectDepth:
    """One object on one frame; see the module's docstring for what the figures mean."""

    centre: np.ndarray | None  # (3,) m, optical frame; None: not available
    size: np.ndarray | None  # (3,) m
    depth_share: float  # of the pixels read (the eroded mask), the share with valid depth
    valid_pixels: int  # pixels of the eroded mask with valid depth (from the grid)
    erosion_px: int  # the erosion radius this mask got
    cloud: np.ndarray  # M x 3 float32: points on the cloud_step grid, outliers dropped

    @property
    def available(self):
        return self.centre is not None


def measure_objects(depth, camera, masks, boxes=None, options=DepthOptions(), cloud_step=0):
    """An ``ObjectDepth`` per mask.

    ``depth``: H x W ``uint16`` (mm) or ``float32`` (m) registered to the colour image;
    ``camera``: the colour camera's ``CameraModel``; ``masks``: bool H x W per object, at the
    colour image's size; ``boxes``: each mask's ``[x_min, y_min, x_max, y_max]`` (inclusive,
    as ``mask_stats`` and ObjectTrack give them) to work inside, or None to find them;
    ``cloud_step``: > 0 also collects points on a grid of that many pixels for a point
    cloud (see ``point_cloud``). Raises ``DepthError`` for input it cannot use.
    """
    depth = _checked_depth(depth, camera)
    height, width = depth.shape
    for mask in masks:
        if np.shape(mask) != depth.shape:
            raise DepthError("camera_size", f"mask of {np.shape(mask)} but camera_info of "
                                            f"{width} x {height}")
    if boxes is not None and len(boxes) != len(masks):
        raise ValueError(f"{len(boxes)} boxes for {len(masks)} masks")
    radius = options.erosion_px
    if radius is None:
        radius = math.ceil(max(height, width) / 256)
    rays = _rays(camera)
    results = []
    for i, mask in enumerate(masks):
        mask = np.asarray(mask)
        if mask.dtype != bool:
            mask = mask != 0
        box = mask_stats(mask)[1] if boxes is None else [int(b) for b in boxes[i]]
        results.append(_measure(depth, camera, rays, mask, box, radius, options,
                                cloud_step))
    return results


def point_cloud(objects, ids):
    """The objects' clouds (``measure_objects(..., cloud_step=...)``) as one N x 3 float32
    array of points and the N uint32 ids (``ids[i]`` for ``objects[i]``'s points)."""
    clouds = [obj.cloud for obj in objects]
    points = np.concatenate(clouds) if clouds else np.zeros((0, 3), np.float32)
    owners = np.repeat(np.asarray(ids, np.uint32), [len(c) for c in clouds])
    return points, owners


def _checked_depth(depth, camera):
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.dtype not in (np.uint16, np.float32) or depth.ndim != 2:
        raise DepthError("depth_encoding", f"depth of dtype {depth.dtype} and shape "
                                           f"{depth.shape}: need H x W uint16 (16UC1, mm) or "
                                           f"float32 (32FC1, m)")
    if depth.shape != (camera.height, camera.width):
        raise DepthError("depth_size", f"depth image of {depth.shape[1]} x {depth.shape[0]} "
                                       f"but colour camera of {camera.width} x {camera.height}:"
                                       f" depth must be registered to the colour image")
    return np.ascontiguousarray(depth)


def _measure(depth, camera, rays, mask, box, radius, options, cloud_step):
    height, width = depth.shape
    x_min, y_min, x_max, y_max = box
    # The box grown by the radius, so that erosion meets the mask's outline inside it.
    top, left = max(y_min - radius, 0), max(x_min - radius, 0)
    crop = (slice(top, min(y_max + radius + 1, height)),
            slice(left, min(x_max + radius + 1, width)))
    inside = mask[crop].view(np.uint8)
    area = cv2.countNonZero(inside)
    empty = np.zeros((0, 3), np.float32)
    if area == 0:
        return ObjectDepth(None, None, 0.0, 0, 0, empty)
    read, read_count, radius = _eroded(inside, area, radius, options.min_points)
    # A regular grid of at most about max_samples pixels of the eroded mask (all of a small
    # one), on which everything is counted and measured.
    step = math.ceil(math.sqrt(read_count / options.max_samples))
    slope_x, slope_y, z = _grid_points(depth, rays, read, top, left, step)
    measured = (z >= options.min_depth) & (z <= options.max_depth)
    if step > 1 and np.count_nonzero(measured) < options.min_points:  # a thin mask
        step = 1
        slope_x, slope_y, z = _grid_points(depth, rays, read, top, left, step)
        measured = (z >= options.min_depth) & (z <= options.max_depth)
    share = np.count_nonzero(measured) / z.size
    valid = round(share * read_count)
    if valid < options.min_points:
        return ObjectDepth(None, None, share, valid, radius, empty)
    low, high = _depth_band(z[measured])
    band = (max(low, options.min_depth), min(high, options.max_depth))
    inliers = (z >= band[0]) & (z <= band[1])
    z_low, z_mid, z_high = _percentiles(z[inliers], _DEPTH_PERCENTILES)
    # x and y span the whole eroded mask: where depth is missing or an outlier, at the depth
    # of the plane fitted to the points, so that holes neither shrink nor move the object.
    filled = np.where(inliers, z, _plane_depth(slope_x, slope_y, z, inliers, band))
    x_low, x_mid, x_high = _percentiles(slope_x * filled, _SIDE_PERCENTILES)
    y_low, y_mid, y_high = _percentiles(slope_y * filled, _SIDE_PERCENTILES)
    centre = np.array([x_mid, y_mid, z_mid], np.float64)
    # What erosion took off the mask's sides (none where the mask meets the image border).
    sides_x = (x_min > 0) + (x_max < width - 1)
    sides_y = (y_min > 0) + (y_max < height - 1)
    size = np.array([x_high - x_low + radius * z_mid * sides_x / camera.fx,
                     y_high - y_low + radius * z_mid * sides_y / camera.fy,
                     z_high - z_low], np.float64)
    cloud = empty
    if cloud_step > 0:
        slope_x, slope_y, z = _grid_points(depth, rays, read, top, left, cloud_step)
        keep = (z >= band[0]) & (z <= band[1])
        cloud = np.stack([slope_x * z, slope_y * z, z], axis=1)[keep]
    return ObjectDepth(centre, size, share, valid, radius, cloud)


def _grid_points(depth, rays, mask, top, left, step):
    """x/z, y/z and z in metres (float32 arrays; z as the image has it, zero, NaN or out of
    range included) of the pixels of ``mask`` (a crop whose corner is at ``top``, ``left``)
    on the image's grid of every ``step``-th row and column."""
    first_row, first_col = -top % step, -left % step
    rows, cols = np.nonzero(mask[first_row::step, first_col::step])
    rows = rows * step + (first_row + top)
    cols = cols * step + (first_col + left)
    pixels = rows * depth.shape[1] + cols
    z = depth.ravel()[pixels].astype(np.float32)
    if depth.dtype == np.uint16:
        z *= np.float32(_MM)
    if rays.per_pixel:
        return rays.x[pixels], rays.y[pixels], z
    return rays.x[cols], rays.y[rows], z


def _plane_depth(slope_x, slope_y, z, inliers, band):
    """z on every ray (x/z, y/z) of the plane fitted to the inliers' points by least squares
    (1/z affine in x/z and y/z, which is exact for a plane), kept inside the depth
    ``band``; 0 where all points are inliers (nothing to fill)."""
    if inliers.all():
        return 0.0
    sx, sy, w = slope_x[inliers], slope_y[inliers], 1.0 / z[inliers]
    n = sx.size
    mean_x, mean_y, mean_w = sx.sum() / n, sy.sum() / n, w.sum() / n
    sx, sy = sx - mean_x, sy - mean_y
    xx, yy, xy, xw, yw = sx @ sx, sy @ sy, sx @ sy, sx @ w, sy @ w
    det = xx * yy - xy * xy
    if det > 1e-9 * xx * yy:
        tilt_x, tilt_y = (yy * xw - xy * yw) / det, (xx * yw - xy * xw) / det
    elif xx >= yy:  # the points lie on a line: its own slope only
        tilt_x, tilt_y = (xw / xx if xx > 0 else 0.0), 0.0
    else:
        tilt_x, tilt_y = 0.0, yw / yy
    inverse = mean_w + tilt_x * (slope_x - mean_x) + tilt_y * (slope_y - mean_y)
    # 1 / inverse, or the band's far end where the plane is edge-on (inverse <= 0)
    depth = np.divide(1.0, inverse, out=np.full_like(inverse, band[1]), where=inverse > 0)
    return np.clip(depth, *band, out=depth)


def _percentiles(values, percents):
    """``values`` at ``percents`` (nearest rank), from one partial sort."""
    ranks = [round(p / 100 * (values.size - 1)) for p in percents]
    return np.partition(values, ranks)[ranks]


def _depth_band(z):
    """The depths kept: Tukey's outer fences, 3 interquartile ranges beyond the quartiles (at
    least 1 % of the median z), which hold a skewed but real surface and drop what lies far
    apart from the rest."""
    q1, median, q3 = _percentiles(z, (25.0, 50.0, 75.0))
    reach = max(_FENCE_IQRS * (q3 - q1), _BAND_FLOOR * median)
    return q1 - reach, q3 + reach


def _eroded(mask, area, radius, min_points):
    """``mask`` (uint8 0/1) eroded by a square of ``radius``, or by a smaller one where it
    would leave less than a quarter of the mask or fewer than ``min_points`` pixels of it:
    ``(eroded mask, its pixel count, radius used)``."""
    keep = max(_KEEP_FRACTION * area, min(min_points, area))
    while radius > 0:
        eroded = cv2.erode(mask, _square(radius))
        count = cv2.countNonZero(eroded)
        if count >= keep:
            return eroded, count, radius
        radius //= 2
    return mask, area, 0


@functools.lru_cache(maxsize=16)
def _square(radius):
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
