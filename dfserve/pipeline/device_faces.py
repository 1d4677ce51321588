"""Face location on the frames' device, batched over a whole chunk: the torch hot path's detect stage.

Detector outputs [B,A,...] -> anchors above the threshold -> boxes decoded -> non-maximum suppression of all
images at once (`torchvision.ops.batched_nms` with the image index as the group, or the same greedy rule in
plain torch where torchvision is not installed) -> boxes in the seed's convention (`box_convention`) ->
the faces scored per image (the largest, or all largest first) — with no Python loop over frames or faces
and nothing copied to the host but the final boxes (one small copy per chunk). It gives what the CPU
path's `detection.detections` + `choose_face` / `all_faces` give on the same detector outputs
(tests/test_device_faces.py).
"""
from __future__ import annotations

import logging
from typing import List, Optional

from .. import spec

log = logging.getLogger(__name__)


def _torchvision_nms():
    """torchvision.ops.batched_nms where torchvision imports (the GPU machines), else None."""
    try:
        from torchvision.ops import batched_nms
    except Exception:  # noqa: BLE001 - absent, or a wheel built for another torch: the plain torch rule is used
        return None
    return batched_nms


_TV = None  # cached: torchvision's batched_nms, or False where it does not import


def batched_nms(boxes, scores, groups, iou: float = spec.DETECTOR_NMS_IOU, use_torchvision: Optional[bool] = None):
    """Greedy NMS within each group (the image index), every group at once -> kept indices, by descending score.

    A box is dropped when its IoU with a kept, higher-scoring box of its group is above `iou`: the rule of
    `detection.nms` and of torchvision's batched_nms (used when installed, unless `use_torchvision` is False)."""
    global _TV
    import torch

    if use_torchvision is not False:
        if _TV is None:
            _TV = _torchvision_nms() or False
        if _TV:
            return _TV(boxes, scores, groups, iou)
        if use_torchvision:
            raise RuntimeError("torchvision.ops.batched_nms is not available here")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b, g = boxes[order], groups[order]
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    ious = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)
    # suppresses[j, i]: j comes before i (higher score), same image, overlapping
    earlier = torch.ones(n, n, dtype=torch.bool, device=boxes.device).triu(1)
    sup = (ious > iou) & (g[:, None] == g[None, :]) & earlier
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    # the greedy rule is the fixed point of keep[i] = no kept j < i suppresses i; iterating from "keep all",
    # after k rounds the first k entries are final: a few rounds in practice (chains of suppression are short)
    for _ in range(n):
        new = ~(sup & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


def locate(loc, scores, priors, height: int, width: int, scale: float,
           threshold: float = spec.DETECTOR_SCORE_THRESHOLD, iou: float = spec.DETECTOR_NMS_IOU,
           box: str = spec.DEFAULT_BOX, min_face: float = spec.DETECTOR_MIN_FACE, mode: str = "largest",
           limit: int = spec.MAX_FACES_PER_FRAME, use_torchvision: Optional[bool] = None, landmarks=None):
    """Detector outputs of one batch (detector input height x width, frames `scale` times that; `landmarks`
    [B,A,10], which the seed convention needs) -> faces.

    Returns rows [M,6] on the device: (image, score, x1, y1, x2, y2) in frame pixels and convention `box`,
    ordered by image, then largest first (ties: higher score); `largest` keeps one row per image with a
    face, `all` at most `limit`. Everything stays on the device."""
    import torch

    from .box_convention import check_box_convention, in_convention
    from .detection import decode_boxes, decode_landmarks

    check_box_convention(box)
    nz = torch.nonzero(scores > threshold)
    img, a = nz[:, 0], nz[:, 1]
    sc = scores[img, a]
    boxes = decode_boxes(loc[img, a], priors[a], height, width)
    keep = batched_nms(boxes, sc, img, iou, use_torchvision)
    img, sc, boxes = img[keep], sc[keep], boxes[keep] / scale
    pts = None
    if landmarks is not None:
        pts = decode_landmarks(landmarks[img, a[keep]].float(), priors[a[keep]], height, width) / scale
    boxes = in_convention(boxes, box, (height / scale, width / scale), pts)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = torch.minimum(w, h) >= min_face
    img, sc, boxes = img[ok], sc[ok], boxes[ok]
    area = w[ok].clamp(min=0) * h[ok].clamp(min=0)
    # order: image ascending, then area descending, then score descending (stable sorts, least key first)
    o = torch.argsort(sc, descending=True, stable=True)
    o = o[torch.argsort(area[o], descending=True, stable=True)]
    o = o[torch.argsort(img[o], stable=True)]
    img, sc, boxes = img[o], sc[o], boxes[o]
    if img.numel():
        first = torch.ones_like(img, dtype=torch.bool)
        first[1:] = img[1:] != img[:-1]
        start = torch.cummax(torch.where(first, torch.arange(img.numel(), device=img.device), 0), 0).values
        rank = torch.arange(img.numel(), device=img.device) - start
        sel = rank < (1 if mode != "all" else limit)
        img, sc, boxes = img[sel], sc[sel], boxes[sel]
    return torch.cat([img.to(boxes.dtype).unsqueeze(1), sc.unsqueeze(1), boxes], 1)


def to_detections(rows, n_images: int) -> List[list]:
    """Rows from `locate` (one device-to-host copy) -> per image, a list of `detection.Detection`."""
    import numpy as np

    from .detection import Detection

    r = rows.detach().cpu().numpy()
    out: List[list] = [[] for _ in range(n_images)]
    img = r[:, 0].astype(np.int64)
    for i, s, b in zip(img.tolist(), r[:, 1].tolist(), r[:, 2:6]):
        out[i].append(Detection(b.astype(np.float32), float(s)))
    return out


_PRIORS: dict = {}


def priors_on(device, height: int, width: int):
    """The detector's anchors for an input of height x width, as a tensor on `device` (cached)."""
    import torch

    from .detection import anchors

    key = (str(device), height, width)
    if key not in _PRIORS:
        _PRIORS[key] = torch.tensor(anchors(height, width), device=device)
    return _PRIORS[key]


def faces_of_chunk(frames, loc, scores, max_side: int = spec.DETECTOR_MAX_SIDE,
                   threshold: float = spec.DETECTOR_SCORE_THRESHOLD, box: str = spec.DEFAULT_BOX,
                   margin: float = 0.0, landmarks=None):
    """Triton's face_crop on tensors (the gpu flavor): frames uint8 [B,H,W,3] and the detector's outputs for
    them (loc, scores, landmarks), on one device -> (faces float32 [B,3,112,112] on the device, boxes float32 [B,4] numpy, has_face
    [B] numpy). The detect stage of `locate` (no per-frame loop, one host copy of the chosen boxes) and the
    exact crop of `runtimes.torch_rt.crop_resize`: what `faces.faces_for_classifier` gives on the host."""
    import numpy as np
    import torch

    from .faces import detector_size
    from .runtimes.torch_rt import crop_resize

    n = frames.shape[0]
    if not (loc.shape[0] == scores.shape[0] == n):
        raise ValueError(f"{n} frames but detections for {loc.shape[0]} / {scores.shape[0]}")
    loc, scores = loc.float(), scores.float()
    if landmarks is not None:
        landmarks = landmarks.float()
        if landmarks.shape[0] != n or not torch.isfinite(landmarks).all():
            raise ValueError(f"{n} frames but landmarks {tuple(landmarks.shape)}, or NaN / infinity in them")
    if not (torch.isfinite(loc).all() and torch.isfinite(scores).all()):
        raise ValueError("detector outputs contain NaN or infinity")
    h, w, scale = detector_size(frames.shape[1], frames.shape[2], max_side)
    rows = locate(loc, scores, priors_on(loc.device, h, w), h, w, scale, threshold, box=box, landmarks=landmarks)
    chosen = to_detections(rows, n)
    boxes_l = [c[0].box if c else None for c in chosen]
    faces = crop_resize(frames, boxes_l, margin)
    boxes = np.stack([b if b is not None else np.zeros(4, np.float32) for b in boxes_l]).astype(np.float32)
    return faces, boxes, np.array([b is not None for b in boxes_l])
