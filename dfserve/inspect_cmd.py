"""`dfserve inspect CKPT`: what a checkpoint holds, without exporting it."""
from __future__ import annotations

import json
from pathlib import Path

from . import spec


def add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect", help="show what a checkpoint holds (format, head, LSTM bias, size, sha256) without exporting",
        description="Read a checkpoint weights-only and print what was found: its format (plain / DataParallel "
                    "state dict, or a training checkpoint holding one), whether it is a seed model (and the "
                    "missing/unexpected keys if not), the head's shape, whether the LSTM has a bias, the "
                    "accuracy and frame count in its file name (information only), parameter count and sha256.")
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="checkpoint file (.pt / .pth)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_inspect)


def run_inspect(args) -> int:
    from .export.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_inspection(info))
    return 0 if info["seed_model"] else 1


def format_inspection(info: dict) -> str:
    name = ("accuracy {}%, {} frames".format(info["name_accuracy"], info["name_frames"])
            if info["name_frames"] is not None else "no model_<acc>_acc_<N>_frames pattern")
    lines = [
        f"checkpoint      {info['path']}",
        f"format          {info['format']}",
    ]
    if info["other_entries"]:
        lines.append(f"other entries   {', '.join(info['other_entries'])} (ignored)")
    lines += [
        f"seed model      {'yes' if info['seed_model'] else 'NO: ' + '; '.join(info['problems'])}",
        f"head (linear1)  {info['head_shape']}" + (f" -> {info['num_classes']} classes "
                                                    f"({spec.CLASS_NAMES[0]}=0, {spec.CLASS_NAMES[1]}=1)"
                                                    if info["num_classes"] == spec.NUM_CLASSES else ""),
        f"LSTM bias       {'yes' if info['lstm_bias'] else 'no (the seed: nn.LSTM(2048, 2048, 1, False))'}",
        f"file name       {name} (information only: never used to choose a model)",
        f"parameters      {info['parameters']:,} in {info['tensors']} tensors ({', '.join(info['dtypes'])})",
        f"size            {info['file_size'] / 1e6:.1f} MB",
        f"sha256          {info['sha256']}",
    ]
    return "\n".join(lines)
