"""Result rows: JSON Lines output flushed per video, `--resume`, and the end-of-run summary table."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import IO, Iterable, List, Optional, Set

log = logging.getLogger(__name__)


def path_key(path: str) -> str:
    """The identity of a video across runs: its absolute, normalised path."""
    return os.path.normcase(os.path.abspath(path))


def read_done(out: Path) -> Set[str]:
    """Paths already in a JSONL output. A torn last line (killed mid-write) is cut off the file."""
    done: Set[str] = set()
    if not out.exists():
        return done
    data = out.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):
        log.warning("%s: dropping an incomplete last line left by an interrupted run", out)
        with open(out, "r+b") as f:
            f.truncate(good_end)
        data = data[:good_end]
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            path = os.fsdecode(bytes.fromhex(row["path_bytes_hex"])) if row.get("path_bytes_hex") else row["path"]
            done.add(path_key(path))
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: not a result row, ignored", out, n)
    return done


def row_json(row: dict) -> str:
    """One row as a JSON line. A path that is not valid UTF-8 (a file name's raw bytes, which Python keeps
    as surrogate escapes) is written losslessly: JSON-escaped, with its raw bytes in `path_bytes_hex`, so
    the row is never lost and `--resume` finds it again."""
    try:
        return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:
        row = dict(row, path_bytes_hex=os.fsencode(row["path"]).hex())
        if isinstance(row.get("error"), dict):
            row["error"] = dict(row["error"], message=row["error"]["message"].encode("utf-8", "backslashreplace")
                                .decode("utf-8"))
        return json.dumps(row, separators=(",", ":"), ensure_ascii=True)


class RowWriter:
    """Writes one JSON object per line and flushes (and fsyncs) after each, so a kill loses nothing."""

    def __init__(self, out: Optional[Path], append: bool):
        self.out = out
        self._f: Optional[IO[str]] = None
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(out, "a" if append else "w", encoding="utf-8")

    def write(self, row: dict) -> None:
        line = row_json(row)
        if self._f is None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            return
        self._f.write(line + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def summary_table(rows: Iterable[dict], width: int = 44) -> str:
    rows = list(rows)
    head = f"{'video':{width}s} {'label':5s} {'p_fake':>7s} {'conf%':>6s} {'scored':>7s} {'faces':>6s} {'decoded':>8s}  error"
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["path"]
        if len(name) > width:
            name = "..." + name[-(width - 3):]
        err = r.get("error") or {}
        p = "" if r.get("p_fake") is None else f"{r['p_fake']:.4f}"
        c = "" if r.get("confidence") is None else f"{r['confidence']:.1f}"
        msg = f"{err.get('type', '')}: {err.get('message', '')}" if err else (r.get("warning") or "")
        if len(msg) > 70:
            msg = msg[:67] + "..."
        lines.append(f"{name:{width}s} {str(r.get('label') or '-'):5s} {p:>7s} {c:>6s} {r.get('frames_scored', 0):>7d} "
                     f"{r.get('frames_with_face', 0):>6d} {r.get('frames_decoded', 0):>8d}  {msg}")
    n_err = sum(1 for r in rows if r.get("error"))
    n_fake = sum(1 for r in rows if r.get("label") == "FAKE")
    n_real = sum(1 for r in rows if r.get("label") == "REAL")
    lines.append(f"{len(rows)} videos: {n_fake} FAKE, {n_real} REAL, {n_err} without a verdict")
    return "\n".join(lines)


def load_rows(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def public_row(row: dict, server_path: str, display: str) -> dict:
    """The row as a server shows it (web API, Triton's deepfake_video): the client's display name instead of the
    server's upload path, in the path and in any error or warning."""
    row = dict(row)
    row["path"] = display
    err = row.get("error")
    if err and isinstance(err.get("message"), str):
        row["error"] = dict(err, message=err["message"].replace(server_path, display))
    if isinstance(row.get("warning"), str):
        row["warning"] = row["warning"].replace(server_path, display)
    return row
