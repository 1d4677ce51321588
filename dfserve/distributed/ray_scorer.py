"""`RayScorer`: the pipeline's Scorer, one per Ray actor, fed video paths by the driver.

It has the local scorer's interface (`score(paths) -> Iterator[row]`, `model_id`), so
`dfserve.scoring.score_paths(..., scorer=RayScorer(...))` writes, resumes and summarises exactly as
`dfserve score` does locally. What differs:

- Each actor builds ONE scorer with `make_scorer` from the options' JSON and a `ScorerConfig`, and
  reads videos itself from their paths (or URLs): every node must see the videos and the models at
  the same paths (shared filesystem, or URLs PyAV opens). Only paths go out and result rows come
  back; decoded frames never cross the network.
- The pool is sized from the cluster: on CPU nodes one actor per `CPUS_PER_ACTOR` cores (at least
  one per node), each with the node's cores split between them as runtime threads; with
  `--device cuda`, one actor per GPU (`num_gpus=1`). `--ray-actors N` / `--threads T` override.
- An actor holds one video at a time. If its process or node dies, only that video is lost: it is
  retried on another actor, at most `max_attempts` times in all, after which it gets a row with a
  `WorkerError`. Every input path yields exactly one row.
- Rows gain `node` ("<node ip>/<node id, 8 hex>").
- Ctrl-C / SIGTERM cancel the in-flight tasks and kill the actors; a local Ray started by the command
  is shut down, a cluster given by address is left running.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional

from ..errors import DfserveError, UsageError
from ..pipeline.options import ScoreOptions
from ..scoring import ScorerConfig

log = logging.getLogger("dfserve")

CPUS_PER_ACTOR = 4  # onnxruntime's intra-op scaling flattens past ~4 threads; more actors use more cores
MAX_ATTEMPTS = 2  # a video whose actor dies is tried at most this many times in all
ACTOR_RESTARTS = 3  # Ray restarts a dead actor (e.g. its worker process was killed) this often
LOCAL_OBJECT_STORE = 256 * 1024 * 1024  # a local Ray started by `--ray`: only paths and rows travel


def _ray():
    from .._lazy import require

    return require("ray", "ray", extra="ray")


# ------------------------------------------------------------------------------------------ planning
@dataclass
class NodeResources:
    node_id: str
    address: str
    cpus: float
    gpus: float = 0.0


@dataclass
class ActorSpec:
    node_id: str
    num_cpus: float
    num_gpus: float
    threads: int


def plan_actors(nodes: List[NodeResources], actors: int = 0, threads: int = 0, gpu: bool = False,
                cpus_per_actor: int = CPUS_PER_ACTOR) -> List[ActorSpec]:
    """How many scorer actors, where, with what resources (pure: unit-tested without Ray).

    GPU: one actor per GPU, the node's CPUs split between them. CPU: `cpus // cpus_per_actor` actors
    per node (at least one), each with an equal share of the node's CPUs as runtime threads. With
    `actors=N`, N actors of (cluster CPUs // N) CPUs each, placed on the nodes with the most CPUs left.
    """
    if actors < 0 or threads < 0:
        raise UsageError(f"--ray-actors and --threads must be >= 0, got {actors} and {threads}")
    if gpu:
        gnodes = [n for n in nodes if n.gpus >= 1]
        if not gnodes:
            raise UsageError("--device cuda with --ray: no node of the Ray cluster has a GPU "
                             f"({len(nodes)} node(s) seen); use --device cpu or add GPU nodes")
        specs = []
        for n in gnodes:
            k = int(n.gpus)
            per = max(1, int(n.cpus) // k) if n.cpus >= 1 else 0
            specs += [ActorSpec(n.node_id, threads or per, 1, threads or max(per, 1)) for _ in range(k)]
        if actors:
            if actors > len(specs):
                log.warning("--ray-actors %d: the cluster has %d GPU(s); using %d actors", actors, len(specs),
                            len(specs))
            specs = specs[:actors]
        return specs
    cnodes = [n for n in nodes if n.cpus >= 1]
    if not cnodes:
        raise UsageError(f"the Ray cluster has no node with a CPU to run scorers on ({len(nodes)} node(s) seen)")
    if not actors:
        specs = []
        for n in cnodes:
            k = max(1, int(n.cpus) // cpus_per_actor)
            per = threads or max(1, int(n.cpus) // k)
            specs += [ActorSpec(n.node_id, per, 0, per) for _ in range(k)]
        return specs
    total = sum(int(n.cpus) for n in cnodes)
    per = threads or max(1, min(total // actors, max(int(n.cpus) for n in cnodes)))
    free = {n.node_id: float(int(n.cpus)) for n in cnodes}
    specs = []
    for _ in range(actors):
        node = max(free, key=lambda k: free[k])  # the node with the most CPUs left (first on ties)
        free[node] -= per
        specs.append(ActorSpec(node, per, 0, per))
    if any(v < 0 for v in free.values()):
        log.warning("--ray-actors %d x %d CPU(s) exceed the cluster's %d CPUs: some actors wait for resources",
                    actors, per, total)
    return specs


# --------------------------------------------------------------------------------------------- actor
class ScorerActor:
    """Runs in a Ray worker process: one scorer, one video at a time."""

    def __init__(self, options_json: str, config: dict):
        ray = _ray()
        ctx = ray.get_runtime_context()
        self.node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
        self.error: Optional[dict] = None
        self.model_id = None
        try:
            from ..scoring import make_scorer

            cfg = dict(config)
            for k in ("models", "checkpoint"):
                if cfg.get(k):
                    from pathlib import Path

                    cfg[k] = Path(cfg[k])
            self.scorer = make_scorer(ScoreOptions.from_json(options_json), ScorerConfig(**cfg))
            self.model_id = self.scorer.model_id
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which names the node
            self.error = {"type": type(exc).__name__, "message": str(exc)}

    def ready(self) -> dict:
        return {"node": self.node, "model_id": self.model_id, "error": self.error, "pid": os.getpid()}

    def score(self, path: str) -> dict:
        rows = list(self.scorer.score([path]))
        if len(rows) != 1:  # the scorer yields one row per path; anything else is a bug worth a loud row
            raise DfserveError(f"{path}: the scorer returned {len(rows)} rows for one video")
        row = rows[0]
        row["node"] = self.node
        return row


# -------------------------------------------------------------------------------------------- driver
@dataclass
class _Slot:
    n: int
    spec: ActorSpec
    actor: object
    node: str = "?"


class RayScorer:
    """Score videos on a pool of Ray actors; same rows as the local scorer, plus `node`."""

    def __init__(self, opts: ScoreOptions, config: ScorerConfig, address: Optional[str] = "local",
                 actors: int = 0, max_attempts: int = MAX_ATTEMPTS, start_timeout_s: float = 600.0,
                 summary: bool = True, start: bool = True):
        if config.server:
            raise UsageError("--ray scores with actors that hold the models: drop --server")
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, got {max_attempts}")
        self.opts = opts.validate()
        self.config = config
        self.address = address or "local"
        self.actors_wanted = actors
        self.max_attempts = max_attempts
        self.start_timeout_s = start_timeout_s
        self.summary = summary
        self.model_id: Optional[str] = None
        self.node_videos: Dict[str, int] = collections.Counter()
        self.node_frames: Dict[str, int] = collections.Counter()
        self.retried = 0
        self.worker_errors = 0
        self._slots: List[_Slot] = []
        self._started_local = False
        self._connected = False
        self._t0 = self._t1 = None
        self._owns_connection = False
        self._idle: List[_Slot] = []
        self._probing: Dict[object, _Slot] = {}
        self._failures: List[str] = []
        if start:
            try:
                self.start()
            except BaseException:
                self.close()
                raise

    def start(self, grace_s: float = 20.0) -> None:
        """Connect, start the actors and wait until they have loaded their models (so that model loading
        is not counted in the throughput, as with the local scorer). Actors still waiting for
        resources `grace_s` after the first one is ready join later."""
        ray = _ray()
        self._connect()
        if not self._slots:
            self._start_pool()
            self._probing = {s.actor.ready.remote(): s for s in self._slots}
        t0, first = time.perf_counter(), None
        while self._probing:
            now = time.perf_counter()
            if first is not None and now - first > grace_s:
                break
            if now - t0 > self.start_timeout_s:
                break
            ready, _ = ray.wait(list(self._probing), num_returns=1, timeout=1.0)
            for ref in ready:
                self._probed(ref)
                if self._idle and first is None:
                    first = time.perf_counter()
        if not self._idle and not self._probing:
            why = "; ".join(self._failures[-3:]) or "no actor"
            raise DfserveError(f"ray: no scorer actor could start ({why})")

    # ------------------------------------------------------------------------------- lifecycle
    def _connect(self) -> None:
        if self._connected:
            return
        ray = _ray()
        if ray.is_initialized():  # a caller's own Ray connection: used as it is, left open by close()
            self._connected, self._owns_connection = True, False
            return
        kw = dict(logging_level=logging.WARNING, log_to_driver=True)  # the dashboard: Ray's default
        if self.address == "local":
            kw["object_store_memory"] = LOCAL_OBJECT_STORE
            # workers of a Ray started here import this very dfserve (also from a source checkout)
            pythonpath = _pythonpath_with_package()
            if pythonpath:
                kw["runtime_env"] = {"env_vars": {"PYTHONPATH": pythonpath}}
            ray.init(address="local", **kw)
            self._started_local = True
        else:
            try:
                ray.init(address=self.address, **({} if self.address.startswith("ray://") else kw))
            except ConnectionError as exc:
                raise UsageError(f"--ray {self.address}: cannot connect to a Ray cluster there ({exc})") from None
        self._connected, self._owns_connection = True, True

    def _nodes(self) -> List[NodeResources]:
        ray = _ray()
        return [NodeResources(n["NodeID"], n.get("NodeManagerAddress", "?"), float(n["Resources"].get("CPU", 0)),
                              float(n["Resources"].get("GPU", 0)))
                for n in ray.nodes() if n.get("Alive")]

    def _start_pool(self) -> None:
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        gpu = self.config.device.startswith("cuda")
        specs = plan_actors(self._nodes(), self.actors_wanted, self.config.threads, gpu=gpu)
        remote_cls = ray.remote(ScorerActor)
        opts_json = self.opts.to_json()
        for n, s in enumerate(specs):
            cfg = dataclasses.asdict(self.config)
            cfg.update(threads=s.threads, models=_str(cfg["models"]), checkpoint=_str(cfg["checkpoint"]))
            if gpu:
                cfg["device"] = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU
            actor = remote_cls.options(
                num_cpus=s.num_cpus, num_gpus=s.num_gpus, max_restarts=ACTOR_RESTARTS, max_task_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(s.node_id, soft=True),
            ).remote(opts_json, cfg)
            self._slots.append(_Slot(n, s, actor))
        log.info("ray: %d scorer actor(s): %s", len(specs),
                 ", ".join(f"{s.num_cpus:g} CPU{' + 1 GPU' if s.num_gpus else ''}/{s.threads} threads"
                           for s in specs))

    def close(self) -> None:
        """Kill the actors; shut down a Ray this scorer started (a cluster given by address keeps running)."""
        if not self._connected:
            return
        ray = _ray()
        for s in self._slots:
            try:
                ray.kill(s.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self._slots = []
        if self.summary and self.node_videos:
            print(self.node_summary(), file=sys.stderr)
        if self._owns_connection:
            ray.shutdown()  # stops a local Ray started here; only disconnects from a cluster given by address
        self._connected = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def node_summary(self) -> str:
        el = max((self._t1 or time.perf_counter()) - (self._t0 or time.perf_counter()), 1e-9)
        lines = [f"ray: {sum(self.node_videos.values())} videos on {len(self.node_videos)} node(s); "
                 f"{self.retried} retried after a worker died, {self.worker_errors} WorkerError row(s)"]
        for node in sorted(self.node_videos):
            lines.append(f"  {node:30s} {self.node_videos[node]:6d} videos {self.node_frames[node]:8d} frames "
                         f"({self.node_frames[node] / el:.1f} frames/s)")
        return "\n".join(lines)

    # ----------------------------------------------------------------------------------- scoring
    def _probed(self, ref) -> None:
        """An actor answered (or failed) its readiness probe: into the idle pool, or out with the reason."""
        ray = _ray()
        from ray.exceptions import RayError

        slot = self._probing.pop(ref)
        try:
            info = ray.get(ref)
        except RayError as exc:
            self._failures.append(f"actor {slot.n}: {_first_line(exc)}")
            log.warning("ray: scorer actor %d is gone: %s", slot.n, _first_line(exc))
            return
        if info["error"]:
            err = info["error"]
            self._failures.append(f"{info['node']}: {err['type']}: {err['message']}")
            log.error("ray: scorer actor %d on %s could not start: %s: %s", slot.n, info["node"], err["type"],
                      err["message"])
            ray.kill(slot.actor, no_restart=True)
            return
        slot.node = info["node"]
        self.model_id = self.model_id or info["model_id"]
        self._idle.append(slot)

    def score(self, paths: Iterable[str]) -> Iterator[dict]:
        ray = _ray()
        from ray.exceptions import RayActorError, RayError

        todo = list(paths)
        if not todo:
            return
        if not self._slots:
            self.start()
        self._t0 = time.perf_counter()
        queue = collections.deque((p, 0, -1) for p in todo)  # (path as given, attempts so far, actor to avoid)
        inflight: Dict[object, tuple] = {}  # task ref -> (slot, path, attempt)
        idle, probing = self._idle, self._probing
        last_live = time.perf_counter()
        try:
            while queue or inflight:
                self._assign(queue, idle, inflight)
                if inflight or idle:
                    last_live = time.perf_counter()
                if not inflight and not idle and (not probing or time.perf_counter() - last_live
                                                  > self.start_timeout_s):
                    # no actor left, or none back for start_timeout_s: what remains cannot be scored
                    why = "; ".join(self._failures[-3:]) or "actors waiting for resources"
                    while queue:
                        path, att, _ = queue.popleft()
                        yield self._worker_error(path, att, f"no Ray scorer actor left to score it ({why})")
                    break
                ready, _ = ray.wait(list(inflight) + list(probing), num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in probing:
                        self._probed(ref)
                        continue
                    slot, path, attempt = inflight.pop(ref)
                    try:
                        row = ray.get(ref)
                    except RayError as exc:
                        msg = f"{type(exc).__name__} on {slot.node} (actor {slot.n}): {_first_line(exc)}"
                        if isinstance(exc, RayActorError):
                            probing[slot.actor.ready.remote()] = slot  # back in the pool once restarted
                        else:
                            idle.append(slot)
                        if attempt < self.max_attempts:
                            self.retried += 1
                            log.warning("ray: %s: worker lost (%s); retrying on another actor (attempt %d of %d)",
                                        path, msg, attempt + 1, self.max_attempts)
                            queue.appendleft((path, attempt, slot.n))
                        else:
                            yield self._worker_error(path, attempt, msg)
                        continue
                    idle.append(slot)
                    row["path"] = path  # as given (the actor was sent the absolute path)
                    self.node_videos[row["node"]] += 1
                    self.node_frames[row["node"]] += row.get("frames_scored") or 0
                    yield row
        finally:
            self._t1 = time.perf_counter()
            if inflight:  # interrupted mid-run: cancel the in-flight videos and drop their actors
                for ref, (slot, _, _) in inflight.items():
                    for stop in (lambda: ray.cancel(ref), lambda: ray.kill(slot.actor, no_restart=True)):
                        try:
                            stop()
                        except Exception:  # noqa: BLE001 - the task or its actor is gone already
                            pass
                busy = [v[0] for v in inflight.values()]
                self._slots = [s for s in self._slots if all(s is not b for b in busy)]

    def _assign(self, queue, idle: List[_Slot], inflight: dict) -> None:
        """Give each idle actor the next queued video, not one that just failed on that same actor
        (unless no other live actor is left to take it)."""
        for slot in list(idle):
            if not queue:
                return
            pick = next((k for k, item in enumerate(queue) if item[2] != slot.n), None)
            if pick is None:
                if len(idle) + len(inflight) > 1:
                    continue  # another live actor will take it
                pick = 0
            idle.remove(slot)
            path, attempt, _ = queue[pick]
            del queue[pick]
            inflight[slot.actor.score.remote(_for_worker(path))] = (slot, path, attempt + 1)

    def _worker_error(self, path: str, attempts: int, message: str) -> dict:
        from ..pipeline.engine import VideoJob, make_row

        self.worker_errors += 1
        job = VideoJob(path, 0, failed=True)
        job.error = {"type": "WorkerError",
                     "message": f"{path}: not scored after {attempts} attempt(s) on Ray workers: {message}"}
        row = make_row(job, self.opts, self.model_id or "unknown")
        row["node"] = None
        return row


def _for_worker(path: str) -> str:
    """Workers run in other directories (and machines): send absolute paths; URLs as they are."""
    return path if "://" in path else os.path.abspath(path)


def _str(p) -> Optional[str]:
    return None if p is None else str(os.path.abspath(p))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _pythonpath_with_package() -> Optional[str]:
    """PYTHONPATH for workers of a local Ray when this `dfserve` is a source checkout (not installed):
    its folder, then the caller's PYTHONPATH. None for an installed dfserve (workers import it as is)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.basename(root) in ("site-packages", "dist-packages"):
        return None
    rest = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([root] + ([rest] if rest else []))
