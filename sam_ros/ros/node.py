"""The sam_ros lifecycle node: camera in, SAM 2 tracker, tracks / label image / overlay out.

Lifecycle:
  configure   loads the model (parameters checkpoint, variant, device, dtype, image_size);
              a missing, corrupt or wrong checkpoint fails the transition with a clear log
              line and the node stays unconfigured (it can be configured again).
  activate    subscribes to the camera and starts the worker thread and the publishers.
  deactivate  unsubscribes and stops the worker (objects are kept).
  cleanup     frees the model and the tracker.
  shutdown    all of the above.
The publishers live as long as the node (lifecycle publishers: silent unless active), and
the camera subscription is made without QoS event handlers. A transition runs in an executor
thread while the spinning thread builds its wait set, and destroying an entity that has
event handlers there can raise InvalidHandle in the spinning thread and end its spin (rclpy
issues 1284 and 1355); the subscription, destroyed on every deactivate, must have none. Its
QoS (sensor data: best effort, volatile) accepts any publisher's, so no incompatible-QoS
warning is lost; a publisher of the wrong type shows as frames_in 0 in /diagnostics.

Threading: the subscription callback only stores the newest message in a one-slot mailbox
(an unprocessed message it replaces is counted as dropped: nothing queues without bound). A
worker thread converts the image, runs the tracker and publishes. Every tracker call holds
one lock, so a service call is answered between two frames, on the frame it names. The camera
callback and the services have callback groups of their own, and the diagnostics timer never
waits for the lock, so a tracker call that takes seconds (a big frame on a CPU, a prompt
that catches up through the ring) delays no camera callback: frames go on being counted and
the newest waits in the mailbox (spin with a MultiThreadedExecutor, as main() does).

Topics (relative names, remap them): in `image` (sensor_msgs/Image) or `image/compressed`
(sensor_msgs/CompressedImage, parameter input_transport); out `~/tracks`
(sam_ros/ObjectTrackArray), `~/masks` (mono16 label image: pixel = object id, 0 =
background, an overlap to the higher mask logit), `~/overlay` (rgb8), `/diagnostics`. The
outputs carry the source image's header.
Services: `~/segment` (sam_ros/Segment), `~/remove` (sam_ros/RemoveObject), `~/reset`
(std_srvs/Trigger).
"""

import collections
import faulthandler
import signal
import sys
import threading
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble's name for the module
    from rclpy.qos_event import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from sam_ros import ros_image
from sam_ros.drawing import overlay_image
from sam_ros.msg import ObjectTrack, ObjectTrackArray
from sam_ros.srv import RemoveObject, Segment

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None


def stamp_key(stamp):
    """A header stamp as a hashable (sec, nanosec), the key frames are known by."""
    return (int(stamp.sec), int(stamp.nanosec))


def _stamp_str(stamp):
    return f"{int(stamp.sec)}.{int(stamp.nanosec):09d}"


def mask_stats(mask):
    """(area, [x_min, y_min, x_max, y_max], (cx, cy)) of a bool mask; zeros when empty.
    From the mask's row and column sums (about 0.1 ms at 1280x720)."""
    if cv2 is not None:
        m = mask.view(np.uint8)
        cols = cv2.reduce(m, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        rows = cv2.reduce(m, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    else:
        cols, rows = mask.sum(axis=0), mask.sum(axis=1)
    area = int(cols.sum())
    if area == 0:
        return 0, [0, 0, 0, 0], (0.0, 0.0)
    xs, ys = np.flatnonzero(cols), np.flatnonzero(rows)
    centroid = (float(cols @ np.arange(cols.size)) / area, float(rows @ np.arange(rows.size)) / area)
    return area, [int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])], centroid


