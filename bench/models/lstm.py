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
    # Whole windows, measured for the LSTM itself (BENCHMARKS.md "Is whole-sequence
    # training the default?"): on ml-100k 0.0648 ± 0.0058 test NDCG@10 against prefix
    # mode's 0.0579 ± 0.0178 (3 seeds each; prefix mode's patience stopped one seed at
    # epoch 7), on diginetica-dynamicrec 0.2125 and 0.2120 against 0.2017, at 17× and
    # about 2× less CPU an epoch.
    default_training = "sequences"

    @dataclass
    class Config(GRU4Rec.Config):
        pass
