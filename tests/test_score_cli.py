"""`dfserve score` as a user runs it: JSONL rows, exit codes, --resume after a kill, checkpoint cache."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dfserve.pipeline.results import load_rows


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "dfserve.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, **kw)


def test_score_writes_rows_and_exits_zero_despite_bad_files(exported, videos, tmp_path):
    out = tmp_path / "out dir" / "scores.jsonl"
    r = _cli("score", videos["face"]["path"], videos["corrupt"]["path"], "--models", exported.out_dir,
             "--out", out, "--sample", "every:5", "--timeline", "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = {row["path"]: row for row in load_rows(out)}
    face, bad = rows[videos["face"]["path"]], rows[videos["corrupt"]["path"]]
    for key in ("path", "label", "p_fake", "confidence", "frames_decoded", "frames_scored", "frames_with_face",
                "duration_s", "fps", "model", "error"):
        assert key in face
    assert face["model"] == exported.metadata["weights"]["sha256"]
    assert face["frames_scored"] == 9 and face["fps"] == 30.0 and abs(face["duration_s"] - 1.5) < 0.05
    assert len(face["timeline"]) == 9 and len(face["timeline"][0][2]) == 4
    assert abs(face["confidence"] - 100 * max(face["p_fake"], 1 - face["p_fake"])) < 0.01
    assert bad["error"]["type"] == "VideoError" and bad["label"] is None
    assert "without a verdict" in r.stderr  # the summary table


def test_usage_errors_exit_2(exported, videos):
    assert _cli("score", videos["face"]["path"], "--models", exported.out_dir, "--sample", "bogus").returncode == 2
    assert _cli("score", videos["face"]["path"]).returncode == 2  # no model
    r = _cli("score", videos["face"]["path"], "--models", exported.out_dir, "--resume")
    assert r.returncode == 2 and "--resume needs --out" in r.stderr


def test_killed_run_resumes_each_video_exactly_once(exported, videos, tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    src = videos["face"]["path"]
    for k in range(6):
        os.link(src, d / f"v{k}.mp4")
    out = tmp_path / "scores.jsonl"
    args = [sys.executable, "-m", "dfserve.cli", "score", str(d), "--models", str(exported.out_dir), "--out",
            str(out), "--resume", "--decode-workers", "1", "--no-progress", "--sample", "every:2"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = load_rows(out)
    assert 2 <= len(first) < 6, "the kill should land mid-run"
    with open(out, "a") as f:
        f.write('{"path": "torn')  # a torn line, as a kill during a write would leave
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = load_rows(out)
    paths = [row["path"] for row in rows]
    assert sorted(paths) == sorted(str(d / f"v{k}.mp4") for k in range(6))
    assert len(set(paths)) == 6
    assert rows[: len(first)] == first  # nothing repeated, nothing rewritten


@pytest.mark.slow
def test_checkpoint_is_exported_once_into_the_cache(checkpoint_path, videos, tmp_path):
    env = {**os.environ, "DFSERVE_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "a.jsonl"
    r = _cli("score", videos["precropped"]["path"], "--checkpoint", checkpoint_path, "--faces", "precropped",
             "--out", out, "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    cached = list((tmp_path / "cache" / "models").iterdir())
    assert len(cached) == 1 and (cached[0] / "frame_classifier.onnx").is_file()
    t0 = time.perf_counter()
    r = _cli("score", videos["precropped"]["path"], "--checkpoint", checkpoint_path, "--faces", "precropped",
             "--out", tmp_path / "b.jsonl", "--no-progress", env=env)
    assert r.returncode == 0 and "using cached export" in r.stderr
    assert load_rows(out)[0]["p_fake"] == load_rows(tmp_path / "b.jsonl")[0]["p_fake"]
    assert json.loads((cached[0] / "metadata.json").read_text())["weights"]["checkpoint"] == str(checkpoint_path)


def test_a_file_name_that_is_not_utf8_loses_no_row_and_resumes(exported, videos, tmp_path):
    """A name with raw non-UTF-8 bytes: its row is written (escaped, raw bytes kept) and --resume finds it."""
    import json
    import os

    d = tmp_path / "odd names"
    d.mkdir()
    raw = os.path.join(os.fsencode(str(d)), b"clip-\xff\xfe.mp4")
    with open(videos["face"]["path"], "rb") as src, open(raw, "wb") as dst:
        dst.write(src.read())
    (d / "after.mp4").write_bytes(open(videos["face"]["path"], "rb").read())
    out = tmp_path / "rows.jsonl"
    r = _cli("score", str(d), "--models", exported.out_dir, "--out", out, "--sample", "every:15", "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and all(row["error"] is None for row in rows)
    odd = next(row for row in rows if "path_bytes_hex" in row)
    assert bytes.fromhex(odd["path_bytes_hex"]) == raw
    r = _cli("score", str(d), "--models", exported.out_dir, "--out", out, "--resume", "--no-progress")
    assert r.returncode == 0 and len(out.read_text(encoding="utf-8").splitlines()) == 2
