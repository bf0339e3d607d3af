"""What the node publishes: tracks, vision_msgs detections (2D, and 3D with depth), the
label image and its LabelInfo, the overlay, the tracked points, and its diagnostics.

Every output of a frame carries the source image's header unchanged (stamp and frame_id), so
that it can be fused with anything else about that frame. The label image, the overlay and
the points are built only while someone subscribes to them. ~/label_info is transient-local
(a late subscriber gets the latest) and is published on a frame whose tracks or labels
differ from the last one published.
"""

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from sam_ros.drawing import overlay_image
from sam_ros.masks import mask_stats
from sam_ros.msg import ObjectTrack, ObjectTrackArray
from sam_ros.tracker import label_image

from . import vision
from .conversions import array_to_image


def track_message(header, results, labels):
    """The ObjectTrackArray of one frame's ``{id: TrackResult}``, ids in order, with their
    ``labels`` (id -> class name); box, centroid and area are of each object's own mask."""
    out = ObjectTrackArray(header=header)
    for obj_id in sorted(results):
        r = results[obj_id]
        area, bbox, centroid = mask_stats(r.mask) if r.visible else (0, [0, 0, 0, 0], (0.0, 0.0))
        out.objects.append(ObjectTrack(
            id=int(obj_id), label=labels.get(obj_id, ""), visible=bool(r.visible and area > 0),
            score=float(r.score),
            iou=float(r.iou), bbox=bbox, centroid=[float(centroid[0]), float(centroid[1])],
            area=area))
    return out


class Outputs:
    """The node's publishers (lifecycle publishers: silent unless the node is active)."""

    def __init__(self, node):
        self._node = node
        self.tracks = node.create_lifecycle_publisher(ObjectTrackArray, "~/tracks", 10)
        self.masks = node.create_lifecycle_publisher(Image, "~/masks", 10)
        self.overlay = node.create_lifecycle_publisher(Image, "~/overlay", 10)
        self.diagnostics = node.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self.detections = node.create_lifecycle_publisher(Detection2DArray, "~/detections", 10)
        self.detections_3d = node.create_lifecycle_publisher(Detection3DArray,
                                                             "~/detections_3d", 10)
        self.points = node.create_lifecycle_publisher(PointCloud2, "~/points", 10)
        self.label_info = node.create_lifecycle_publisher(LabelInfo, "~/label_info", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self._label_map = None  # the {id: label} last published on ~/label_info

    def want_points(self):
        return self.points.get_subscription_count() > 0

    def publish_frame(self, header, rgb, results, tracks, masks=True, overlay=True,
                      measured=None):
        """Publish one frame's results (``tracks``: their ObjectTrackArray): tracks and
        detections always, LabelInfo when it changed; the 3D detections and the points
        where the frame was ``measured`` (``{id: ObjectDepth}``); the label image
        (``masks``) and the overlay (``overlay``) where wanted and subscribed to."""
        self.tracks.publish(tracks)
        self.detections.publish(vision.detections_2d(tracks))
        label_map = {o.id: o.label for o in tracks.objects}
        if label_map != self._label_map:
            self.label_info.publish(vision.label_info(header, label_map))
            self._label_map = label_map
        if measured is not None:
            self.detections_3d.publish(vision.detections_3d(tracks))
            if self.want_points():
                self.points.publish(vision.cloud_message(header, measured))
        want_masks = masks and self.masks.get_subscription_count() > 0
        want_overlay = overlay and self.overlay.get_subscription_count() > 0
        if not (want_masks or want_overlay):
            return
        labels = label_image(rgb.shape[:2], results)
        if want_masks:
            self.masks.publish(array_to_image(labels, "mono16", header))
        if want_overlay:
            self.overlay.publish(array_to_image(overlay_image(rgb, labels, tracks.objects),
                                                "rgb8", header))

    def publish_diagnostics(self, name, stats, objects, device, dtype, extra=None):
        """One DiagnosticStatus: WARN once a frame has failed, OK otherwise; ``extra``:
        more counters (depth, detector) to list."""
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if stats["errors"] == 0 else DiagnosticStatus.WARN,
            name=f"{name}: SAM 2 tracker",
            message=f"{len(objects)} objects, {stats['processed']} frames processed",
            hardware_id=str(device))
        values = dict(frames_in=stats["frames_in"], processed=stats["processed"],
                      dropped=stats["dropped"], unsupported=stats["unsupported"],
                      errors=stats["errors"], latency_ms=f"{stats['latency_ms']:.1f}",
                      node_ms=f"{stats['node_ms']:.1f}", model_ms=f"{stats['model_ms']:.1f}",
                      overhead_ms=f"{stats['overhead_ms']:.2f}",
                      objects=" ".join(map(str, objects)), num_objects=len(objects),
                      device=device, dtype=dtype)
        values.update(extra or {})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self.diagnostics.publish(msg)
