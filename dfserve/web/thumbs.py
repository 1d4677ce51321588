"""A few JPEG face thumbnails per job, cut from the upload at the timeline's box positions."""
from __future__ import annotations

from pathlib import Path
from typing import List

MAX_THUMBS = 8
THUMB_SIDE = 160  # pixels, longer side
CONTEXT = 0.35  # extra context around the box, as a fraction of its size


def pick_frames(timeline: list, n: int = MAX_THUMBS) -> list:
    """Up to `n` timeline entries with a face box, spread evenly over the video."""
    with_box = [t for t in timeline if t[2] is not None]
    if len(with_box) <= n:
        return with_box
    step = (len(with_box) - 1) / (n - 1)
    return [with_box[round(k * step)] for k in range(n)]


def make_thumbnails(video: str, timeline: list, out_dir: Path, job_id: str, n: int = MAX_THUMBS) -> List[dict]:
    """Decode the video up to the last picked frame; save crops with the box drawn as <job_id>-<k>.jpg."""
    import av
    from PIL import Image, ImageDraw

    picks = pick_frames(timeline, n)
    if not picks:
        return []
    want = {int(t[0]): t for t in picks}
    last = max(want)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    thumbs = []
    with av.open(video) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(vs)):
            if i in want:
                idx, p_fake, box = want[i]
                img = frame.to_image()  # RGB
                x1, y1, x2, y2 = (float(v) for v in box)
                bw, bh = x2 - x1, y2 - y1
                cx1, cy1 = max(0, int(x1 - CONTEXT * bw)), max(0, int(y1 - CONTEXT * bh))
                cx2, cy2 = min(img.width, int(x2 + CONTEXT * bw)), min(img.height, int(y2 + CONTEXT * bh))
                crop = img.crop((cx1, cy1, cx2, cy2))
                scale = THUMB_SIDE / max(crop.width, crop.height, 1)
                crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))
                draw = ImageDraw.Draw(crop)
                draw.rectangle([(x1 - cx1) * scale, (y1 - cy1) * scale, (x2 - cx1) * scale, (y2 - cy1) * scale],
                               outline=(255, 64, 64) if (p_fake or 0) >= 0.5 else (64, 200, 90), width=2)
                name = f"{job_id}-{len(thumbs)}.jpg"
                crop.save(out_dir / name, "JPEG", quality=80)
                thumbs.append({"index": idx, "p_fake": p_fake, "box": box, "file": name})
            if i >= last:
                break
    return thumbs
