"""The ROS 2 layer: the lifecycle node and the tools that talk to it. Everything that needs
rclpy lives here; the rest of sam_ros (model, tracker, tools) runs without ROS."""
