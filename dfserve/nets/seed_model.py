"""The seed projects' model, exactly as written, and the folded per-frame classifier.

`SeedModel` reproduces `Model` from the seed's views.py / training notebook, including its quirk:
`nn.LSTM(2048, 2048, 1, False)` is called with `batch_first` left False, so an input
[1, N, 2048] is read as a sequence of length 1 with batch N; every frame gets one LSTM step from a
zero state. `FrameClassifier` is that computation folded: only the input, cell and output gates
of `weight_ih` matter (the forget gate multiplies c0 = 0 and `weight_hh` multiplies h0 = 0).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import spec
from .resnext import ResNeXt50_32x4d


class SeedModel(nn.Module):
    """The seed's `Model(num_classes=2)`: ResNeXt50 features -> LSTM -> linear1."""

    def __init__(self, num_classes: int = spec.NUM_CLASSES, latent_dim: int = spec.FEATURE_DIM,
                 lstm_layers: int = 1, hidden_dim: int = spec.FEATURE_DIM, bidirectional: bool = False,
                 lstm_bias: bool = False):
        super().__init__()
        backbone = ResNeXt50_32x4d()
        self.model = nn.Sequential(*list(backbone.children())[:-2])
        # The seed passes `bidirectional` as the 4th positional argument, which is `bias`.
        self.lstm = nn.LSTM(latent_dim, hidden_dim, lstm_layers, lstm_bias)
        self.relu = nn.LeakyReLU()
        self.dp = nn.Dropout(0.4)
        self.linear1 = nn.Linear(2048, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor, head: str = spec.DEFAULT_HEAD):
        """The seed forward. x: [batch, seq, 3, 112, 112]. Returns (fmap, logits [batch, 2])."""
        batch_size, seq_length, c, h, w = x.shape
        x = x.view(batch_size * seq_length, c, h, w)
        fmap = self.model(x)
        x = self.avgpool(fmap)
        x = x.view(batch_size, seq_length, 2048)
        x_lstm, _ = self.lstm(x, None)
        if head == "mean":  # the training notebook's head
            return fmap, self.dp(self.linear1(torch.mean(x_lstm, dim=1)))
        if head == "last":  # the Django app's head
            return fmap, self.dp(self.linear1(x_lstm[:, -1, :]))
        raise ValueError(f"head must be one of {spec.HEADS}, got {head!r}")


class FrameClassifier(nn.Module):
    """Per-frame logits of the seed model: faces [B,3,112,112] -> logits [B,2].

    gates = W_ih x (+ b_ih + b_hh); c = sigmoid(i) * tanh(g); h = sigmoid(o) * tanh(c);
    logits = linear1(h). The seed's video verdict is softmax(mean_t logits_t) (head `mean`) or
    softmax(logits_last) (head `last`).
    """

    def __init__(self, seed: SeedModel):
        super().__init__()
        lstm = seed.lstm
        if lstm.num_layers != 1 or lstm.bidirectional:
            raise ValueError("only the seed's single-layer unidirectional LSTM can be folded")
        hid = lstm.hidden_size
        self.backbone = seed.model
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        w = lstm.weight_ih_l0.detach()
        rows = torch.cat([w[0:hid], w[2 * hid:3 * hid], w[3 * hid:4 * hid]])  # i, g, o (forget dropped)
        self.gates = nn.Linear(w.shape[1], 3 * hid, bias=lstm.bias)
        with torch.no_grad():
            self.gates.weight.copy_(rows)
            if lstm.bias:
                b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
                self.gates.bias.copy_(torch.cat([b[0:hid], b[2 * hid:3 * hid], b[3 * hid:4 * hid]]))
        self.hidden = hid
        self.linear1 = seed.linear1

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        feats = torch.flatten(self.avgpool(self.backbone(faces)), 1)
        i, g, o = torch.split(self.gates(feats), self.hidden, dim=1)
        c = torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self.linear1(h)
