"""DIGINETICA as preprocessed by the DynamicRec authors: one session per line, no time.

`diginetica.csv` holds comma-separated item indices in click order, one session per line.
The line is the session (and the user), the position the order; ts is a synthetic
position clock (epoch + global index in ms), so protocols that need clock time refuse
it. The default protocol is `user-loo`: each line is a sequence, its last item the test
target, as the papers that publish this file evaluate it.
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.sequences import SequenceFile, sequences_canonical
from bench.datasets.registry import register_dataset

FILE = "diginetica.csv"


@register_dataset
class DigineticaDynamicRecAdapter(SourceAdapter):
    name = "diginetica-dynamicrec"
    description = "DIGINETICA sessions preprocessed by DynamicRec: 70,756 item sequences, no time"
    files = (FILE,)
    homepage = "https://github.com/Mehrab-Tanjim/DynamicRec"
    default_protocol = "user-loo"
    has_time = False

    def sources(self) -> list[SequenceFile]:
        self.check_options()
        return [SequenceFile(self.require(*self.files), separator=",")]

    def scan(self) -> pl.LazyFrame:
        (seqs,) = self.sources()
        return sequences_canonical(seqs.scan())
