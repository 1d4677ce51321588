"""How faithful the --explain heat is, per occlusion window size (issue 24 item 2), on more crops than the test's.

    python benchmarks/heat_faithfulness.py [WINDOW,STRIDE ...]     # default: 1,1 (single cells) and 4,4 (the engine's)

The check of `tests/test_evidence.py::test_heat_is_faithful` (greying the top 10 % of the 14x14 heat cells drops the
FAKE-minus-REAL logit margin more than greying a random 10 %, median of 10 draws) on its 10 crops and on 20 more made
the same way (astronaut face crops, jittered boxes; half with a pasted patch that moves the logit most; other seeds),
with the tests' seeded checkpoint (random_seed_model(1234), UNTRAINED) exported to ONNX, onnxruntime fp32. Writes
benchmarks/results/<machine>/heat_faithfulness.json.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    from dfserve import samples, spec
    from dfserve.bench.run import machine_info, machine_slug
    from dfserve.export.checkpoint import random_seed_model, save_seed_checkpoint
    from dfserve.export.onnx_export import export_models
    from dfserve.pipeline.evidence import fake_margin, occlude, occlusion_heat
    from dfserve.pipeline.faces import classifier_input
    from dfserve.pipeline.runtimes.ort import OnnxRuntime
    from test_evidence import _crops_for_faithfulness

    designs = [tuple(int(v) for v in a.split(",")) for a in sys.argv[1:]] or [(1, 1), (spec.HEAT_WINDOW, spec.HEAT_STRIDE)]
    d = Path(tempfile.mkdtemp(prefix="heat-faithfulness-"))
    export_models(d / "models", checkpoint=save_seed_checkpoint(random_seed_model(seed=1234), d / "seed1234.pt"))
    rt = OnnxRuntime(d / "models")

    def more_crops(seed_real, seed_paste, rs):  # as the test's _crops_for_faithfulness, other seeds
        rng = np.random.default_rng(rs)
        pasted = []
        for base in samples.astronaut_face_crops(5, seed=seed_paste):
            cands = []
            for _ in range(4):
                s = int(rng.integers(16, 33))
                y, x = rng.integers(0, 112 - s, size=2)
                c = base.copy()
                c[y:y + s, x:x + s] = rng.integers(0, 256, size=3)
                cands.append(c)
            m = fake_margin(rt.classify(classifier_input(np.stack([base] + cands))))
            pasted.append(cands[int(np.argmax(np.abs(m[1:] - m[0])))])
        return np.concatenate([samples.astronaut_face_crops(5, seed=seed_real), np.stack(pasted)])

    sets = {"test crops (10)": _crops_for_faithfulness(rt),
            "more crops (20)": np.concatenate([more_crops(21, 22, 7), more_crops(31, 32, 8)])}
    g = spec.HEAT_GRID
    k = int(round(0.1 * g * g))

    def wins(crops, heat) -> int:
        rng = np.random.default_rng(0)
        n = 0
        for c, h in zip(crops, heat):
            x = classifier_input(c[None])
            top = [divmod(int(i), g) for i in np.argsort(-h.reshape(-1))[:k]]
            rand = [[divmod(int(i), g) for i in rng.choice(g * g, k, replace=False)] for _ in range(10)]
            m = fake_margin(rt.classify(np.concatenate([x, occlude(x, top)] + [occlude(x, r) for r in rand])))
            n += (m[0] - m[1]) > float(np.median(m[0] - m[2:]))
        return int(n)

    out = {"what": "crops whose top-10 % heat cells, greyed, drop the logit margin more than a random 10 % (median of "
                   "10 draws); seeded UNTRAINED checkpoint (the tests'), onnxruntime fp32", "machine": machine_info(),
           "designs": {}}
    for w, s in designs:
        res = {}
        for name, crops in sets.items():
            t = time.perf_counter()
            heat = occlusion_heat(rt.classify, crops, window=w, stride=s)
            res[name] = {"wins": wins(crops, heat), "heat_s": round(time.perf_counter() - t, 2)}
        out["designs"][f"window {w} stride {s}"] = res
        print(f"window {w} stride {s}: {res}", flush=True)
    dst = ROOT / "benchmarks" / "results" / machine_slug(machine_info()) / "heat_faithfulness.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", dst.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
