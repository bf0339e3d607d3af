"""Streaming multi-object SAM 2 tracking over a live stream of frames (no ROS needed)."""

from .streaming import StreamingTracker, TrackResult

__all__ = ["StreamingTracker", "TrackResult"]
