"""The FastAPI app: the HTTP job API (/v1), health probes and the page (/)."""

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .._lazy import require
from .. import spec
from ..errors import RequestLimitError, UsageError
from ..pipeline.options import REQUEST_FIELDS, ScoreOptions
from ..scoring import ScorerConfig
from .limits_check import check_header, limits_json
from .runner import Runner, remove_job_files
from .store import STATUSES, JobStore
from .uploads import MultipartToDisk, UploadRejected, display_name, server_suffix, sniff_not_video

log = logging.getLogger("dfserve.web")

STATIC = Path(__file__).parent / "static"
WEB_DEFAULTS = {"timeline": True}  # the page draws the timeline and the thumbnails come from it
DRAIN_LIMIT = 32 * 2**20  # bytes read and dropped after a refusal, so the client can read our answer


@dataclass
class WebSettings:
    data_dir: Path
    db: Optional[Path] = None
    workers: int = 1
    queue: int = 16
    retention_s: float = 7 * 86400
    token: Optional[str] = None
    config: ScorerConfig = field(default_factory=ScorerConfig)
    base_options: ScoreOptions = field(default_factory=ScoreOptions)
    first_scorer: object = None

    @property
    def uploads(self) -> Path:
        return Path(self.data_dir) / "uploads"

    @property
    def thumbs(self) -> Path:
        return Path(self.data_dir) / "thumbs"

    @property
    def db_path(self) -> Path:
        return Path(self.db) if self.db else Path(self.data_dir) / "jobs.sqlite3"


