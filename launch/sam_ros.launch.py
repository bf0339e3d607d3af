"""Launch the sam_ros lifecycle node.

    ros2 launch sam_ros sam_ros.launch.py image:=/camera/color/image_raw \
        checkpoint:=sam2.1_hiera_small device:=cuda

Arguments: image (camera topic: remapped onto the node's `image`, and `<image>/compressed`
onto `image/compressed`); depth (a depth image registered to the camera's colour image:
remapped onto `depth`, and it turns depth_enabled on) and camera_info (the colour camera's:
remapped onto `camera_info`, default `camera_info` beside the image topic, as
image_transport has it); detections (a detector's vision_msgs/Detection2DArray: remapped
onto `detections_in`, and it turns detections_enabled on); params_file (default: the
installed config/sam_ros.yaml),
checkpoint and device (when given, they override the file), auto_start (default true:
configure the node at start and activate it after its first successful configure; false
leaves it unconfigured for a lifecycle manager). The node runs with the installed Fast DDS
profile for large images unless FASTDDS_DEFAULT_PROFILES_FILE is set already.
"""

import os
import posixpath

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def _setup(context):
    def arg(name):
        return context.launch_configurations[name]

    share = get_package_share_directory("sam_ros")
    image = arg("image")
    parameters = [arg("params_file")]
    overrides = {k: arg(k) for k in ("checkpoint", "device") if arg(k)}
    remappings = [("image", image), ("image/compressed", image + "/compressed")]
    if arg("depth") or arg("camera_info"):
        overrides["depth_enabled"] = True
        info = arg("camera_info") or posixpath.join(posixpath.dirname(image), "camera_info")
        remappings += [("depth", arg("depth") or "depth"), ("camera_info", info)]
    if arg("detections"):
        overrides["detections_enabled"] = True
        remappings.append(("detections_in", arg("detections")))
    if overrides:
        parameters.append(overrides)
    env = {}
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = os.path.join(share, "config",
                                                            "fastdds_large_images.xml")
    node = LifecycleNode(
        package="sam_ros", executable="sam_ros_node", name="sam_ros", namespace="",
        output="screen", parameters=parameters, additional_env=env,
        remappings=remappings)
    actions = [node]
    if arg("auto_start").lower() in ("true", "1", "yes"):
        # Once: later deactivations, cleanups and reconfigurations are the user's to make.
        actions += [
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                handle_once=True,
                entities=[EmitEvent(event=ChangeState(
                    lifecycle_node_matcher=matches_action(node),
                    transition_id=Transition.TRANSITION_ACTIVATE))])),
            EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=Transition.TRANSITION_CONFIGURE)),
        ]
    return actions


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("sam_ros"), "config",
                                  "sam_ros.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("depth", default_value="",
                              description="depth image registered to the colour image "
                                          "(16UC1 mm or 32FC1 m); given: 3D on"),
        DeclareLaunchArgument("camera_info", default_value="",
                              description="the colour camera's CameraInfo (default: "
                                          "camera_info beside the image topic); given: 3D on"),
        DeclareLaunchArgument("detections", default_value="",
                              description="a detector's vision_msgs/Detection2DArray; given: "
                                          "tracks start from its detections"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="parameter file"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="SAM 2 checkpoint: a file or a model name "
                                          "(overrides the file)"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu or cuda (overrides the file)"),
        DeclareLaunchArgument("auto_start", default_value="true",
                              description="configure and activate the node at start"),
        OpaqueFunction(function=_setup),
    ])
