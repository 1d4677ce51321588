"""Linking faces into tracks across sampled frames: greedy IoU matching with a gap tolerance.

Small on purpose (the detector already gives one box per face): each new frame's boxes are matched
by descending IoU to where the live tracks are expected (last box moved by the track's last
per-frame motion, so a face missed for a frame or two is picked up again); a box that matches none
starts a track; a track that finds no box for more than `max_gap` sampled frames ends. Frames must
be given in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np

from .. import spec


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N,4] with every box in b [M,4] (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass
class _Track:
    id: int
    box: np.ndarray
    last_step: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per sampled frame

    def expected(self, step: int) -> np.ndarray:
        return self.box + self.velocity * (step - self.last_step)

    def see(self, box, step: int) -> None:
        box = np.asarray(box[:4], np.float64)
        self.velocity = (box - self.box) / max(step - self.last_step, 1)
        self.box, self.last_step = box, step


@dataclass
class IoUTracker:
    min_iou: float = spec.TRACK_MIN_IOU
    max_gap: int = spec.TRACK_MAX_GAP  # sampled frames a track may miss and still continue
    _live: List[_Track] = field(default_factory=list)
    _step: int = -1
    _next_id: int = 0

    def update(self, boxes: Sequence[np.ndarray]) -> List[int]:
        """Boxes of the next sampled frame -> their track ids (same order)."""
        self._step += 1
        self._live = [t for t in self._live if self._step - t.last_step <= self.max_gap + 1]
        ids = [-1] * len(boxes)
        if len(boxes) and self._live:
            iou = iou_matrix(np.stack([np.asarray(b[:4]) for b in boxes]),
                             np.stack([t.expected(self._step) for t in self._live]))
            order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
            used_b, used_t = set(), set()
            for bi, ti in order:
                if iou[bi, ti] < self.min_iou:
                    break
                if bi in used_b or ti in used_t:
                    continue
                used_b.add(bi)
                used_t.add(ti)
                t = self._live[ti]
                t.see(boxes[bi], self._step)
                ids[bi] = t.id
        for bi, b in enumerate(boxes):
            if ids[bi] < 0:
                t = _Track(self._next_id, np.asarray(b[:4], np.float64), self._step)
                self._next_id += 1
                self._live.append(t)
                ids[bi] = t.id
        return ids
