"""The node's parameters in one table: declared with descriptions and ranges, checked when set.

Each parameter takes effect at one moment, which decides when it may change:
  configure  read when the model is loaded; settable while unconfigured (else: cleanup first)
  activate   read when the camera subscription is made; settable unless active
  live       read on every use; settable at any time
A refused ``ros2 param set`` says which transition to run first, instead of being accepted
and silently ignored until the next configure.
"""

from dataclasses import dataclass

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)

CONFIGURE, ACTIVATE, LIVE = "configure", "activate", "live"
PRECISIONS = ("float32", "bfloat16")
TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class Spec:
    name: str
    default: object
    description: str
    read_at: str = CONFIGURE
    choices: tuple = ()
    integers: tuple = None  # (from, to, step)
    floats: tuple = None  # (from, to)

    def descriptor(self):
        extra = {}
        if self.integers:
            low, high, step = self.integers
            extra["integer_range"] = [IntegerRange(from_value=low, to_value=high, step=step)]
        if self.floats:
            low, high = self.floats
            extra["floating_point_range"] = [FloatingPointRange(from_value=low, to_value=high,
                                                                step=0.0)]
        text = self.description
        if self.choices:
            text += f" ({' | '.join(self.choices)})"
        return ParameterDescriptor(description=f"{text}; read at {self.read_at}", **extra)


SPECS = (
    Spec("checkpoint", "", "checkpoint: a file (Meta's SAM 2 .pt, SAM's .pth, MobileSAM's .pt, "
         "a Hugging Face model.safetensors) or an official name such as sam2.1_hiera_small "
         "(downloaded into the cache on first use); empty = the bundled sam_ros_mini model. "
         "SAM and MobileSAM answer once: true requests only (no memory to track with)"),
    Spec("variant", "auto", "model variant (sam2.1_hiera_t, ..., sam2_hiera_l, sam_vit_b, "
         "sam_vit_l, sam_vit_h, mobile_sam, sam_ros_mini) or auto: read off the checkpoint"),
    Spec("device", "cpu", "torch device: cpu, cuda, cuda:N"),
    Spec("dtype", "float32", "inference precision", choices=PRECISIONS),
    Spec("image_size", 0, "model input size in pixels, multiple of 16; 0 = the variant's "
         "(1024; 256 for sam_ros_mini)", integers=(0, 2048, 16)),
    Spec("ring_size", 16, "most frames kept for prompts on past frames (stamp in Segment); "
         "each holds one frame's image features (16 MiB at image_size 1024)",
         integers=(1, 256, 1)),
    Spec("prompt_history", 10.0, "seconds a prompt can reach back (stamp in Segment): the "
         "ring_size kept frames spread over them, the newest half dense; 0 = only the last "
         "ring_size frames", floats=(0.0, 600.0)),
    Spec("max_cond_frames", 8, "cap on each object's prompted (conditioning) frames",
         integers=(2, 64, 1)),
    Spec("input_transport", "raw", "raw: subscribe to `image` (sensor_msgs/Image); "
         "compressed: `image/compressed` (sensor_msgs/CompressedImage)", read_at=ACTIVATE,
         choices=TRANSPORTS),
    Spec("publish_masks", True, "publish the label image on ~/masks", read_at=LIVE),
    Spec("publish_overlay", True, "publish the overlay on ~/overlay (only computed while "
         "someone subscribes)", read_at=LIVE),
    Spec("diagnostics_period", 1.0, "seconds between /diagnostics messages", read_at=ACTIVATE,
         floats=(0.1, 60.0)),
    Spec("error_log_period", 5.0, "seconds between repeated input error log lines",
         read_at=LIVE, floats=(0.0, 3600.0)),
    Spec("segment_all_points_per_side", 16, "~/segment_all's prompt grid: points per side "
         "(its cost grows with the square)", read_at=LIVE, integers=(1, 64, 1)),
    Spec("segment_all_max_tracks", 16, "most tracks one ~/segment_all with track: true starts",
         read_at=LIVE, integers=(1, 256, 1)),
    # depth to 3D (depth3d.py)
    Spec("depth_enabled", False, "subscribe to `depth` (sensor_msgs/Image, 16UC1 mm or "
         "32FC1 m, registered to the colour image) and `camera_info` (the colour camera's) "
         "and give each visible track a 3D centre and size (~/detections_3d, ~/points, "
         "ObjectTrack)", read_at=ACTIVATE),
    Spec("depth_tolerance", 0.02, "seconds a depth image's stamp may differ from a colour "
         "frame's to be used with it (the nearest within this)", read_at=LIVE,
         floats=(0.0, 1.0)),
    Spec("depth_min", 0.1, "metres: nearer depth readings are ignored", read_at=LIVE,
         floats=(0.001, 100.0)),
    Spec("depth_max", 10.0, "metres: farther depth readings are ignored", read_at=LIVE,
         floats=(0.01, 1000.0)),
    Spec("camera_rectified", False, "the colour image is rectified (image_rect*): use "
         "camera_info's P, without distortion, instead of K and D", read_at=LIVE),
    Spec("cloud_step", 4, "~/points takes every n-th pixel's row and column of each mask "
         "(only computed while someone subscribes)", read_at=LIVE, integers=(1, 64, 1)),
    # tracks from a detector (detector.py)
    Spec("detections_enabled", False, "subscribe to `detections_in` "
         "(vision_msgs/Detection2DArray): unmatched detections start tracks, lost tracks "
         "are re-prompted with their detection's box", read_at=ACTIVATE),
    Spec("detection_threshold", 0.5, "detections scoring less are ignored", read_at=LIVE,
         floats=(0.0, 1.0)),
    Spec("detection_classes", "", "classes whose detections are used, comma-separated "
         "(e.g. \"cup, bottle\"); empty = all", read_at=LIVE),
    Spec("max_objects", 16, "most tracks at once: a Segment for a new object is refused and "
         "a detection starts none beyond it; 0 = no cap", read_at=LIVE,
         integers=(0, 1000, 1)),
    Spec("max_lost_s", 0.0, "seconds a track may stay not visible before it is dropped "
         "(its id is not reused); 0 = never", read_at=LIVE, floats=(0.0, 86400.0)),
    Spec("exit_on_shutdown", True, "end the process (exit status 0) once the node is shut "
         "down; false keeps it running, finalized", read_at=LIVE),
)
BY_NAME = {spec.name: spec for spec in SPECS}


