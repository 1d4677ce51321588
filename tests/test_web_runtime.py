"""Issue 26 item 4: `dfserve web --runtime` offers what `dfserve score --runtime` offers (openvino included), and
the web server's lean default stays onnxruntime at fp32 on the CPU (bounded memory, issue 25)."""
from __future__ import annotations

import argparse

import pytest

from dfserve import models
from dfserve.cli import build_parser
from dfserve.scoring import ScorerConfig


def _sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError("no subcommands")


def _option(p: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in p._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag", ["--runtime", "--precision"])
def test_web_offers_what_score_offers(flag):
    parser = build_parser()
    score, web = _option(_sub(parser, "score"), flag), _option(_sub(parser, "web"), flag)
    assert tuple(web.choices) == tuple(score.choices)
    assert web.default == score.default
    if flag == "--runtime":
        assert "openvino" in web.choices and "onnxruntime" in web.choices


@pytest.mark.parametrize("runtime", models.runtime_choices())
def test_web_runtime_reaches_the_scorer_config(runtime):
    args = build_parser().parse_args(["web", "--models", "m", "--runtime", runtime, "--precision", "fp32"])
    assert ScorerConfig.from_args(args, "server").runtime == runtime


def test_lean_auto_is_onnxruntime_and_openvino_by_name(monkeypatch, tmp_path):
    """load_runtime(lean=True) as `dfserve web` calls it: auto -> onnxruntime without memory patterns; an explicit
    openvino is honoured (the loaders are replaced by recorders: nothing is loaded)."""
    from dfserve.pipeline.runtimes import choice

    calls = []

    def recorder(name):
        def load(resolved, device, threads, batch, checkpoint, precision, compile=False, **extra):
            calls.append((name, precision, extra))
            return name
        return load

    monkeypatch.setattr(models, "RUNTIMES", {n: recorder(n) for n in models.RUNTIMES})
    monkeypatch.setattr(choice, "openvino_available", lambda: True)
    assert models.load_runtime("auto", None, lean=True) == "onnxruntime"
    assert calls[-1] == ("onnxruntime", "fp32", {"mem_pattern": False})
    assert models.load_runtime("openvino", None, lean=True) == "openvino"
    assert calls[-1] == ("openvino", "fp32", {})
    assert models.load_runtime("openvino", None, lean=True, precision="bf16") == "openvino"
    assert models.load_runtime("auto", None, lean=False) == "openvino"  # `dfserve score`'s auto, unchanged
