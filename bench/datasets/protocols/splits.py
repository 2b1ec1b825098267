"""Split codes: each event row of a recipe carries the split it belongs to (TRAIN, VALID,
TEST, in the order of SPLITS), and each example target the split of its example."""

from __future__ import annotations

from bench.datasets.schema import BEHAVIOR_INDEX, SPLITS

TRAIN, VALID, TEST = 0, 1, 2
NO_TARGET = len(SPLITS)  # target code of an event row that is no example's target
BUY = BEHAVIOR_INDEX["buy"]  # the behaviour a "buy" target must have
