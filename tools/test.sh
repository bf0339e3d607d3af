#!/usr/bin/env bash
# The test command: set up (idempotent), build the ROS 2 package (PyPI ROS 2 wheels, colcon,
# into ros_ws/), lint (ruff, configured in pyproject.toml), and run the whole test suite
# against the BUILT package: the workspace is sourced and Python runs with -P, so the source
# tree is not on sys.path and `sam_ros` (our code + the generated sam_ros.msg/srv) comes from
# ros_ws/install. Arguments go to pytest (e.g. test/model to run one layer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/setup_ros.sh --cli   # with ros2 and ros2 launch: the tests run them
# shellcheck disable=SC1091
source tools/ros_env.sh
ruff check --quiet .
export SAM_ROS_REQUIRE_ROS=1
exec python -P -m pytest test "$@"
