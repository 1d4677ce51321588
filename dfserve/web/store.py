"""The job store: one SQLite table, safe to share between the event loop and the worker threads.

A job row keeps what the API returns (status, display name, options, the `dfserve score` row, the
thumbnails made from it) and the server-side name of its upload. Nothing in it is a client path.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import List, Optional

STATUSES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    filename    TEXT NOT NULL,      -- the client's name, sanitized, display only
    upload      TEXT NOT NULL,      -- server-generated file name under <data dir>/uploads
    size_bytes  INTEGER NOT NULL,
    options     TEXT NOT NULL,      -- ScoreOptions.to_json()
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT,               -- the dfserve score row (JSON), timeline included
    error       TEXT,               -- {"type", "message"} (JSON)
    thumbs      TEXT                -- [{"index", "p_fake", "box", "file"}] (JSON)
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
"""


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args=()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # ------------------------------------------------------------------------------------ writes
    def add(self, job_id: str, filename: str, upload: str, size: int, options_json: str) -> None:
        self._exec("INSERT INTO jobs (id, status, filename, upload, size_bytes, options, created) "
                   "VALUES (?, 'queued', ?, ?, ?, ?, ?)", (job_id, filename, upload, size, options_json, time.time()))

    def mark_running(self, job_id: str) -> bool:
        cur = self._exec("UPDATE jobs SET status='running', started=?, attempts=attempts+1 "
                         "WHERE id=? AND status='queued'", (time.time(), job_id))
        return cur.rowcount == 1

    def finish(self, job_id: str, status: str, result: Optional[dict], error: Optional[dict],
               thumbs: Optional[list] = None) -> bool:
        cur = self._exec("UPDATE jobs SET status=?, finished=?, result=?, error=?, thumbs=? WHERE id=?",
                         (status, time.time(), None if result is None else json.dumps(result),
                          None if error is None else json.dumps(error),
                          None if thumbs is None else json.dumps(thumbs), job_id))
        return cur.rowcount == 1

    def requeue_running(self, max_attempts: int = 3) -> List[str]:
        """After a restart: jobs left `running` go back to `queued`; returns every queued id, oldest first.

        A job that was running when the server died `max_attempts` times fails instead (a poison upload
        must not take the server down forever).
        """
        err = json.dumps({"type": "InternalError", "message": f"the server stopped {max_attempts} times while "
                                                              "scoring this job; not retried"})
        self._exec("UPDATE jobs SET status='failed', finished=?, error=? WHERE status='running' AND attempts>=?",
                   (time.time(), err, max_attempts))
        self._exec("UPDATE jobs SET status='queued', started=NULL WHERE status='running'")
        return [r["id"] for r in self._exec("SELECT id FROM jobs WHERE status='queued' ORDER BY created")]

    def delete(self, job_id: str) -> Optional[dict]:
        job = self.get(job_id)
        if job is not None:
            self._exec("DELETE FROM jobs WHERE id=?", (job_id,))
        return job

    # ------------------------------------------------------------------------------------- reads
    def get(self, job_id: str) -> Optional[dict]:
        row = self._exec("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _decode(row) if row else None

    def recent(self, limit: int = 20, status: Optional[str] = None) -> List[dict]:
        if status:
            rows = self._exec("SELECT * FROM jobs WHERE status=? ORDER BY created DESC LIMIT ?", (status, limit))
        else:
            rows = self._exec("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        return [_decode(r) for r in rows.fetchall()]

    def expired(self, before: float) -> List[dict]:
        """Finished jobs (done/failed) that finished before `before`."""
        rows = self._exec("SELECT * FROM jobs WHERE status IN ('done', 'failed') AND finished < ?", (before,))
        return [_decode(r) for r in rows.fetchall()]

    def uploads(self) -> set:
        return {r["upload"] for r in self._exec("SELECT upload FROM jobs").fetchall()}

    def ids(self) -> set:
        return {r["id"] for r in self._exec("SELECT id FROM jobs").fetchall()}

    def count(self, status: Optional[str] = None) -> int:
        if status:
            return self._exec("SELECT COUNT(*) FROM jobs WHERE status=?", (status,)).fetchone()[0]
        return self._exec("SELECT COUNT(*) FROM jobs").fetchone()[0]


def _decode(row: sqlite3.Row) -> dict:
    d = dict(row)
    for k in ("options", "result", "error", "thumbs"):
        if d.get(k) is not None:
            d[k] = json.loads(d[k])
    return d
