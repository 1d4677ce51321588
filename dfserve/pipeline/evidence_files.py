"""`--explain` crops as PNG files beside `--out`: `<out stem>.evidence/<safe video stem>-<frame>.png`.

File names are derived from the video's name, never a path taken from it: the stem is reduced to
letters, digits, `.`, `-`, `_` (at most 80), and two different videos whose stems reduce alike get the
second one's path hash appended. Files are opened without following a symlink already at that name.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from typing import Dict

from .. import spec

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(video_path: str, limit: int = 80) -> str:
    """A file-name stem from a video's name: no separators, no leading dots, never empty."""
    name = re.split(r"[\\/]", str(video_path))[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    stem = _UNSAFE.sub("_", stem).strip("._-")[:limit]
    return stem or "video"


def evidence_dir(out: Path) -> Path:
    return out.parent / (out.stem + spec.EVIDENCE_DIR_SUFFIX)


class EvidenceFiles:
    """Moves each row's evidence PNGs (base64) into files beside the JSON Lines output."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = evidence_dir(self.out)
        self._stems: Dict[str, str] = {}  # safe stem -> the video path that owns it in this run

    def stem_for(self, video_path: str) -> str:
        stem = safe_stem(video_path)
        owner = self._stems.setdefault(stem, video_path)
        if owner != video_path:
            stem = f"{stem}~{hashlib.sha256(os.fsencode(video_path)).hexdigest()[:8]}"
            self._stems.setdefault(stem, video_path)
        return stem

    def externalize(self, row: dict) -> dict:
        """The row with each evidence entry's `png_base64` written to a file and replaced by `png` (its path
        relative to the output file's folder)."""
        ev = row.get("evidence")
        if not ev:
            return row
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = self.stem_for(row["path"])
        entries = []
        for e in ev:
            name = f"{stem}-{int(e['frame'])}" + (f"-t{int(e['track'])}" if e.get("track") is not None else "") + ".png"
            _write_no_follow(self.dir / name, base64.b64decode(e["png_base64"]))
            rel = f"{self.dir.name}/{name}"
            entries.append({("png" if k == "png_base64" else k): (rel if k == "png_base64" else v) for k, v in e.items()})
        return dict(row, evidence=entries)


def _write_no_follow(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
