"""The sam_ros lifecycle node: camera in, SAM 2 tracker, tracks / label image / overlay out.

Lifecycle:
  configure   loads the model (parameters checkpoint, variant, device, dtype, image_size;
              a checkpoint named like sam2.1_hiera_small is downloaded into the cache on
              first use); a missing, corrupt or wrong checkpoint, or a failed download,
              fails the transition with a clear log line and the node stays unconfigured
              (it can be configured again).
  activate    subscribes to the camera (and, where enabled, to depth and camera_info, and to
              a detector's detections_in) and starts the frame worker and the publishers.
  deactivate  unsubscribes and stops the worker (objects are kept).
  cleanup     frees the model and the tracker.
  shutdown    all of the above; then, unless exit_on_shutdown is false, the process ends
              with status 0 (a finalized node can do nothing more).
The publishers live as long as the node (lifecycle publishers: silent unless active), and
the subscriptions are made without QoS event handlers. A transition runs in an executor
thread while the spinning thread builds its wait set, and destroying an entity that has
event handlers there can raise InvalidHandle in the spinning thread and end its spin (rclpy
issues 1284 and 1355); the subscriptions, destroyed on every deactivate, must have none.
Their QoS (sensor data: best effort, volatile) accepts any publisher's, so no
incompatible-QoS warning is lost; a publisher of the wrong type shows as frames_in 0 (or
depth_in, detections_in 0) in /diagnostics.

Threads: the camera callback only offers the newest message to the frame worker
(``worker.py``); the worker converts it, steps the tracker, applies the detections and the
track lifetime (``detector.py``), measures the tracks in depth (``depth3d.py``) and
publishes. The depth, camera_info and detection callbacks only keep their (few, newest)
messages for it. The camera callback, the other inputs and the services have callback
groups of their own and the diagnostics timer never waits for the tracker (``session.py``),
so a tracker call that takes seconds delays no camera callback (spin with a
MultiThreadedExecutor, as main() does).

Parts: ``parameters.py`` (the parameter table), ``worker.py`` (mailbox and thread),
``session.py`` (the shared tracker and the id policy), ``detector.py`` (track lifetime,
tracks from a detector), ``depth3d.py`` (depth to 3D), ``outputs.py`` (publishers) and
``vision.py`` (vision_msgs and the point cloud), ``services.py`` (requests and answers),
``conversions.py`` (messages <-> numpy).
"""

import faulthandler
import math
import signal
import sys
import threading
import time

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble's name for the module
    from rclpy.qos_event import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from sam_ros.tracker.depth import DepthOptions

from . import conversions, parameters
from .depth3d import DepthInput
from .detector import TrackKeeper, detection_options
from .outputs import Outputs, track_message
from .services import Services
from .session import ImageSession, Session
from .worker import FrameWorker


