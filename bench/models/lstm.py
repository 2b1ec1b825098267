"""LSTM: GRU4Rec's architecture with an LSTM cell, the common recurrent baseline.

Hochreiter and Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8), 1997;
used over item histories as in GRU4Rec (Hidasi et al., ICLR 2016): item embedding,
dropout, LSTM, dense layer back to the embedding size, state at the last real event.
Everything but the cell is GRU4Rec's (`bench/models/gru4rec.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.models.gru4rec import GRU4Rec
from bench.models.registry import register_model


@register_model
class LSTMRec(GRU4Rec):
    name = "lstm"
    family = "recurrent"
    paper = "Hochreiter, Schmidhuber. Long Short-Term Memory. Neural Computation 9(8), 1997"
    cell = nn.LSTM
    # GRU4Rec's whole-sequence default rests on its own runs; the LSTM's are measured on
    # ml-100k only, where the two modes are within seed noise (BENCHMARKS.md "Is
    # whole-sequence training the default?"), so it keeps the suite's default for now.
    default_training = "prefixes"

    @dataclass
    class Config(GRU4Rec.Config):
        pass
