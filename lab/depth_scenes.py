"""Exact depth images of simple 3D scenes, to test the 3D step (``sam_ros.tracker.depth``)
against a known truth.

A scene is a list of shapes (planes, spheres, oriented boxes) in a camera's optical frame
(x right, y down, z forward, metres). ``render`` casts one ray per pixel centre through the
camera's lens and keeps the nearest hit: per pixel its z (what a registered depth image
holds), the index of the shape hit (its ground-truth mask) and the 3D point. The lens is
inverted here by Newton's method on the distortion formulas of ROS's CameraInfo
(``distort``), independently of the OpenCV call the 3D step uses.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Plane:
    point: tuple
    normal: tuple

    def hit(self, rays):
        n = np.asarray(self.normal, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.dot(self.point, n) / (rays @ n)
        return np.where(t > 0, t, np.inf)


@dataclass(frozen=True)
class Sphere:
    centre: tuple
    radius: float

    def hit(self, rays):
        c = np.asarray(self.centre, np.float64)
        a = np.einsum("...i,...i", rays, rays)
        b = rays @ c
        disc = b * b - a * (c @ c - self.radius ** 2)
        with np.errstate(invalid="ignore"):
            t = (b - np.sqrt(disc)) / a
        return np.where((disc >= 0) & (t > 0), t, np.inf)


@dataclass(frozen=True)
class Box:
    centre: tuple
    size: tuple  # full edge lengths along the box's own axes
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # box axes in the camera

    def hit(self, rays):
        rotation = np.asarray(self.rotation, np.float64)
        origin = -rotation.T @ np.asarray(self.centre, np.float64)  # the camera, in box axes
        d = rays @ rotation
        half = np.asarray(self.size, np.float64) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-half - origin) / d, (half - origin) / d
        near = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf).max(axis=-1)
        far = np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(axis=-1)
        return np.where((far >= near) & (near > 0), near, np.inf)


def rotation_about_y(degrees):
    """Turns +z towards +x by ``degrees`` (a yaw, seen from the camera)."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@dataclass
class Render:
    depth: np.ndarray  # float32 H x W, metres (z); 0 where no shape is hit
    owner: np.ndarray  # int32 H x W: index of the shape seen, -1 for none
    points: np.ndarray  # float64 H x W x 3: the point seen, camera frame

    def mask(self, index):
        return self.owner == index


def distort(x, y, coefficients):
    """Where the lens puts the normalised point (x, y): CameraInfo's ``plumb_bob`` (k1 k2 p1
    p2 k3) or ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6) model; () = none."""
    k = np.zeros(8)
    k[:len(coefficients)] = coefficients
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def undistort(xd, yd, coefficients, iterations=30):
    """The normalised points that ``distort`` moves to (xd, yd): Newton's method with a
    numerical Jacobian, from the distorted point."""
    x, y = xd.copy(), yd.copy()
    step = 1e-7
    for _ in range(iterations):
        fx, fy = distort(x, y, coefficients)
        ex, ey = fx - xd, fy - yd
        ax, ay = distort(x + step, y, coefficients)
        bx, by = distort(x, y + step, coefficients)
        j11, j21 = (ax - fx) / step, (ay - fy) / step
        j12, j22 = (bx - fx) / step, (by - fy) / step
        det = j11 * j22 - j12 * j21
        x = x - (j22 * ex - j12 * ey) / det
        y = y - (j11 * ey - j21 * ex) / det
    return x, y


def pixel_rays(camera):
    """H x W x 3 ray directions (z = 1) through each pixel centre of a ``CameraModel``."""
    u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64),
                       np.arange(camera.height, dtype=np.float64))
    x, y = (u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy
    if camera.distortion:
        x, y = undistort(x, y, camera.distortion)
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def render(camera, shapes):
    """The scene ``shapes`` seen by ``camera`` (a ``sam_ros.tracker.depth.CameraModel``)."""
    rays = pixel_rays(camera)
    hits = np.stack([shape.hit(rays) for shape in shapes])
    owner = np.argmin(hits, axis=0)
    t = np.take_along_axis(hits, owner[None], axis=0)[0]
    seen = np.isfinite(t)
    points = rays * np.where(seen, t, 0)[..., None]
    return Render(points[..., 2].astype(np.float32), np.where(seen, owner, -1).astype(np.int32),
                  points)
