# Source me (bash): the venv and the built workspace (PyPI ROS 2 wheels).
_SAM_ROS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VIRTUAL_ENV=$_SAM_ROS_ROOT/.venv
export PATH=$VIRTUAL_ENV/bin:$PATH
export AMENT_PREFIX_PATH=$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export CMAKE_PREFIX_PATH=$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
# local_setup: this workspace only (it puts install/.../site-packages on PYTHONPATH, ahead
# of the source tree, and the interfaces' libraries on LD_LIBRARY_PATH)
set +u
# shellcheck disable=SC1091
source "$_SAM_ROS_ROOT/ros_ws/install/local_setup.bash"
