"""Preparation at 1M rows: `user-time` on the synthetic Taobao file, rebuilt each round
(force=True), and the cache hit that every later run pays instead."""

from __future__ import annotations

from bench.datasets.prepare import prepare


def test_prepare_user_time_1m_rows(benchmark, synth_data, tmp_path):
    benchmark.group = "prepare 1M rows"

    def build():
        return prepare(
            "taobao-synth", "user-time", data_dir=synth_data, cache_dir=tmp_path, force=True
        )

    folder = benchmark.pedantic(build, rounds=3, warmup_rounds=0)
    assert folder.meta["counts"]["total"]["events"] > 0


def test_prepare_cache_hit_1m_rows(benchmark, synth_data, synth_artifact):
    benchmark.group = "prepare 1M rows"
    cache = synth_artifact.parent.parent  # <cache>/taobao-synth/user-time-<hash>
    folder = benchmark(prepare, "taobao-synth", "user-time", data_dir=synth_data, cache_dir=cache)
    assert folder == synth_artifact
