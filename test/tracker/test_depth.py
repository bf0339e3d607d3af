"""The 3D step (``sam_ros.tracker.depth``) on exactly rendered depth of known scenes
(``lab.depth_scenes``): a box, a sphere and a tilted plate in front of a wall, seen by
a 640 x 480 camera with its ground-truth masks. The truth is the scene itself: the centre of
the box's front face, the sphere's and plate's extents, and for the centre's definition
(the median of the visible surface) the median of the exact ray-cast points."""

import functools
import types

import numpy as np
import pytest

from lab.depth_scenes import Box, Plane, Sphere, distort, render, rotation_about_y
from sam_ros.tracker.depth import (
    CameraModel,
    DepthError,
    DepthOptions,
    measure_objects,
    point_cloud,
)

# fx != fy and an off-centre principal point, so that swapping axes or terms shows
K = [[610.0, 0.0, 318.5], [0.0, 605.0, 241.2], [0.0, 0.0, 1.0]]
CAMERA = CameraModel.from_matrix(K, 640, 480)
CENTRE_TOLERANCE = 0.02  # of the true distance
SIZE_TOLERANCE = 0.10
BOX = Box((0.15, -0.1, 1.6), (0.24, 0.18, 0.3))
SPHERE = Sphere((-0.2, 0.1, 1.8), 0.15)
PLATE_YAW = 40.0
PLATE = Box((0.05, 0.0, 1.5), (0.5, 0.35, 0.005), rotation_about_y(PLATE_YAW))


def wall(z):
    return Plane((0.0, 0.0, z), (0.0, 0.0, 1.0))


def plate_extent():
    a = np.radians(PLATE_YAW)
    w, h, t = PLATE.size
    return np.array([w * np.cos(a) + t * np.sin(a), h, w * np.sin(a) + t * np.cos(a)])


SCENES = {
    # shapes (the object is shapes[1]), the object's true extent (None: an axis not checked)
    "box": ([wall(2.5), BOX], np.array([0.24, 0.18, np.nan])),
    "yawed box": ([wall(2.5), Box(BOX.centre, BOX.size, rotation_about_y(30))],
                  np.array([0.24 * np.cos(np.radians(30)) + 0.3 * np.sin(np.radians(30)),
                            0.18, np.nan])),
    "sphere": ([wall(3.0), SPHERE], np.array([0.3, 0.3, np.nan])),
    "tilted plate": ([wall(1.8), PLATE], plate_extent()),
}


@functools.cache
def render_scene(name):
    shapes, extent = SCENES[name]
    scene = render(CAMERA, shapes)
    return scene, scene.mask(1), extent


def assert_close(measured, scene, mask, extent):
    """Centre within 2 % of the distance of the visible surface's median point (exact),
    size within 10 % of the object's extent on the axes that have one."""
    truth = np.median(scene.points[mask], axis=0)
    distance = np.linalg.norm(truth)
    assert measured.available
    assert np.linalg.norm(measured.centre - truth) <= CENTRE_TOLERANCE * distance, (
        measured.centre, truth)
    checked = ~np.isnan(extent)
    assert np.all(np.abs(measured.size[checked] / extent[checked] - 1) <= SIZE_TOLERANCE), (
        measured.size, extent)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_known_scenes(name):
    scene, mask, extent = render_scene(name)
    (measured,) = measure_objects(scene.depth, CAMERA, [mask])
    assert_close(measured, scene, mask, extent)
    assert measured.depth_share == 1.0 and measured.erosion_px == 3  # ceil(640 / 256)


def test_box_front_face():
    """The box's centre is its front face's centre: the definition, against geometry alone."""
    scene, mask, _ = render_scene("box")
    (measured,) = measure_objects(scene.depth, CAMERA, [mask])
    face = np.array([0.15, -0.1, 1.6 - 0.15])
    assert np.linalg.norm(measured.centre - face) <= CENTRE_TOLERANCE * np.linalg.norm(face)
    assert abs(measured.centre[2] - face[2]) < 0.005


