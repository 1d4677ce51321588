"""Hostile inputs: seeded byte mutations of real encoded videos (header, index, payload).

Run through `dfserve score` (one batch: exactly one row per file, no crash, no hang) and, a smaller set,
through the `deepfake_video` model of a real tritonserver (a row per request, server still ready).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfserve import samples

SEED = 20261124
MUTATIONS_PER_REGION = 6  # x 3 regions x 5 bases = 90 files through `dfserve score`
N_DECODE_FUZZ = 1200  # decode-only mutations (tiny files: ~10 s)

# (file name, generator). Small: the fuzz exercises the demuxers/decoders, not the classifier.
BASES = {
    "h264.mp4": lambda p: samples.make_face_video(p, 10, 192, 108, codec="h264"),
    "hevc.mkv": lambda p: samples.make_face_video(p, 10, 192, 108, codec="hevc"),
    "vp9.webm": lambda p: samples.make_face_video(p, 10, 192, 108, codec="vp9"),
    "mpeg4.avi": lambda p: samples.make_face_video(p, 10, 192, 108, codec="mpeg4"),
    "anim.gif": lambda p: samples.make_gif(p, 6, 192, 108),
}
# Markers of each container's index structures (MP4 sample tables, Matroska SeekHead/Cues, AVI idx1).
INDEX_MARKERS = [b"moov", b"stsz", b"stco", b"stts", b"stss", b"\x11\x4d\x9b\x74", b"\x1c\x53\xbb\x6b",
                 b"\x1f\x43\xb6\x75", b"idx1", b"hdrl", b"strf", b"NETSCAPE"]


def _index_span(data: bytes):
    hits = [data.find(m) for m in INDEX_MARKERS]
    hits = [h for h in hits if h >= 0]
    if not hits:
        return (max(0, len(data) - 512), len(data))
    h = hits[len(hits) // 2]
    return (h, min(len(data), h + 256))


def mutate(data: bytes, region: str, rng: np.random.Generator) -> bytes:
    """One seeded mutation of `data` inside `region` (header | index | payload)."""
    n = len(data)
    if region == "header":
        lo, hi = 0, min(n, 512)
    elif region == "index":
        lo, hi = _index_span(data)
    else:
        lo, hi = min(n - 1, 512), n
    b = bytearray(data)
    op = rng.choice(["flip", "bytes", "fill", "insert", "delete", "truncate", "dup", "int"])
    at = int(rng.integers(lo, max(lo + 1, hi)))
    if op == "flip":
        for _ in range(int(rng.integers(1, 16))):
            k = int(rng.integers(lo, max(lo + 1, hi)))
            b[k] ^= 1 << int(rng.integers(0, 8))
    elif op == "bytes":
        k = int(rng.integers(1, 64))
        b[at:at + k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
    elif op == "fill":
        k = int(rng.integers(4, 256))
        b[at:at + k] = bytes([int(rng.choice([0, 0xFF]))]) * len(b[at:at + k])
    elif op == "insert":
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 512)), dtype=np.uint8).tobytes()
    elif op == "delete":
        del b[at:at + int(rng.integers(1, 512))]
    elif op == "truncate":
        b = b[:at]
    elif op == "dup":
        k = int(rng.integers(16, 2048))
        b[at:at] = b[max(0, at - k):at]
    else:  # a 32-bit field made huge or negative (sizes, counts, offsets)
        b[at:at + 4] = int(rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x00FFFFFF])).to_bytes(4, "big")
    return bytes(b)


def make_fuzz_set(d: Path, per_region: int = MUTATIONS_PER_REGION, seed: int = SEED, bases=None) -> list:
    """Generate the base videos and their mutations in `d`; returns the mutated paths."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, gen in (bases or BASES).items():
        codec = {"h264.mp4": "h264", "hevc.mkv": "hevc", "vp9.webm": "vp9", "mpeg4.avi": "mpeg4"}.get(name)
        if codec and samples.encoder_for(codec) is None:
            continue
        base = d / f"base {name}"
        gen(base)
        data = base.read_bytes()
        for region in ("header", "index", "payload"):
            for k in range(per_region):
                p = d / f"fuzz {region} {k} {name}"
                p.write_bytes(mutate(data, region, rng))
                out.append(str(p))
    return out


