"""Streaming multi-object SAM 2 tracking over a live stream of frames (no ROS needed)."""

from .labels import claimed_by, label_image
from .streaming import StreamingTracker, TrackResult

__all__ = ["StreamingTracker", "TrackResult", "claimed_by", "label_image"]
