"""The node's standard messages: vision_msgs detections in 2D and 3D, the LabelInfo of the
label image, and the tracked objects' points as a PointCloud2. Built from a frame's
ObjectTrackArray, so that every output of a frame says the same thing with its header.

Each Detection2D / Detection3D is one track: ``id`` is the track id as a string, and its one
hypothesis carries the track's label as ``class_id`` (empty: none) and, as ``score``, the
object's presence as a probability: the sigmoid of the model's object-score logit
(``ObjectTrack.score``), the probability SAM 2's object-score head is trained to give (a
binary cross-entropy on "the object is in the frame"). A track is visible when it exceeds
0.5 (logit 0), so ~/detections holds scores above 0.5; ``LabelInfo.threshold`` says 0.5.
"""

import math

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from vision_msgs.msg import (
    BoundingBox2D,
    BoundingBox3D,
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from sam_ros.tracker.depth import point_cloud

from .conversions import _to_array

PRESENCE_THRESHOLD = 0.5  # sigmoid(0): the presence above which a track is visible
CLOUD_FIELDS = [PointField(name=name, offset=4 * i, datatype=datatype, count=1)
                for i, (name, datatype) in enumerate((("x", PointField.FLOAT32),
                                                      ("y", PointField.FLOAT32),
                                                      ("z", PointField.FLOAT32),
                                                      ("id", PointField.UINT32)))]
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u4")])


def presence(logit):
    """The object-score logit as a probability (the logistic sigmoid, without overflow)."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    e = math.exp(logit)
    return e / (1.0 + e)


def _hypothesis(track):
    result = ObjectHypothesisWithPose()
    result.hypothesis.class_id = track.label
    result.hypothesis.score = presence(float(track.score))
    return result


def detections_2d(tracks):
    """A Detection2DArray of the visible tracks of an ObjectTrackArray: the box spans the
    mask's pixels (centre and size in pixels, so an inclusive box [x0, y0, x1, y1] is
    centred at ((x0 + x1) / 2, (y0 + y1) / 2) and is x1 - x0 + 1 wide)."""
    out = Detection2DArray(header=tracks.header)
    for track in tracks.objects:
        if not track.visible:
            continue
        x0, y0, x1, y1 = (float(v) for v in track.bbox)
        box = BoundingBox2D(size_x=x1 - x0 + 1, size_y=y1 - y0 + 1)
        box.center.position.x, box.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
        out.detections.append(Detection2D(header=tracks.header, results=[_hypothesis(track)],
                                          bbox=box, id=str(track.id)))
    return out


def detections_3d(tracks):
    """A Detection3DArray of the tracks with 3D on this frame: the box centred on the
    object's 3D centre with its extent (axis-aligned in the optical frame); the hypothesis's
    pose is that centre too."""
    out = Detection3DArray(header=tracks.header)
    for track in tracks.objects:
        if not track.has_3d:
            continue
        result = _hypothesis(track)
        result.pose.pose.position = track.position
        result.pose.pose.orientation.w = 1.0
        box = BoundingBox3D()
        box.center.position = track.position
        box.center.orientation.w = 1.0
        box.size = track.size
        out.detections.append(Detection3D(header=tracks.header, results=[result], bbox=box,
                                          id=str(track.id)))
    return out


def label_info(header, labels):
    """The LabelInfo of the label image (~/masks): each tracked id (``labels``: id -> class
    label, "" for none) as a VisionClass whose ``class_id`` is the pixel value and
    ``class_name`` the label; 0 (background) is not listed."""
    return LabelInfo(header=header, threshold=PRESENCE_THRESHOLD, class_map=[
        VisionClass(class_id=int(obj_id), class_name=label)
        for obj_id, label in sorted(labels.items())])


def cloud_message(header, measured):
    """The points of the measured objects (``{id: ObjectDepth}`` with clouds) as an
    unorganised PointCloud2: x, y, z (float32, metres) and id (uint32) per point."""
    ids = sorted(measured)
    points, owners = point_cloud([measured[i] for i in ids], ids)
    data = np.empty(len(points), CLOUD_DTYPE)
    data["x"], data["y"], data["z"] = points[:, 0], points[:, 1], points[:, 2]
    data["id"] = owners
    return PointCloud2(header=header, height=1, width=len(points), fields=CLOUD_FIELDS,
                       is_bigendian=False, point_step=CLOUD_DTYPE.itemsize,
                       row_step=CLOUD_DTYPE.itemsize * len(points), data=_to_array(data),
                       is_dense=True)