class ApiError(Exception):
    """An HTTP error answer: {"error": {"type", "message"[, "limit"]}}; `limit` names the request limit refused."""

    def __init__(self, status: int, kind: str, message: str, headers: Optional[dict] = None,
                 limit: Optional[str] = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers, self.limit = status, kind, message, headers or {}, limit


def _iso(t: Optional[float]) -> Optional[str]:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def options_from_form(form: dict, base: ScoreOptions) -> ScoreOptions:
    """Request options from multipart fields (`sample=...`, `timeline=true`, or one `options` JSON object)."""
    req = dict(WEB_DEFAULTS)
    if form.get("options", "").strip():
        parsed = json.loads(form["options"]) if form["options"].strip().startswith("{") else None
        if not isinstance(parsed, dict):
            raise UsageError(f"options: expected a JSON object, got {form['options'][:80]!r}")
        req.update(parsed)
    kinds = {f.name: f.type for f in fields(ScoreOptions)}
    for k, v in form.items():
        if k == "options" or v.strip() == "":
            continue
        v = v.strip()
        kind = kinds.get(k)
        if kind in ("bool", bool) and v.lower() in ("1", "true", "on", "yes", "0", "false", "off", "no"):
            req[k] = v.lower() in ("1", "true", "on", "yes")
        elif kind in ("int", int) and v.lstrip("-").isdigit():
            req[k] = int(v)
        else:
            req[k] = v
    ScoreOptions.from_json(req, allowed=REQUEST_FIELDS)  # names the bad key / value
    merged = base.to_dict()
    merged.update(req)
    return ScoreOptions.from_json(merged)


def create_app(settings: WebSettings):
    require("fastapi", "fastapi", "web")
    require("python_multipart", "python-multipart", "web")  # the streaming upload parser
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    s = settings
    for d in (s.uploads, s.thumbs):
        d.mkdir(parents=True, exist_ok=True)
    store = JobStore(s.db_path)
    runner = Runner(store, s.uploads, s.thumbs, s.config, s.base_options, workers=s.workers, queue_size=s.queue,
                    first_scorer=s.first_scorer)
    limits = s.config.limits
    max_bytes = limits.max_upload_bytes or 2**62  # 0: no limit
    model_id = getattr(s.first_scorer, "model_id", None)
    stop_cleaner = threading.Event()

    def cleanup_once() -> int:
        removed = 0
        for job in store.expired(time.time() - s.retention_s):
            store.delete(job["id"])
            remove_job_files(s.uploads, s.thumbs, job)
            removed += 1
        known, ids = store.uploads(), store.ids()
        for f in s.uploads.iterdir():  # leftovers: partial uploads of a killed server, files of deleted jobs
            if f.name not in known and time.time() - f.stat().st_mtime > 3600:
                f.unlink(missing_ok=True)
        for f in s.thumbs.iterdir():  # <job id>-<k>.jpg of a job deleted while it was running
            if f.name.rsplit("-", 1)[0] not in ids and time.time() - f.stat().st_mtime > 3600:
                f.unlink(missing_ok=True)
        return removed

    def cleaner():
        interval = min(60.0, max(1.0, s.retention_s / 4))
        while not stop_cleaner.wait(interval):
            try:
                n = cleanup_once()
                if n:
                    log.info("retention: removed %d job(s) older than %.0f s", n, s.retention_s)
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.exception("retention sweep failed")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        cleanup_once()
        runner.start()
        t = threading.Thread(target=cleaner, name="dfserve-web-retention", daemon=True)
        t.start()
        yield
        stop_cleaner.set()
        if runner.stop():
            store.close()
        else:  # a worker is still inside a video: leave the store open for it; its job is re-queued next start
            log.warning("stopping with a job still running; it will be re-run at the next start")

    # No /docs or /redoc: FastAPI's pages load Swagger/ReDoc from a CDN, and nothing here may need the internet.
    app = FastAPI(title="dfserve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Deepfake-video detection: upload a video, poll the job, read the verdict.")
    app.state.store, app.state.runner, app.state.settings = store, runner, s

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        body = {"type": exc.kind, "message": exc.message}
        if exc.limit:
            body["limit"] = exc.limit
        return JSONResponse({"error": body}, status_code=exc.status, headers=exc.headers)

    def auth(request: Request) -> None:
        if not s.token:
            return
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), s.token.encode()):
            raise ApiError(401, "Unauthorized", "this server needs `Authorization: Bearer <token>`",
                           {"WWW-Authenticate": "Bearer"})

    def job_or_404(job_id: str) -> dict:
        job = store.get(job_id) if len(job_id) < 100 else None
        if job is None:
            raise ApiError(404, "NotFound", "no such job (it may have been deleted or expired)")
        return job

    def view(job: dict, full: bool = True) -> dict:
        jid = job["id"]
        base = f"/v1/jobs/{jid}"
        opts = {k: v for k, v in (job["options"] or {}).items() if k in REQUEST_FIELDS}
        out = {"id": jid, "status": job["status"], "filename": job["filename"], "size_bytes": job["size_bytes"],
               "created": _iso(job["created"]), "started": _iso(job["started"]), "finished": _iso(job["finished"]),
               "options": opts}
        row = job["result"]
        if job["status"] == "running":
            done, expected = runner.progress(jid) or (0, None)
            out["progress"] = {"frames_done": done, "frames_expected": expected}
        elif row:  # progress counts sampled frames: the timeline has one entry per sampled frame
            n = len(row["timeline"]) if row.get("timeline") is not None else row.get("frames_scored")
            out["progress"] = {"frames_done": n, "frames_expected": n}
        else:
            out["progress"] = {"frames_done": 0, "frames_expected": None}
        if job["finished"]:
            out["latency_s"] = round(job["finished"] - job["created"], 3)
        if row is not None:
            out["result"] = {k: v for k, v in row.items() if k != "timeline"}  # timeline: its own route
        out["error"] = job["error"]
        if full:
            out["thumbnails"] = [{"index": t["index"], "p_fake": t["p_fake"], "box": t["box"],
                                  "url": f"{base}/thumbnails/{k}.jpg"} for k, t in enumerate(job["thumbs"] or [])]
            out["links"] = {"self": base, "timeline": f"{base}/timeline"}
        return out

    # ------------------------------------------------------------------------------------ routes
    @app.get("/healthz", tags=["health"])
    def healthz():
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz():
        """Models loaded and every worker running: ready to take jobs."""
        body = {"ready": runner.ready, "workers": runner.n_workers, "queued": runner.queued,
                "queue_size": runner.queue_size, "models_loaded": runner.models_loaded}
        return JSONResponse(body, status_code=200 if runner.ready else 503)

    @app.get("/v1/config", tags=["jobs"])
    def config(request: Request):
        """What the page needs to know: the upload limit, the per-request options and their defaults."""
        auth(request)
        d = s.base_options.to_dict()
        d.update(WEB_DEFAULTS)
        return {"max_upload_bytes": limits.max_upload_bytes, "limits": limits_json(limits),
                "request_fields": list(REQUEST_FIELDS),
                "defaults": {k: d[k] for k in REQUEST_FIELDS}, "workers": runner.n_workers,
                "queue_size": runner.queue_size, "retention_s": s.retention_s, "model": model_id,
                # evidence frames the page asks for (0 through Triton: explain needs the embedded scorer)
                "page_explain": 0 if s.config.server else spec.WEB_EXPLAIN_DEFAULT}

    async def drain(request: Request) -> None:
        if request.headers.get("expect", "").lower() == "100-continue":
            return  # the client has not sent the body: it reads our answer first
        n = 0
        try:
            async for chunk in request.stream():
                n += len(chunk)
                if n > DRAIN_LIMIT:
                    break
        except Exception:  # noqa: BLE001 - client gone: nothing to answer
            pass

    @app.post("/v1/jobs", status_code=202, tags=["jobs"],
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"], "properties": {
                      "file": {"type": "string", "format": "binary"},
                      "sample": {"type": "string", "example": "fps:5"},
                      "head": {"type": "string", "enum": ["mean", "last"]},
                      "faces": {"type": "string", "example": "largest"},
                      "colors": {"type": "string", "enum": ["seed", "stream"]},
                      "no_face": {"type": "string", "enum": ["skip", "frame"]},
                      "timeline": {"type": "boolean"}, "chunk": {"type": "integer"},
                      "explain": {"type": "integer", "description": "evidence frames (crops as base64 PNG, heat)"},
                      "options": {"type": "string", "description": "the same options as one JSON object"}}}}}}})
    async def submit(request: Request):
        """Upload a video (multipart `file`) with options; 202 + Location of the job.

        413 when larger than the limit, 415 when it is surely not a video, 422 for bad options or an
        empty file, 503 + Retry-After when the queue is full.
        """
        from starlette.requests import ClientDisconnect

        auth(request)
        cl = request.headers.get("content-length")
        if cl and cl.isdigit() and int(cl) > max_bytes + 1_000_000:
            await drain(request)
            raise ApiError(413, "UploadTooLarge", f"the upload is larger than the limit of {max_bytes} bytes "
                           f"(max_upload_bytes)", limit=spec.LIMIT_UPLOAD_BYTES.param)
        if not runner.try_reserve():
            await drain(request)
            raise ApiError(503, "QueueFull", f"the queue is full ({runner.queue_size} jobs waiting); retry later",
                           {"Retry-After": str(runner.retry_after())})
        job_id = secrets.token_urlsafe(18)
        part = s.uploads / f"{job_id}.part"
        enqueued = False
        try:
            try:
                up = MultipartToDisk(request.headers.get("content-type", ""), part, max_bytes)
            except UploadRejected as exc:
                await drain(request)
                raise ApiError(exc.status, exc.kind, exc.message) from None
            try:
                async for chunk in request.stream():
                    up.feed(chunk)
                up.finish()
            except UploadRejected as exc:
                await drain(request)
                raise ApiError(exc.status, exc.kind, exc.message, limit=exc.limit) from None
            except ClientDisconnect:
                raise ApiError(400, "UploadIncomplete", "the client went away before the upload finished") from None
            except ValueError as exc:  # malformed multipart
                raise ApiError(400, "BadRequest", f"malformed multipart body ({exc})") from None
            finally:
                up.close()
            if not up.got_file:
                raise ApiError(422, "UsageError", "no `file` field: send the video as multipart field `file`")
            name = display_name(up.filename)
            try:
                opts = options_from_form(up.fields, s.base_options)
                if opts.explain and s.config.server:
                    raise UsageError("explain: evidence frames are computed by the embedded scorer; this server "
                                     "scores through Triton (--server): send explain=0")
            except (UsageError, ValueError) as exc:
                raise ApiError(422, "UsageError", str(exc)) from None
            if up.size == 0:
                raise ApiError(422, "VideoError", f"{name}: empty file (0 bytes)")
            what = sniff_not_video(up.head)
            if what:
                raise ApiError(415, "VideoError", f"{name}: not a video (this looks like {what})")
            upload = f"{job_id}{server_suffix(name)}"
            os.replace(part, s.uploads / upload)
            try:  # what the header says is over a limit is refused now, before a worker decodes anything
                await run_in_threadpool(check_header, limits, s.uploads / upload, name)
            except RequestLimitError as exc:
                (s.uploads / upload).unlink(missing_ok=True)
                raise ApiError(422, "RequestLimitError", str(exc), limit=exc.limit) from None
            store.add(job_id, name, upload, up.size, opts.to_json())
            runner.enqueue(job_id)
            enqueued = True
        finally:
            if not enqueued:
                runner.release()
                part.unlink(missing_ok=True)
        job = store.get(job_id)
        return JSONResponse(view(job), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(request: Request, limit: int = 20, status: Optional[str] = None):
        """Recent jobs, newest first (no timelines)."""
        auth(request)
        if status is not None and status not in STATUSES:
            raise ApiError(422, "UsageError", f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        limit = max(1, min(int(limit), 200))
        return {"jobs": [view(j, full=False) for j in store.recent(limit, status)],
                "queued": runner.queued, "queue_size": runner.queue_size}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, request: Request):
        """Status (queued|running|done|failed), progress, and the `dfserve score` row when finished."""
        auth(request)
        return view(job_or_404(job_id))

    @app.get("/v1/jobs/{job_id}/timeline", tags=["jobs"])
    def get_timeline(job_id: str, request: Request):
        """Per-frame [index, p_fake or null (no face), box or null]."""
        auth(request)
        job = job_or_404(job_id)
        if job["status"] in ("queued", "running"):
            raise ApiError(409, "NotFinished", f"the job is {job['status']}; the timeline comes when it is done")
        row = job["result"] or {}
        if not row.get("timeline"):
            raise ApiError(404, "NoTimeline", "the job failed before any frame was decoded: no timeline"
                           if job["error"] else "this job was run with timeline=false")
        return {"id": job_id, "fps": row.get("fps"), "frames_decoded": row.get("frames_decoded"),
                "timeline": row["timeline"]}

    @app.get("/v1/jobs/{job_id}/thumbnails/{k}.jpg", tags=["jobs"], response_class=Response)
    def get_thumb(job_id: str, k: int, request: Request):
        """A face thumbnail (JPEG) with the detected box drawn."""
        auth(request)
        thumbs = job_or_404(job_id)["thumbs"] or []
        if not 0 <= k < len(thumbs):
            raise ApiError(404, "NotFound", "no such thumbnail")
        return FileResponse(s.thumbs / thumbs[k]["file"], media_type="image/jpeg")

    @app.delete("/v1/jobs/{job_id}", status_code=204, tags=["jobs"])
    def delete_job(job_id: str, request: Request):
        """Remove the job, its upload and thumbnails (a running job's result is dropped when it ends)."""
        auth(request)
        job = job_or_404(job_id)
        store.delete(job_id)
        if job["status"] == "queued":
            runner.cancel_queued(job_id)
        remove_job_files(s.uploads, s.thumbs, job)
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.state.cleanup_once = cleanup_once
    return app
