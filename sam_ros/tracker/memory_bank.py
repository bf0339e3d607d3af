"""Per-object memory of the streaming tracker, bounded by what SAM 2 can still read.

SAM 2 conditions frame t of an object on: all of its conditioning (prompted) frames, the
non-conditioning memories of frames t-1 .. t-(num_maskmem-1), and the object pointers of
its conditioning frames and of frames t-1 .. t-(max_obj_ptrs-1). Anything older is never
read again, so it is dropped; only a prompt on a past frame still in the tracker's ring
reaches further back, and the bank keeps exactly what decoding the ring's frames again
reads.
"""

import bisect
from dataclasses import dataclass, field, fields
from typing import Dict, Optional

import torch


@dataclass
class MemoryEntry:
    """What one object (or, in training, a batch of B clips' objects) left on one frame."""

    obj_ptr: torch.Tensor  # B x C
    score: torch.Tensor  # B x 1 object-score logit
    low_res: Optional[torch.Tensor]  # B x 1 x 4h x 4w chosen mask logits (ring frames only)
    iou: torch.Tensor  # B, the heads' estimate of the chosen mask's IoU
    features: Optional[torch.Tensor] = None  # B x mem_dim x h x w, None until encoded
    # prompt frames only: the prompt, kept so that a further click refines it
    points: Optional[torch.Tensor] = None  # B x P x 2, model-input pixels
    labels: Optional[torch.Tensor] = None  # B x P
    initial: bool = False  # decoded without memory (the object's first prompt there)
    from_prompt: bool = False  # memory binarises the mask, as SAM 2 does for clicks

    @property
    def pending(self):
        """A prompt frame whose memory is encoded lazily, once no more clicks can
        change it (when the stream moves on or catches up)."""
        return self.features is None and self.from_prompt

    def row(self, i):
        """The entry of row ``i`` alone (one object of a batch decoded together)."""
        def part(value):
            return value[i:i + 1] if isinstance(value, torch.Tensor) else value
        return MemoryEntry(**{f.name: part(getattr(self, f.name)) for f in fields(self)})


@dataclass
class ObjectMemory:
    """Conditioning frames and recent frames of one tracked object."""

    obj_id: int
    cond: Dict[int, MemoryEntry] = field(default_factory=dict)
    recent: Dict[int, MemoryEntry] = field(default_factory=dict)

    def entry(self, frame):
        return self.cond.get(frame) or self.recent.get(frame)

    def select(self, frame, num_maskmem, max_obj_ptrs):
        """SAM 2's memory selection for decoding ``frame`` (tracking forwards).

        Returns ``(spatial, pointers)``: ``[(entry, slot)]`` with slot 0 for conditioning
        frames and ``num_maskmem - k`` for frame - k; ``[(entry, offset)]`` of pointers.
        The entry on ``frame`` itself is never its own memory.
        """
        spatial = [(e, 0) for t, e in self.cond.items() if t != frame]
        for k in range(num_maskmem - 1, 0, -1):
            e = self.recent.get(frame - k)
            if e is not None and e.features is not None:
                spatial.append((e, num_maskmem - k))
        pointers = [(e, frame - t) for t, e in self.cond.items() if t < frame]
        for k in range(1, max_obj_ptrs):
            e = self.recent.get(frame - k)
            if e is not None:
                pointers.append((e, k))
        return spatial, pointers

    def set_prompt_entry(self, frame, entry):
        """A prompted frame becomes a conditioning frame (replacing what tracking left)."""
        self.recent.pop(frame, None)
        self.cond[frame] = entry

    def forget_tracked_after(self, frame):
        """Forget what tracking left after ``frame`` (a new prompt there makes it stale);
        prompted frames stay."""
        for t in [t for t in self.recent if t > frame]:
            del self.recent[t]

    def prune(self, ring_frames, num_maskmem, max_obj_ptrs, max_cond_frames):
        """Drop what no future decode can read. Only the frames of the ring (indices,
        ascending; the newest is the latest frame) can be decoded again, and decoding frame
        r reads memory features back to r - (num_maskmem - 1), pointers back to
        r - (max_obj_ptrs - 1), and the mask logits of r itself."""
        ring = set(ring_frames)

        def reads(t, window):  # some ring frame r has r - window < t <= r
            i = bisect.bisect_left(ring_frames, t)
            return i < len(ring_frames) and ring_frames[i] - t < window

        for t in list(self.recent):
            if not reads(t, max_obj_ptrs):
                del self.recent[t]
                continue
            entry = self.recent[t]
            if not reads(t, num_maskmem):
                entry.features = None
            if t not in ring:
                entry.low_res = None
        for t, entry in self.cond.items():
            if t not in ring:
                entry.low_res = entry.points = entry.labels = None
        if max_cond_frames and len(self.cond) > max_cond_frames:
            # Keep the first prompt (what the user meant the object to be) and the
            # most recent ones (how it looks now).
            frames = sorted(self.cond)
            for t in frames[1:len(frames) - max_cond_frames + 1]:
                del self.cond[t]


def memory_tokens(model, picks):
    """SAM 2's memory tokens for a group of objects that share a memory layout.

    ``picks``: one ``ObjectMemory.select`` result per object, in batch order; an entry's
    tensors may hold several rows (the training loop keeps a batch of clips in one bank).
    Returns ``model.assemble_memory``'s ``(memory, memory_pos, num_ptr_tokens)``.
    """
    device = model.device
    spatial = []
    for column in zip(*(s for s, _ in picks)):
        features = torch.cat([e.features for e, _ in column]).to(device).float()
        slots = torch.cat([torch.full((len(e.features),), slot, device=device)
                           for e, slot in column])
        spatial.append((features, slots))
    pointers = offsets = None
    if picks[0][1]:
        columns = list(zip(*(p for _, p in picks)))
        pointers = torch.stack([torch.cat([e.obj_ptr for e, _ in c]) for c in columns])
        offsets = torch.stack([torch.cat([torch.full((len(e.obj_ptr),), off, device=device)
                                          for e, off in c]) for c in columns])
    return model.assemble_memory(spatial, pointers, offsets)
