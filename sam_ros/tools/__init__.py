"""Command-line tools built on the model and tracker (no ROS needed)."""
