"""Streaming multi-object SAM 2 tracking over a live stream of frames (no ROS needed).

The tracker itself (torch) loads on first use of its names, so that the parts without torch
(``labels``, ``depth``, ``association``) import without it.
"""

from .labels import claimed_by, label_image

__all__ = ["StreamingTracker", "TrackResult", "claimed_by", "label_image"]


def __getattr__(name):
    if name in ("StreamingTracker", "TrackResult"):
        from . import streaming
        return getattr(streaming, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
