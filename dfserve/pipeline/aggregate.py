"""Per-video aggregation of per-frame logits (numpy only; used by every runtime and the server).

Head `mean` (the training notebook's): linear1(mean_t h_t) == mean_t linear1(h_t), so the verdict is
an exact running mean of per-frame logits, order-free and streamable. Head `last` (the Django
app's): the logits of the last scored frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import spec


@dataclass
class Verdict:
    logits: np.ndarray  # [2]
    probs: np.ndarray  # [2] softmax
    label: str  # "FAKE" | "REAL"
    confidence: float  # max probability x 100, as the seed app showed it

    @property
    def p_fake(self) -> float:
        return float(self.probs[spec.CLASS_FAKE])


def verdict_from_logits(logits) -> Verdict:
    z = np.asarray(logits, dtype=np.float64).reshape(spec.NUM_CLASSES)
    e = np.exp(z - z.max())
    p = e / e.sum()
    k = int(np.argmax(p))
    return Verdict(z.astype(np.float32), p, spec.CLASS_NAMES[k], float(p[k] * 100.0))


def p_fake_per_frame(logits: np.ndarray) -> np.ndarray:
    """Per-frame softmax probability of FAKE for logits [N, 2]."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, spec.CLASS_FAKE] / e.sum(axis=1)


class VideoAggregate:
    """Running state of one video: sum of logits (float64), count, last logits."""

    __slots__ = ("head", "total", "count", "last", "last_index")

    def __init__(self, head: str = spec.DEFAULT_HEAD):
        if head not in spec.HEADS:
            raise ValueError(f"head must be one of {spec.HEADS}, got {head!r}")
        self.head = head
        self.total = np.zeros(spec.NUM_CLASSES, np.float64)
        self.count = 0
        self.last = None
        self.last_index = -1

    def add(self, logits: np.ndarray, indices=None) -> None:
        """Add per-frame logits [n, 2]; `indices` (frame numbers) decide which frame is last."""
        logits = np.asarray(logits, dtype=np.float64).reshape(-1, spec.NUM_CLASSES)
        if logits.shape[0] == 0:
            return
        self.total += logits.sum(axis=0)
        self.count += logits.shape[0]
        if indices is None:
            self.last = logits[-1].copy()
            self.last_index += logits.shape[0]
        else:
            k = int(np.argmax(indices))
            if int(indices[k]) >= self.last_index:
                self.last_index = int(indices[k])
                self.last = logits[k].copy()

    def verdict(self) -> Verdict | None:
        if self.count == 0:
            return None
        z = self.total / self.count if self.head == "mean" else self.last
        return verdict_from_logits(z)