def corrupted(depth, mask, rng, nan=True):
    """Holes (zeros), NaN patches, infinities and 3 % speckle inside the object's box."""
    depth = depth.copy()
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    h, w = y1 - y0, x1 - x0
    for value in (0.0, 0.0, 0.0) + ((np.nan, np.nan, np.inf) if nan else ()):
        top, left = y0 + int(rng.random() * h * 0.7), x0 + int(rng.random() * w * 0.7)
        depth[top:top + h // 5, left:left + w // 5] = value
    speckle = mask & (rng.random(mask.shape) < 0.03)
    depth[speckle] = rng.uniform(0.2, 8.0, int(speckle.sum()))
    return depth


@pytest.mark.parametrize("name", sorted(SCENES))
def test_holes_nan_and_speckle_move_neither_figure(name):
    scene, mask, extent = render_scene(name)
    (clean,) = measure_objects(scene.depth, CAMERA, [mask])
    (measured,) = measure_objects(corrupted(scene.depth, mask, np.random.default_rng(1)),
                                  CAMERA, [mask])
    assert_close(measured, scene, mask, extent)
    assert np.linalg.norm(measured.centre - clean.centre) <= (
        CENTRE_TOLERANCE * np.linalg.norm(clean.centre))
    checked = ~np.isnan(extent)
    assert np.all(np.abs(measured.size[checked] / clean.size[checked] - 1) <= SIZE_TOLERANCE)
    assert 0.6 < measured.depth_share < 0.95


def test_millimetres_and_metres_agree():
    scene, mask, _ = render_scene("sphere")
    metres = corrupted(scene.depth, mask, np.random.default_rng(2), nan=False)
    millimetres = np.round(metres * 1000).astype(np.uint16)
    (a,) = measure_objects(metres, CAMERA, [mask])
    (b,) = measure_objects(millimetres, CAMERA, [mask])
    np.testing.assert_allclose(a.centre, b.centre, atol=0.001)
    np.testing.assert_allclose(a.size, b.size, atol=0.002)
    assert a.depth_share == b.depth_share and a.valid_pixels == b.valid_pixels


def test_erosion_keeps_bleeding_out():
    """A loose mask (2 px too wide) over a tilted plate whose wall is within the plate's
    depth band: the wall's depth bleeds in unless the outline is eroded."""
    scene, mask, extent = render_scene("tilted plate")
    loose = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            loose[np.clip(ys + dy, 0, 479), np.clip(xs + dx, 0, 639)] = True
    (measured,) = measure_objects(scene.depth, CAMERA, [loose])
    assert_close(measured, scene, mask, extent)
    # The scene does need erosion: without it the plate looks deeper than it is.
    (unguarded,) = measure_objects(scene.depth, CAMERA, [loose], options=DepthOptions(
        erosion_px=0))
    assert unguarded.size[2] > (1 + SIZE_TOLERANCE) * extent[2]


def test_small_and_thin_masks_keep_a_smaller_erosion():
    far = render(CAMERA, [wall(3.0), Sphere((0.3, 0.2, 2.5), 0.02)])  # about 9 px across
    pole = render(CAMERA, [wall(3.0), Box((-0.3, 0.0, 2.0), (0.02, 0.6, 0.02))])  # 6 px wide
    for scene in (far, pole):
        mask = scene.mask(1)
        (measured,) = measure_objects(scene.depth, CAMERA, [mask])
        truth = np.median(scene.points[mask], axis=0)
        assert measured.available and 0 < measured.erosion_px < 3
        assert np.linalg.norm(measured.centre - truth) <= CENTRE_TOLERANCE * np.linalg.norm(
            truth)


def test_too_little_depth_is_not_available():
    scene, mask, _ = render_scene("sphere")
    holes = np.where(mask, 0.0, scene.depth).astype(np.float32)
    (no_depth,) = measure_objects(holes, CAMERA, [mask])
    assert not no_depth.available and no_depth.size is None and no_depth.depth_share == 0.0
    few = np.zeros_like(mask)
    few[200:205, 200:205] = True  # 25 px < min_points
    (tiny,) = measure_objects(scene.depth, CAMERA, [few])
    assert not tiny.available and tiny.valid_pixels == 25
    (empty,) = measure_objects(scene.depth, CAMERA, [np.zeros_like(mask)])
    assert not empty.available and empty.valid_pixels == 0
    far = scene.depth.copy()
    far[mask] = 12.0  # beyond max_depth
    (out_of_range,) = measure_objects(far, CAMERA, [mask])
    assert not out_of_range.available


def test_several_objects_and_their_boxes():
    scene = render(CAMERA, [wall(3.0), BOX, SPHERE])
    masks = [scene.mask(1), scene.mask(2)]
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    found = measure_objects(scene.depth, CAMERA, masks)
    given = measure_objects(scene.depth, CAMERA, masks, boxes=boxes)
    for a, b, mask in zip(found, given, masks, strict=True):
        np.testing.assert_array_equal(a.centre, b.centre)
        assert_close(a, scene, mask, np.full(3, np.nan))


def test_point_cloud():
    scene = render(CAMERA, [wall(3.0), BOX, SPHERE])
    masks = [scene.mask(1), scene.mask(2)]
    objects = measure_objects(scene.depth, CAMERA, masks, cloud_step=4)
    points, ids = point_cloud(objects, [7, 9])
    assert points.dtype == np.float32 and points.shape == (len(ids), 3)
    assert ids.dtype == np.uint32 and set(ids.tolist()) == {7, 9}
    sphere = points[ids == 9]
    distance = np.linalg.norm(sphere - np.array(SPHERE.centre), axis=1)
    assert np.abs(distance - SPHERE.radius).max() < 0.005  # on the sphere's surface
    # about one pixel in 16 of what was read
    for obj, n in zip(objects, (np.sum(ids == 7), np.sum(ids == 9)), strict=True):
        assert 0.8 < n * 16 / obj.valid_pixels < 1.25
    assert len(measure_objects(scene.depth, CAMERA, masks)[0].cloud) == 0


LENSES = {"plumb_bob": (-0.28, 0.09, 0.001, -0.0015, -0.01),
          "rational_polynomial": (0.4, -0.1, 0.0008, 0.0012, 0.02, 0.7, -0.05, 0.01)}


@pytest.mark.parametrize("model", sorted(LENSES))
def test_lens_distortion(model):
    """Through a distorting lens, an object in the image's corner: measured right with the
    lens, and more than 2 % off without it. The renderer inverts the lens by its own Newton
    iterations on CameraInfo's formulas."""
    camera = CameraModel.from_matrix(K, 640, 480, model, LENSES[model])
    scene = render(camera, [wall(3.0), Box((-0.75, -0.5, 1.5), (0.2, 0.2, 0.2))])
    mask = scene.mask(1)
    (measured,) = measure_objects(scene.depth, camera, [mask])
    assert_close(measured, scene, mask, np.array([0.2, 0.2, np.nan]))
    (pinhole,) = measure_objects(scene.depth, CAMERA, [mask])
    truth = np.median(scene.points[mask], axis=0)
    assert np.linalg.norm(pinhole.centre - truth) > CENTRE_TOLERANCE * np.linalg.norm(truth)


def test_rays_invert_the_lens():
    """Every pixel's ray, distorted again by the lens formulas, lands on that pixel."""
    from sam_ros.tracker.depth import _rays
    for model, coefficients in LENSES.items():
        camera = CameraModel.from_matrix(K, 640, 480, model, coefficients)
        rays = _rays(camera)
        xd, yd = distort(rays.x.astype(np.float64), rays.y.astype(np.float64), coefficients)
        v, u = np.divmod(np.arange(640 * 480), 640)
        assert np.abs(xd * 610.0 + 318.5 - u).max() < 1e-3
        assert np.abs(yd * 605.0 + 241.2 - v).max() < 1e-3


def camera_info(**fields):
    info = {"k": np.ravel(K).tolist(), "d": [0.0] * 5, "p": [610.0, 0, 318.5, 0, 0, 605.0, 241.2, 0,
                                                         0, 0, 1, 0],
                "distortion_model": "plumb_bob", "width": 640, "height": 480}
    info.update(fields)
    return types.SimpleNamespace(**info)


def test_camera_from_camera_info():
    assert CameraModel.from_camera_info(camera_info()) == CAMERA  # zero coefficients: none
    lens = CameraModel.from_camera_info(camera_info(d=list(LENSES["plumb_bob"])))
    assert lens.distortion == LENSES["plumb_bob"]
    rectified = CameraModel.from_camera_info(camera_info(
        d=list(LENSES["plumb_bob"]), p=[500.0, 0, 320, 0, 0, 500.0, 240, 0, 0, 0, 1, 0]),
        rectified=True)
    assert (rectified.fx, rectified.cy, rectified.distortion) == (500.0, 240.0, ())
    assert CameraModel.from_camera_info(camera_info(distortion_model="", d=[])) == CAMERA


@pytest.mark.parametrize("fields, reason, words", [
    ({"k": [0.0] * 9}, "intrinsics", "not calibrated"),
    ({"k": [0.0, 0, 320, 0, 600, 240, 0, 0, 1]}, "intrinsics", "focal lengths"),
    ({"k": [600.0, 2.0, 320, 0, 600, 240, 0, 0, 1]}, "intrinsics", "skew"),
    ({"k": [600.0, 0, np.nan, 0, 600, 240, 0, 0, 1]}, "intrinsics", "non-finite"),
    ({"width": 0}, "intrinsics", "image size"),
    ({"distortion_model": "equidistant", "d": [0.1, 0, 0, 0]}, "distortion", "'equidistant'"),
    ({"d": [0.1, 0.0, 0.0]}, "distortion", "needs 5"),
    ({"distortion_model": "", "d": [0.1, 0, 0, 0, 0]}, "distortion", "without a distortion"),
])
def test_bad_camera_info(fields, reason, words):
    with pytest.raises(DepthError) as error:
        CameraModel.from_camera_info(camera_info(**fields))
    assert error.value.reason == reason and words in str(error.value)


def test_bad_depth_images():
    scene, mask, _ = render_scene("sphere")
    cases = [
        (np.zeros((720, 1280), np.float32), "depth_size"),
        (np.zeros((640, 480), np.uint16), "depth_size"),
        (scene.depth.astype(np.float64), "depth_encoding"),
        (scene.depth.astype(np.int32), "depth_encoding"),
        (np.zeros((480, 640, 3), np.float32), "depth_encoding"),
    ]
    for depth, reason in cases:
        with pytest.raises(DepthError) as error:
            measure_objects(depth, CAMERA, [mask])
        assert error.value.reason == reason, depth.shape
    with pytest.raises(DepthError) as error:
        measure_objects(scene.depth, CAMERA, [np.zeros((240, 320), bool)])
    assert error.value.reason == "camera_size"
    (one_channel,) = measure_objects(scene.depth[:, :, None], CAMERA, [mask])
    assert one_channel.available


def test_bad_options():
    for bad in ({"min_depth": 0.0}, {"min_depth": 5.0, "max_depth": 1.0}, {"min_points": 0},
                {"erosion_px": -1}, {"max_samples": 10}):
        with pytest.raises(ValueError):
            DepthOptions(**bad)
