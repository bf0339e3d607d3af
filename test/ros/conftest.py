"""The ROS layer's tests need rclpy and the built sam_ros package (its generated sam_ros.msg
and sam_ros.srv), and DDS kept to this machine and this test run.

Without them the modules here are not collected (the header of the run says why), unless
SAM_ROS_REQUIRE_ROS=1 (what tools/test.sh and CI set), which turns that into an error.
"""

import importlib
import os

# Local only, and a domain of this run's own: other runs on the machine must not be heard.
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

try:
    for module in ("rclpy", "sam_ros.msg"):  # sam_ros.msg is generated: only when built
        importlib.import_module(module)
    MISSING = None
except ImportError as exc:
    if os.environ.get("SAM_ROS_REQUIRE_ROS") == "1":
        raise
    MISSING = (f"ROS 2 or the built sam_ros package is not importable ({exc}); run "
               "tools/setup_ros.sh and source tools/ros_env.sh")
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header(config):
    if MISSING:
        return f"test/ros not collected: {MISSING}"
