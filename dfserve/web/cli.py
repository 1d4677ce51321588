"""`dfserve web`: the page and the HTTP job API, served by uvicorn."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from .._lazy import require
from ..errors import UsageError

log = logging.getLogger("dfserve.web")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`3600`, `90s`, `30m`, `24h`, `7d`, `2w` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--retention {text!r}: expected a positive duration such as 3600, 30m, 24h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def default_data_dir() -> Path:
    return Path(os.environ.get("DFSERVE_CACHE", "~/.cache/dfserve")).expanduser() / "web"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    src = p.add_argument_group("model")
    src.add_argument("--models", type=Path, help="folder made by `dfserve export`")
    src.add_argument("--checkpoint", type=Path, help="seed checkpoint, exported on first use into the cache")
    src.add_argument("--server", metavar="HOST:PORT", help="score through a dfserve Triton server (gRPC)")
    from ..models import runtime_choices  # the same choices as `dfserve score --runtime` (commands.add_score_options)
    from ..pipeline.precisions import PRECISIONS

    src.add_argument("--runtime", choices=runtime_choices(), default="auto",
                     help="auto (default): onnxruntime at fp32 on the CPU (lean: bounded memory, web/memory.py), "
                          "torch on cuda; openvino or onnxruntime or torch by name")
    src.add_argument("--precision", choices=PRECISIONS, default="fp32",
                     help="classifier precision, as `dfserve score --precision`: fp32 (exact, default), bf16 "
                          "(openvino), int8 (a variant written by `dfserve export --precision int8`)")
    src.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N] with --runtime torch")
    src.add_argument("--threads", type=int, default=0, help="CPU threads per scorer (0: all cores)")
    st = p.add_argument_group("jobs")
    st.add_argument("--data-dir", type=Path, default=None,
                    help=f"uploads, thumbnails and the job database (default {default_data_dir()})")
    st.add_argument("--db", type=Path, help="SQLite job database (default DATA_DIR/jobs.sqlite3)")
    st.add_argument("--max-upload-mb", type=float, default=None,
                    help="shorthand for --max-upload-bytes in MiB (2**20 bytes); larger uploads get 413 (default 500)")
    st.add_argument("--workers", type=int, default=1, help="jobs scored at once (default 1; each loads the models)")
    st.add_argument("--queue", type=int, default=16, help="jobs waiting beyond that get 503 + Retry-After (default 16)")
    st.add_argument("--retention", default="7d", help="uploads and results older than this are removed (default 7d)")
    st.add_argument("--token", help="require `Authorization: Bearer TOKEN` on the API (default: $DFSERVE_WEB_TOKEN)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    from ..pipeline.limits import add_arguments as add_limits

    add_limits(p, "server")  # per-upload limits: over one, 413 (bytes) or 422 / a failed job naming the limit


def web_limits(args):
    """The server's limits (flag > environment > --limits file > default); --max-upload-mb is --max-upload-bytes."""
    from ..pipeline.limits import from_args

    if args.max_upload_mb is not None:
        if args.max_upload_mb <= 0:
            raise UsageError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
        if args.max_upload_bytes is None:
            args.max_upload_bytes = int(args.max_upload_mb * 2**20)
    return from_args(args, "server")


def run(args) -> int:
    uvicorn = require("uvicorn", "uvicorn", "web")
    from ..pipeline.options import ScoreOptions
    from ..scoring import ScorerConfig, make_scorer
    from .app import WebSettings, create_app

    if args.workers < 1 or args.queue < 1:
        raise UsageError("--workers and --queue must be at least 1")
    if not args.models and not args.checkpoint and not args.server:
        raise UsageError("no model: pass --models DIR (from `dfserve export`), --checkpoint CKPT or --server HOST:PORT")
    token = args.token or os.environ.get("DFSERVE_WEB_TOKEN") or None
    config = ScorerConfig.from_args(args)
    config.limits = web_limits(args)
    config.lean = True  # bounded memory: onnxruntime without memory patterns, released when idle (web/memory.py)
    base = ScoreOptions()
    from .memory import setup as memory_setup

    memory_setup()  # before any thread that allocates: the malloc arena cap (web/memory.py)
    first = make_scorer(base, config)  # fails here, before binding, on bad model files
    data_dir = (args.data_dir or default_data_dir()).expanduser()
    settings = WebSettings(data_dir=data_dir, db=args.db, workers=args.workers,
                           queue=args.queue, retention_s=parse_duration(args.retention), token=token, config=config,
                           base_options=base, first_scorer=first)
    app = create_app(settings)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        log.warning("listening on %s without --token: anyone who can reach it can upload videos", args.host)
    print(f"dfserve web: http://{args.host}:{args.port}/ (API /v1/jobs, OpenAPI /openapi.json), data in {data_dir}"
          + (", token required" if token else ""), file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5,
                access_log=args.log_level == "debug")
    return 0
