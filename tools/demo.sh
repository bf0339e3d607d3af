#!/usr/bin/env bash
# The main job on a fresh machine, in one command: set up the runtime (idempotent), build the
# ROS 2 package, then run the end-to-end demo: the sam_ros node tracking an object in a
# played-back camera stream, scored against ground truth where it is known. Writes out/demo/.
# Arguments go to the demo (python -P -m sam_ros.ros.demo --help), e.g. --checkpoint x.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --runtime-only
bash tools/setup_ros.sh
# shellcheck disable=SC1091
source tools/ros_env.sh
exec python -P -m sam_ros.ros.demo --out out/demo "$@"
