"""Several locate workers (`--streams N`): chunks are located in parallel and leave in decode order, so the
rows are those of one worker, whatever finishes first (on a GPU each worker has its own CUDA stream)."""
import pytest

from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.sampling import parse_policy


def _rows(scorer, paths):
    rows = {r["path"]: r for r in scorer.score(paths)}
    for r in rows.values():
        r.pop("elapsed_s", None)
    return rows


@pytest.fixture(scope="module")
def paths(videos, switch_videos):
    return [videos[k]["path"] for k in ("face", "hevc", "noface", "corrupt")] + [switch_videos["ts_360_720"]["path"]]


def test_streams_give_the_rows_of_one_worker(exported, paths):
    from dfserve.pipeline.runtimes.ort import OnnxRuntime

    rt = OnnxRuntime(exported.out_dir)
    opts = dict(sample=parse_policy("every:2"), timeline=True, chunk=4, decode_workers=2)
    one = _rows(Scorer(rt, ScoreOptions(streams=1, **opts)), paths)
    three = Scorer(rt, ScoreOptions(streams=3, **opts))
    assert three.locate_workers() == 3
    assert _rows(three, paths) == one
    # the tracker of --faces all needs its chunks in order: one worker whatever is asked
    assert Scorer(rt, ScoreOptions(streams=3, faces="all")).locate_workers() == 1


def test_torch_scorer_streams_on_the_cpu(seed_model, paths):
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    rt = TorchRuntime(seed_model, device="cpu")
    # one decoder: the classifier batches are then the same every run (torch's CPU convolutions round
    # differently by batch size: ~1e-6 in p_fake between two decoders' interleavings, with or without streams)
    opts = dict(sample=parse_policy("every:3"), timeline=True, chunk=4, decode_workers=1)
    assert TorchScorer(rt, ScoreOptions(**opts)).locate_workers() == 1  # auto on the CPU
    few = [paths[0], paths[2], paths[-1]]  # a face, no face, a size change
    one = _rows(TorchScorer(rt, ScoreOptions(streams=1, **opts)), few)
    assert _rows(TorchScorer(rt, ScoreOptions(streams=2, **opts)), few) == one


def test_streams_option_is_checked():
    from dfserve.errors import UsageError

    with pytest.raises(UsageError, match="streams"):
        ScoreOptions(streams=-1).validate()
