"""sam_ros: Meta's SAM 2 as a ROS 2 perception package (model, streaming tracker, node)."""