def _check_rows(rows, paths):
    assert sorted(r["path"] for r in rows) == sorted(paths)  # exactly one row per file, none lost
    for r in rows:
        if r["error"] is None:
            assert r["label"] in ("FAKE", "REAL") and r["frames_scored"] > 0, r
        else:
            assert r["label"] is None and r["error"]["type"] and Path(r["path"]).name in r["error"]["message"], r


def test_fuzzed_videos_through_dfserve_score(exported, tmp_path):
    paths = make_fuzz_set(tmp_path / "fuzz videos")
    assert len(paths) >= 72
    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "score", *paths, "--models", str(exported.out_dir),
                        "--out", str(out), "--no-progress", "--faces", "precropped", "--sample", "every:3"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    _check_rows(rows, paths)
    n_err = sum(r["error"] is not None for r in rows)
    print(f"fuzz: {len(paths)} mutated files through dfserve score: {len(paths) - n_err} scored, {n_err} error rows")


@pytest.mark.triton
def test_fuzzed_videos_through_triton_deepfake_video(exported, tmp_path_factory, tmp_path):
    from dfserve.client import DeepfakeClient
    from dfserve.serving.repo import build_repo
    from dfserve.serving.server import TritonServer

    bases = {k: BASES[k] for k in ("h264.mp4", "hevc.mkv", "mpeg4.avi")}
    paths = make_fuzz_set(tmp_path / "fuzz for triton", per_region=4, seed=SEED + 1, bases=bases)
    repo = build_repo(tmp_path_factory.mktemp("fuzz model repo"), "cpu", exported.out_dir)
    with TritonServer(repo) as srv, DeepfakeClient(srv.grpc_url, timeout=300) as c:
        c.wait_ready()
        rows = []
        for p in paths:
            row = c.score_video(Path(p).read_bytes(), name=p, sample="every:3", faces="precropped")
            rows.append(row)
            assert c.is_ready(), f"server not ready after {p}"
        _check_rows(rows, paths)
        good = c.score_video(tmp_path / "fuzz for triton" / "base h264.mp4", sample="every:3", faces="precropped")
        assert good["error"] is None and good["label"] in ("FAKE", "REAL")
    n_err = sum(r["error"] is not None for r in rows)
    print(f"fuzz: {len(paths)} mutated files through tritonserver deepfake_video: {n_err} error rows")


def test_many_fuzzed_videos_decode_to_frames_or_a_video_error(tmp_path):
    """Decode only (no model), many more mutations: each ends in frames or a VideoError naming the file,
    never another exception, never a hang."""
    import time

    from dfserve.errors import VideoError
    from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
    from dfserve.pipeline.sampling import parse_policy

    d = tmp_path / "decode fuzz"
    make_fuzz_set(d, per_region=0)  # the base videos only
    rng = np.random.default_rng(SEED + 2)
    bases = {p.name[len("base "):]: p.read_bytes() for p in d.glob("base *")}
    n = outcomes = 0
    errors = 0
    t0 = time.perf_counter()
    for k in range(N_DECODE_FUZZ):
        name = sorted(bases)[k % len(bases)]
        region = ("header", "index", "payload")[(k // len(bases)) % 3]
        p = d / f"m{k} {region} {name}"
        p.write_bytes(mutate(bases[name], region, rng))
        t = time.perf_counter()
        try:
            info = probe(str(p))
            for _ in iter_frames(str(p), parse_policy("every:3"), info, DecodeStats()):
                pass
        except VideoError as exc:
            assert str(p) in str(exc)
            errors += 1
        assert time.perf_counter() - t < 20, f"{p} took {time.perf_counter() - t:.1f} s"
        outcomes += 1
        n += 1
        p.unlink()
    assert outcomes == N_DECODE_FUZZ
    print(f"fuzz: {n} mutated files decoded in-process in {time.perf_counter() - t0:.1f} s: {errors} VideoErrors")