def declare(node):
    """Declare every parameter on ``node`` (values from overrides or the defaults)."""
    for spec in SPECS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def check_value(name, value):
    """Why ``value`` is not a valid ``name``, or None. (Ranges are checked by rclpy.)"""
    spec = BY_NAME[name]
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}; got {value!r}"
    return None


def check_change(name, value, state):
    """Why ``name`` may not be set to ``value`` in lifecycle state ``state`` (a label such as
    "unconfigured"), or None."""
    problem = check_value(name, value)
    if problem:
        return problem
    read_at = BY_NAME[name].read_at
    if read_at == CONFIGURE and state in ("inactive", "active"):
        return (f"{name} is read at configure and the node is {state}: deactivate (if active) "
                f"and cleanup, set it, then configure again")
    if read_at == ACTIVATE and state == "active":
        return (f"{name} is read at activate and the node is active: deactivate, set it, "
                f"then activate again")
    return None


def check_together(values):
    """Why parameters ``values`` (name -> value, all of them) do not go together, or None."""
    if not values["depth_min"] < values["depth_max"]:
        return (f"depth_min ({values['depth_min']}) must be less than depth_max "
                f"({values['depth_max']})")
    return None


def on_set(node):
    """A set-parameters callback for ``node`` that applies ``check_change`` and
    ``check_together``."""
    def callback(params):
        state = node.lifecycle_state_label()
        values = {spec.name: node.get_parameter(spec.name).value for spec in SPECS}
        for param in params:
            if param.name in BY_NAME:
                problem = check_change(param.name, param.value, state)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
                values[param.name] = param.value
        problem = check_together(values)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)
    return callback


def device_problem(device):
    """Why torch ``device`` cannot be used here, or None."""
    import torch

    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError) as e:
        return f"device {device!r} is not a torch device (cpu, cuda, cuda:N): {e}"
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch was built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            return f"device {device!r}: {why} (torch {torch.__version__}); use device cpu"
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            return (f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) "
                    f"visible")
    elif kind.type != "cpu":
        return f"device {device!r}: only cpu and cuda devices are supported"
    return None