class SamRosNode(LifecycleNode):

    def __init__(self, node_name="sam_ros", **kwargs):
        super().__init__(node_name, **kwargs)
        self._declare_parameters()
        self._lock = threading.Lock()          # every tracker call
        self._slot_cv = threading.Condition()  # the one-slot mailbox
        self._slot = None                      # (msg, receive time) or None
        self._running = False
        self._worker = None
        self.model = None
        self.tracker = None
        self._sub = None
        self._timer = None
        self._headers = collections.OrderedDict()  # frame index -> header, the tracker's ring
        self._next_id = 1
        self._objects = []  # object ids, as the last diagnostics saw them
        self._reset_counters()
        self._camera_group = MutuallyExclusiveCallbackGroup()
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(Segment, "~/segment", self._on_segment, callback_group=group)
        self.create_service(RemoveObject, "~/remove", self._on_remove, callback_group=group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)
        self._pubs = {
            "tracks": self.create_lifecycle_publisher(ObjectTrackArray, "~/tracks", 10),
            "masks": self.create_lifecycle_publisher(Image, "~/masks", 10),
            "overlay": self.create_lifecycle_publisher(Image, "~/overlay", 10),
            "diagnostics": self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10),
        }

    # ------------------------------------------------------------ parameters

    def _declare_parameters(self):
        def p(name, default, text, **extra):
            self.declare_parameter(name, default, ParameterDescriptor(description=text, **extra))

        p("checkpoint", "", "path of a SAM 2 / SAM 2.1 checkpoint (.pt), Meta's layout; "
          "empty = the bundled sam_ros_mini model",
          type=ParameterType.PARAMETER_STRING)
        p("variant", "auto", "model variant (sam2.1_hiera_t, ..., sam2_hiera_l, sam_ros_mini) "
          "or auto: read off the checkpoint")
        p("device", "cpu", "torch device: cpu, cuda, cuda:N")
        p("dtype", "float32", "inference precision: float32 or bfloat16")
        p("image_size", 0, "model input size in pixels, multiple of 16; 0 = the variant's "
          "(1024; 256 for sam_ros_mini)",
          integer_range=[IntegerRange(from_value=0, to_value=2048, step=16)])
        p("ring_size", 8, "recent frames kept for prompts on past frames (stamp in Segment)",
          integer_range=[IntegerRange(from_value=1, to_value=64, step=1)])
        p("max_cond_frames", 8, "cap on each object's prompted (conditioning) frames",
          integer_range=[IntegerRange(from_value=2, to_value=64, step=1)])
        p("input_transport", "raw", "raw: subscribe to `image` (sensor_msgs/Image); "
          "compressed: `image/compressed` (sensor_msgs/CompressedImage)")
        p("publish_masks", True, "publish the label image on ~/masks")
        p("publish_overlay", True, "publish the overlay on ~/overlay (only computed while "
          "someone subscribes)")
        p("diagnostics_period", 1.0, "seconds between /diagnostics messages",
          floating_point_range=[FloatingPointRange(from_value=0.1, to_value=60.0, step=0.0)])
        p("error_log_period", 5.0, "seconds between repeated input error log lines",
          floating_point_range=[FloatingPointRange(from_value=0.0, to_value=3600.0, step=0.0)])

    def _param(self, name):
        return self.get_parameter(name).value

    def _reset_counters(self):
        self.stats = dict(frames_in=0, processed=0, dropped=0, unsupported=0, errors=0,
                          latency_ms=0.0, node_ms=0.0, model_ms=0.0, overhead_ms=0.0)

    # ------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from sam_ros.model import BUNDLED_CHECKPOINT, CheckpointError, build_sam2
        from sam_ros.tracker import StreamingTracker

        ckpt = self._param("checkpoint") or BUNDLED_CHECKPOINT
        transport = self._param("input_transport")
        if transport not in ("raw", "compressed"):
            self.get_logger().error(f"configure failed: input_transport must be raw or "
                                    f"compressed, got {transport!r}")
            return TransitionCallbackReturn.FAILURE
        overrides = {}
        if self._param("image_size"):
            overrides["image_size"] = int(self._param("image_size"))
        t0 = time.perf_counter()
        try:
            model = build_sam2(self._param("variant"), checkpoint=ckpt,
                               device=self._param("device"), **overrides)
            tracker = StreamingTracker(model, precision=self._param("dtype"),
                                       ring_size=int(self._param("ring_size")),
                                       max_cond_frames=int(self._param("max_cond_frames")))
        except CheckpointError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # bad device, dtype, variant, image_size, out of memory
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self.model, self.tracker = model, tracker
            self._headers.clear()
            self._next_id = 1
        self.get_logger().info(
            f"configured: {type(model).__name__} {model.config.name if hasattr(model.config, 'name') else ''} "
            f"from {ckpt} on {self._param('device')} ({self._param('dtype')}, image_size "
            f"{model.image_size}) in {time.perf_counter() - t0:.1f} s")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._reset_counters()
        msg_type, topic = ((CompressedImage, "image/compressed")
                           if self._param("input_transport") == "compressed" else (Image, "image"))
        self._sub = self.create_subscription(
            msg_type, topic, self._on_image, qos_profile_sensor_data,
            callback_group=self._camera_group,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
        self._running = True
        self._worker = threading.Thread(target=self._work, name="sam_ros_worker", daemon=True)
        self._worker.start()
        self._timer = self.create_timer(float(self._param("diagnostics_period")),
                                        self._publish_diagnostics)
        self.get_logger().info(f"active: listening on {self._sub.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._free()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._free()
        self.get_logger().info("shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._free()
        return TransitionCallbackReturn.SUCCESS

    def _stop(self):
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        with self._slot_cv:
            self._running = False
            self._slot = None
            self._slot_cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            if self._worker.is_alive():
                self.get_logger().error("the worker did not stop within 30 s (kill -USR1 "
                                        "prints every thread's stack)")
            self._worker = None

    def _free(self):
        with self._lock:
            device = getattr(self.model, "device", None)
            self.model = self.tracker = None
            self._headers.clear()
        if device is not None and str(device).startswith("cuda"):
            import torch
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------- input

    def _on_image(self, msg):
        """Executor thread: count, check, and leave the newest frame for the worker."""
        self.stats["frames_in"] += 1
        if isinstance(msg, Image) and msg.encoding not in ros_image.INPUT_ENCODINGS:
            self._input_error(f"unsupported image encoding {msg.encoding!r} on "
                              f"{self._sub.topic_name if self._sub else 'image'} (supported: "
                              f"{', '.join(ros_image.INPUT_ENCODINGS)}); frame ignored",
                              "unsupported")
            return
        with self._slot_cv:
            if self._slot is not None:
                self.stats["dropped"] += 1  # the model is slower than the camera
            self._slot = (msg, time.perf_counter())
            self._slot_cv.notify()

    def _input_error(self, text, counter):
        self.stats[counter] += 1
        period = float(self._param("error_log_period"))
        throttle = {"throttle_duration_sec": period} if period > 0 else {}
        self.get_logger().error(f"{text} [{self.stats[counter]} so far]", **throttle)

    def _work(self):
        while True:
            with self._slot_cv:
                while self._running and self._slot is None:
                    self._slot_cv.wait()
                if not self._running:
                    return
                msg, received = self._slot
                self._slot = None
            try:
                self._process(msg, received)
            except ros_image.UnsupportedEncoding as e:
                self._input_error(str(e), "unsupported")
            except Exception as e:  # never let the worker die
                if not self.context.ok():
                    return  # Ctrl-C shut the context down under a frame in flight
                self._input_error(f"frame failed: {type(e).__name__}: {e}", "errors")

    def _process(self, msg, received):
        t0 = time.perf_counter()
        if isinstance(msg, CompressedImage):
            rgb = ros_image.compressed_to_rgb(msg)
        else:
            rgb = ros_image.image_to_rgb(msg)
        with self._lock:
            tracker = self.tracker
            if tracker is None:
                return
            t1 = time.perf_counter()
            results = tracker.step(rgb, stamp=stamp_key(msg.header.stamp))
            t2 = time.perf_counter()
            self._headers[tracker.latest_frame] = msg.header
            while len(self._headers) > tracker.ring_size:
                self._headers.popitem(last=False)
        self._publish(msg.header, rgb, results)
        t3 = time.perf_counter()
        s = self.stats
        s["processed"] += 1
        s["model_ms"] = (t2 - t1) * 1e3
        s["overhead_ms"] = ((t1 - t0) + (t3 - t2)) * 1e3
        s["node_ms"] = (t3 - received) * 1e3
        now = self.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        s["latency_ms"] = (now - stamp_ns) / 1e6 if stamp_ns else float("nan")

    # ---------------------------------------------------------------- output

    def _publish(self, header, rgb, results):
        pubs = self._pubs
        out = ObjectTrackArray(header=header)
        for obj_id in sorted(results):
            r = results[obj_id]
            area, bbox, centroid = mask_stats(r.mask) if r.visible else (0, [0, 0, 0, 0], (0.0, 0.0))
            out.objects.append(ObjectTrack(
                id=int(obj_id), visible=bool(r.visible and area > 0), score=float(r.score),
                iou=float(r.iou), bbox=bbox, centroid=[float(centroid[0]), float(centroid[1])],
                area=area))
        pubs["tracks"].publish(out)
        want_masks = self._param("publish_masks") and pubs["masks"].get_subscription_count() > 0
        want_overlay = (self._param("publish_overlay")
                        and pubs["overlay"].get_subscription_count() > 0)
        if not (want_masks or want_overlay):
            return
        from sam_ros.tracker import label_image  # torch loads in on_configure, not here

        labels = label_image(rgb.shape[:2], results)
        if want_masks:
            pubs["masks"].publish(ros_image.array_to_image(labels, "mono16", header))
        if want_overlay:
            pubs["overlay"].publish(ros_image.array_to_image(
                overlay_image(rgb, labels, out.objects), "rgb8", header))

    def _publish_diagnostics(self):
        s = self.stats
        # the object ids now, or as last seen while a tracker call holds the lock: waiting
        # for it would hold up this timer's callback group for the length of the call
        if self._lock.acquire(blocking=False):
            try:
                self._objects = list(self.tracker.object_ids) if self.tracker is not None else []
            finally:
                self._lock.release()
        objects = self._objects
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if s["errors"] == 0 else DiagnosticStatus.WARN,
            name=f"{self.get_name()}: SAM 2 tracker",
            message=f"{len(objects)} objects, {s['processed']} frames processed",
            hardware_id=str(self._param("device")))
        values = dict(frames_in=s["frames_in"], processed=s["processed"], dropped=s["dropped"],
                      unsupported=s["unsupported"], errors=s["errors"],
                      latency_ms=f"{s['latency_ms']:.1f}", node_ms=f"{s['node_ms']:.1f}",
                      model_ms=f"{s['model_ms']:.1f}", overhead_ms=f"{s['overhead_ms']:.2f}",
                      objects=" ".join(map(str, objects)), num_objects=len(objects),
                      device=self._param("device"), dtype=self._param("dtype"))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pubs["diagnostics"].publish(msg)

    # -------------------------------------------------------------- services

    def _on_segment(self, req, res):
        res.success = False
        try:
            self._segment(req, res)
            res.success = True
            res.message = "ok"
        except ValueError as e:
            res.message = str(e)
        except Exception as e:  # never crash the node on a request
            res.message = f"{type(e).__name__}: {e}"
            self.get_logger().error(f"segment failed: {res.message}")
        if not res.success:
            self.get_logger().warning(f"segment refused: {res.message}")
        return res

    def _segment(self, req, res):
        pts = np.asarray(req.points, np.float64)
        if pts.size % 2:
            raise ValueError(f"points must be flat pairs [x0, y0, x1, y1, ...]; got "
                             f"{pts.size} numbers")
        labels = list(req.labels)
        if pts.size == 0 and labels:
            raise ValueError(f"{len(labels)} labels given without points")
        box = list(req.box)
        if box and len(box) != 4:
            raise ValueError(f"box must be empty or [x_min, y_min, x_max, y_max]; got "
                             f"{len(box)} numbers")
        if pts.size == 0 and not box:
            raise ValueError("empty prompt: give points with labels and/or a box")
        if req.object_id < 0:
            raise ValueError(f"object_id must be 0 (new object) or a tracked id; got "
                             f"{req.object_id}")
        if req.once and req.object_id != 0:
            raise ValueError("once=true answers for a new object only: use object_id 0")
        with self._lock:
            tracker = self.tracker
            if tracker is None:
                raise ValueError("node is not configured: configure and activate it first")
            if self._sub is None:
                raise ValueError("node is not active: activate it first")
            if tracker.latest_frame is None:
                raise ValueError(f"no camera frame received yet on {self._sub.topic_name}; "
                                 f"a prompt needs a frame")
            if req.object_id and req.object_id not in tracker.object_ids:
                raise ValueError(f"unknown object id {req.object_id}; tracked ids: "
                                 f"{sorted(tracker.object_ids)} (use 0 for a new object)")
            frame = None
            if req.stamp.sec or req.stamp.nanosec:
                try:
                    frame = tracker.frame_for_stamp(stamp_key(req.stamp))
                except ValueError:
                    ring = [self._headers[i].stamp for i in tracker.ring_frames
                            if i in self._headers]
                    raise ValueError(
                        f"no recent frame has stamp {_stamp_str(req.stamp)}: the last "
                        f"{len(ring)} frames span {_stamp_str(ring[0])} .. {_stamp_str(ring[-1])}"
                        f" (zero stamp = the latest frame)") from None
            if req.once:
                obj_id = -1
            elif req.object_id:
                obj_id = int(req.object_id)
            else:
                obj_id = self._next_id
                while obj_id in tracker.object_ids:
                    obj_id += 1
            kwargs = {}
            if pts.size:
                kwargs["points"] = pts.reshape(-1, 2)
                kwargs["labels"] = labels
            if box:
                kwargs["box"] = np.asarray(box, np.float64)
            try:
                r = tracker.add_prompt(obj_id, frame=frame, **kwargs)
            finally:
                if req.once and -1 in tracker.object_ids:
                    tracker.remove(-1)
            if not req.object_id and not req.once:
                self._next_id = obj_id + 1
            header = self._headers.get(r.frame)
        area, bbox, _ = mask_stats(r.mask)
        res.object_id = 0 if req.once else obj_id
        res.score = float(r.score)
        res.iou = float(r.iou)
        res.bbox = bbox
        res.mask = ros_image.array_to_image(r.mask.view(np.uint8) * np.uint8(255), "mono8", header)
        res.stamp = header.stamp if header is not None else Time()

    def _on_remove(self, req, res):
        with self._lock:
            if self.tracker is None:
                res.success, res.message = False, "node is not configured"
            elif req.object_id not in self.tracker.object_ids:
                res.success = False
                res.message = (f"unknown object id {req.object_id}; tracked ids: "
                               f"{sorted(self.tracker.object_ids)}")
            else:
                self.tracker.remove(int(req.object_id))
                res.success, res.message = True, f"removed object {req.object_id}"
        return res

    def _on_reset(self, req, res):
        with self._lock:
            if self.tracker is None:
                res.success, res.message = False, "node is not configured"
            else:
                n = len(self.tracker.object_ids)
                self.tracker.reset()
                self._next_id = 1
                res.success, res.message = True, f"removed {n} objects"
        return res


def main(args=None):
    """Run the node (spin with a multi-threaded executor). `--activate` configures and
    activates it at start (as the launch file's auto_start does)."""
    argv = sys.argv if args is None else args
    auto = "--activate" in argv
    argv = [a for a in argv if a != "--activate"]
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a hang is found.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    rclpy.init(args=argv)
    node = SamRosNode()
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    if auto:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A Ctrl-C that shuts the context down while the executor builds its wait set comes
        # out as an RCLError ("the given context is not valid"), not as the exception above
        # (seen in a full test run): once the context is down, an error is the shutdown.
        if rclpy.ok():
            raise
    finally:
        # A second Ctrl-C must not cut the clean-up short: it would leave the worker inside
        # torch while the interpreter exits, and the process would abort.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log = node.get_logger()
        log.info("spin ended; stopping")
        node._stop()
        node.destroy_node()
        rclpy.try_shutdown()
        log.info("exiting")  # after this line, a hang is in the interpreter's exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