class SamRosNode(LifecycleNode):

    def __init__(self, node_name="sam_ros", **kwargs):
        super().__init__(node_name, **kwargs)
        parameters.declare(self)
        self.add_on_set_parameters_callback(parameters.on_set(self))
        self.session = None  # set while configured
        self.keeper = None  # track lifetime and detections: set while configured
        self.depth = None  # depth to 3D: set while active with depth_enabled
        self.on_finalized = None  # main() ends the process through it
        self.worker = FrameWorker(self._process, self._frame_failed)
        self._sub = None
        self._inputs = []  # the depth, camera_info and detections subscriptions
        self._timer = None
        self._warned = {}  # warning key -> when it was last logged
        self._reset_counters()
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._inputs_group = MutuallyExclusiveCallbackGroup()
        self.handlers = Services(self, MutuallyExclusiveCallbackGroup())  # (rclpy has .services)
        self.outputs = Outputs(self)

    def param(self, name):
        return self.get_parameter(name).value

    def lifecycle_state_label(self):
        return self._state_machine.current_state[1]

    @property
    def active(self):
        return self._sub is not None

    def _reset_counters(self):
        self.stats = dict(frames_in=0, processed=0, dropped=0, unsupported=0, errors=0,
                          latency_ms=0.0, node_ms=0.0, model_ms=0.0, overhead_ms=0.0,
                          perception_ms=0.0)

    # ------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from sam_ros.model import (
            BUNDLED_CHECKPOINT,
            CheckpointError,
            SamImagePredictor,
            build_model,
        )
        from sam_ros.model.hub import percent_logger, resolve_checkpoint
        from sam_ros.tracker import StreamingTracker

        values = {spec.name: self.param(spec.name) for spec in parameters.SPECS}
        device = values["device"]
        problems = [parameters.check_value(name, value) for name, value in values.items()]
        for problem in problems + [parameters.check_together(values),
                                   parameters.device_problem(device)]:
            if problem:
                self.get_logger().error(f"configure failed: {problem}")
                return TransitionCallbackReturn.FAILURE
        ckpt = self.param("checkpoint") or BUNDLED_CHECKPOINT
        overrides = {}
        if self.param("image_size"):
            overrides["image_size"] = int(self.param("image_size"))
        t0 = time.perf_counter()
        try:
            # a model name is fetched into the cache on first use: a log line per 10%
            path = resolve_checkpoint(ckpt, progress=percent_logger(
                self.get_logger().info, f"downloading {ckpt}"))
            model = build_model(self.param("variant"), checkpoint=path, device=device,
                                **overrides)
            if model.has_memory:
                session = Session(StreamingTracker(
                    model, precision=self.param("dtype"),
                    ring_size=int(self.param("ring_size")),
                    ring_span=float(self.param("prompt_history")) or None,
                    max_cond_frames=int(self.param("max_cond_frames"))))
            else:  # SAM, MobileSAM: answers once, tracks nothing
                session = ImageSession(SamImagePredictor(model, precision=self.param("dtype")),
                                       int(self.param("ring_size")))
        except CheckpointError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # bad device, dtype, variant, image_size, out of memory
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            return TransitionCallbackReturn.FAILURE
        self.session = session
        self.keeper = TrackKeeper(lambda key, text: self._warn(f"detector {key}", text))
        self.get_logger().info(
            f"configured: {model.config.name} from {ckpt} on {self.param('device')} "
            f"({self.param('dtype')}, image_size {model.image_size}) in "
            f"{time.perf_counter() - t0:.1f} s"
            + ("" if model.has_memory else "; an image-only model: it answers once: true "
               "requests and tracks nothing"))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._reset_counters()
        msg_type, topic = ((CompressedImage, "image/compressed")
                           if self.param("input_transport") == "compressed" else (Image, "image"))
        self._sub = self._subscribe(msg_type, topic, self._on_image, self._camera_group)
        self.keeper.activate()
        if self.param("depth_enabled"):
            self.depth = DepthInput(lambda key, text: self._warn(f"depth {key}", text))
            self._inputs += [
                self._subscribe(Image, "depth", self.depth.on_depth, self._inputs_group),
                self._subscribe(CameraInfo, "camera_info", self.depth.on_camera_info,
                                self._inputs_group)]
        if self.param("detections_enabled") and self.session.tracker is None:
            self.get_logger().warning("detections_enabled is ignored: an image-only model "
                                      "cannot track what a detector finds (a SAM 2 / 2.1 "
                                      "checkpoint can)")
        elif self.param("detections_enabled"):
            self._inputs.append(self._subscribe(Detection2DArray, "detections_in",
                                                self.keeper.on_detections,
                                                self._inputs_group))
        self.worker.start()
        self._timer = self.create_timer(float(self.param("diagnostics_period")),
                                        self._publish_diagnostics)
        inputs = "".join(f", {sub.topic_name}" for sub in self._inputs)
        self.get_logger().info(f"active: listening on {self._sub.topic_name}{inputs}")
        return super().on_activate(state)

    def _subscribe(self, msg_type, topic, callback, group):
        """A best-effort subscription without QoS event handlers (see the module's
        docstring)."""
        return self.create_subscription(
            msg_type, topic, callback, qos_profile_sensor_data, callback_group=group,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._free()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._free()
        if self.param("exit_on_shutdown") and self.on_finalized is not None:
            self.get_logger().info("shut down: the process ends (exit_on_shutdown)")
            self.on_finalized()
        else:
            self.get_logger().info("shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._free()
        return TransitionCallbackReturn.SUCCESS

    def stop(self):
        """Unsubscribe and stop the worker and the timer (objects are kept)."""
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if not self.worker.stop(timeout=30.0):
            self.get_logger().error("the worker did not stop within 30 s (kill -USR1 prints "
                                    "every thread's stack)")
        self.depth = None

    def _free(self):
        self.keeper = None
        session, self.session = self.session, None
        if session is None:
            return
        if session.close().type == "cuda":
            import torch
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------- input

    def _on_image(self, msg):
        """Executor thread: count, check, and leave the newest frame for the worker."""
        self.stats["frames_in"] += 1
        if isinstance(msg, Image) and msg.encoding not in conversions.INPUT_ENCODINGS:
            self._input_error(f"unsupported image encoding {msg.encoding!r} on "
                              f"{self._sub.topic_name if self._sub else 'image'} (supported: "
                              f"{', '.join(conversions.INPUT_ENCODINGS)}); frame ignored",
                              "unsupported")
            return
        depth = self.depth
        if depth is not None:
            depth.expect(msg.header.stamp)  # keep its depth image for the worker
        if self.worker.offer(msg):
            self.stats["dropped"] += 1  # the model is slower than the camera

    def _input_error(self, text, counter):
        self.stats[counter] += 1
        period = float(self.param("error_log_period"))
        throttle = {"throttle_duration_sec": period} if period > 0 else {}
        self.get_logger().error(f"{text} [{self.stats[counter]} so far]", **throttle)

    def _warn(self, key, text):
        """A warning, at most one per error_log_period for each ``key`` (a kind of problem
        with the depth or the detections)."""
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= float(self.param("error_log_period")):
            self._warned[key] = now
            self.get_logger().warning(text)

    def _frame_failed(self, exc):
        if isinstance(exc, conversions.UnsupportedEncoding):
            self._input_error(str(exc), "unsupported")
        elif self.context.ok():  # else Ctrl-C shut the context down under a frame in flight
            self._input_error(f"frame failed: {type(exc).__name__}: {exc}", "errors")

    def _process(self, msg, received):
        """Worker thread: one frame through the tracker and out to the publishers."""
        t0 = time.perf_counter()
        if isinstance(msg, CompressedImage):
            rgb = conversions.compressed_to_rgb(msg)
        else:
            rgb = conversions.image_to_rgb(msg)
        session, keeper, depth = self.session, self.keeper, self.depth
        if session is None:
            return
        header = msg.header
        t1 = time.perf_counter()
        results = session.step(rgb, header)
        t2 = time.perf_counter()
        tracks = track_message(header, results, session.labels)
        t3 = time.perf_counter()
        results, tracks, measured = self._perceive(session, keeper, depth, header,
                                                   rgb.shape[:2], results, tracks)
        t4 = time.perf_counter()
        self.outputs.publish_frame(header, rgb, results, tracks,
                                   masks=self.param("publish_masks"),
                                   overlay=self.param("publish_overlay"), measured=measured)
        t5 = time.perf_counter()
        s = self.stats
        s["processed"] += 1
        s["model_ms"] = (t2 - t1) * 1e3
        s["perception_ms"] = (t4 - t3) * 1e3
        s["overhead_ms"] = ((t1 - t0) + (t3 - t2) + (t5 - t4)) * 1e3
        s["node_ms"] = (t5 - received) * 1e3
        now = self.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        s["latency_ms"] = (now - stamp_ns) / 1e6 if stamp_ns else float("nan")

    def _perceive(self, session, keeper, depth, header, image_hw, results, tracks):
        """Worker thread: track lifetime and detections (when enabled), then depth to 3D
        (when enabled). Returns the frame's results and tracks (with the tracks started,
        re-prompted or dropped) and the objects measured in depth (None: no 3D)."""
        if keeper is not None and self._keeping_tracks():
            updated = keeper.update(session, header, results, tracks, detection_options(
                self.param("detection_threshold"), self.param("detection_classes"),
                self.param("max_objects")), float(self.param("max_lost_s")))
            if updated is not None:
                results, tracks = updated, track_message(header, updated, session.labels)
        if depth is None:
            return results, tracks, None
        return results, tracks, depth.measure(
            header, image_hw, results, tracks, float(self.param("depth_tolerance")),
            DepthOptions(min_depth=float(self.param("depth_min")),
                         max_depth=float(self.param("depth_max"))),
            cloud_step=self.param("cloud_step") if self.outputs.want_points() else 0,
            rectified=self.param("camera_rectified"))

    def _keeping_tracks(self):
        """Whether the track table is kept: tracks come from a detector or expire."""
        return self.param("detections_enabled") or self.param("max_lost_s") > 0

    def _publish_diagnostics(self):
        session, keeper, depth = self.session, self.keeper, self.depth
        objects = session.object_ids(wait=False) if session is not None else []
        extra = {"perception_ms": f"{self.stats['perception_ms']:.2f}"}
        if keeper is not None and self._keeping_tracks():
            extra.update(keeper.stats)
        if depth is not None:
            extra.update(depth.stats)
        self.outputs.publish_diagnostics(self.get_name(), self.stats, objects,
                                         self.param("device"), self.param("dtype"), extra)

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
    # After a shutdown transition, end the spin once its answer is out (a transition's
    # callback runs inside the executor, which cannot be shut down from there).
    finalized = threading.Event()
    node.on_finalized = finalized.set

    def end_when_finalized():
        finalized.wait()
        time.sleep(0.5)  # the lifecycle service's answer goes out first
        executor.shutdown()

    threading.Thread(target=end_when_finalized, name="sam_ros_exit", daemon=True).start()
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
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        log.info("exiting")  # after this line, a hang is in the interpreter's exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
