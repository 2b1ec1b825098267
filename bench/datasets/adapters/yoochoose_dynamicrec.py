"""YOOCHOOSE as preprocessed by the DynamicRec authors: session windows, no time.

`yoochoose.csv` holds windows of 10 comma-separated item indices, left-padded with 0
(padding, dropped here), one session window per line.
The line is the session (and the user), the position the order; ts is a synthetic
position clock (epoch + global index in ms), so protocols that need clock time refuse
it. The default protocol is `user-loo`: each line is a sequence, its last item the test
target, as the papers that publish this file evaluate it.
"""

from __future__ import annotations

from bench.datasets.adapters.diginetica_dynamicrec import DigineticaDynamicRecAdapter
from bench.datasets.registry import register_dataset


@register_dataset
class YoochooseDynamicRecAdapter(DigineticaDynamicRecAdapter):
    """Same file layout as the DIGINETICA one; only the file and its description differ."""

    name = "yoochoose-dynamicrec"
    description = "YOOCHOOSE sessions preprocessed by DynamicRec: 80,183 windows of 10, no time"
    files = ("yoochoose.csv",)
