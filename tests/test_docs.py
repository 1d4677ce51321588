"""Issue 26 item 3 and 4: every page's commands run, and the pages name only what `dfserve --help` offers.

A fenced ```bash block preceded by the line `<!-- run -->` in README.md or docs/*.md is runnable: it runs here, on
the CPU, with this checkout's `dfserve` first on PATH, in a scratch folder ($TMP). Keep such blocks cheap (`--help`,
`doctor --json`, `repo build` into $TMP): the whole file stays under a minute on 2 cores. GPU, cluster and server
blocks are not marked: their command names and options are still checked against the parser below.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfserve.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<mark><!-- run -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.S | re.M)
BUDGET_S = 60


def blocks(lang: str = "bash"):
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group("lang") == lang:
                line = text[:m.start("body")].count("\n") + 1
                yield page.relative_to(ROOT), line, bool(m.group("mark")), m.group("body")


RUNNABLE = [b for b in blocks() if b[2]]


def test_there_are_runnable_blocks():
    assert any(str(p) == "README.md" for p, *_ in RUNNABLE)


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    env["TMP"] = str(tmp_path)
    env["DFSERVE_CACHE"] = str(tmp_path / "cache")
    return env


_spent = [0.0]


@pytest.mark.parametrize("page,line,body", [(p, n, b) for p, n, _, b in RUNNABLE],
                         ids=[f"{p}:{n}" for p, n, *_ in RUNNABLE])
def test_runnable_block_runs(page, line, body, tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=BUDGET_S)
    _spent[0] += time.monotonic() - t0
    assert proc.returncode == 0, f"{page}:{line}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert _spent[0] < BUDGET_S, f"runnable blocks took {_spent[0]:.0f} s together: keep them cheap"


# ------------------------------------------------------------------------------ names agree with `dfserve --help`
def _subparsers(parser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    return {}


SUB = _subparsers(build_parser())


def _options(p: argparse.ArgumentParser) -> set:
    opts = {s for a in p._actions for s in a.option_strings}
    for name, sub in _subparsers(p).items():  # `repo build`
        opts |= {f"{name}:{o}" for o in _options(sub)}
    return opts


def _commands():
    """(page, line, tokens) of each `dfserve ...` command in the pages' bash blocks (comments and pipes cut)."""
    for page, line, _, body in blocks():
        for i, text in enumerate(body.splitlines()):
            text = text.split(" #")[0].strip()
            for part in re.split(r"&&|\|\||;|\||&(?!\S)", text):
                try:
                    toks = shlex.split(part.strip())
                except ValueError:
                    continue
                if toks[:1] == ["dfserve"]:
                    yield page, line + i, toks[1:]


def test_every_command_and_option_in_the_pages_exists():
    bad = []
    for page, line, toks in _commands():
        if not toks or toks[0].startswith("-"):
            continue
        cmd = toks[0]
        if cmd not in SUB:
            bad.append(f"{page}:{line}: no command `dfserve {cmd}`")
            continue
        opts, subcmds = _options(SUB[cmd]), _subparsers(SUB[cmd])
        prefix = f"{toks[1]}:" if len(toks) > 1 and toks[1] in subcmds else ""
        for t in toks[1:]:
            if re.fullmatch(r"--[a-z0-9][a-z0-9-]*(=.*)?", t):
                name = t.split("=")[0]
                if name not in opts and prefix + name not in opts:
                    bad.append(f"{page}:{line}: `dfserve {cmd}` has no option {name}")
    assert not bad, "\n".join(bad)


def test_web_runtime_named_in_the_guides_exists():
    """Item 4: the guides' `dfserve web --runtime` choices are the parser's (openvino included)."""
    web = next(a for a in SUB["web"]._actions if "--runtime" in a.option_strings)
    assert "openvino" in web.choices
    text = (ROOT / "docs" / "web-api.md").read_text()
    assert "--runtime" in text and "openvino" in text
