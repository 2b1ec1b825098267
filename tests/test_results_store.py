"""The results store keeps every row under concurrent writers and refuses bad URLs."""

import json
import multiprocessing as mp

import pytest

from bench.errors import ConfigError
from bench.results import ResultsStore


def _result(run_id: str, seed: int = 0, model: str = "gru4rec") -> dict:
    return {
        "run_id": run_id,
        "model": model,
        "dataset": "ml-100k",
        "protocol": "user-loo",
        "protocol_hash": "abc123",
        "target": "any",
        "seed": seed,
        "synthetic": False,
        "metrics": {"valid": {"ndcg@10": 0.1}, "test": {"ndcg@10": 0.1}},
    }


def _writer(path: str, worker: int, n: int) -> None:
    store = ResultsStore(path)
    for i in range(n):
        store.add(
            _result(f"w{worker}-r{i}", seed=i), kind="trial", study="s", trial=worker * 1000 + i
        )


@pytest.mark.slow
def test_four_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "results.db")
    ResultsStore(path)  # create the schema once
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = ResultsStore(path).rows()
    assert len(rows) == 100
    assert len({(r["run_id"], r["trial"]) for r in rows}) == 100


def test_a_store_another_process_creates_meanwhile_opens(tmp_path, monkeypatch):
    """Three campaigns opening one new store at once on a GPU machine: one looked, found
    no table, and its CREATE then failed because another had made it meanwhile
    ("table results already exists"). Here the other process wins the same race."""
    import sqlalchemy as sa

    import bench.results as results

    path = tmp_path / "new.db"
    real = results._meta.create_all
    calls = []

    def lose_the_race(conn, checkfirst=True):
        calls.append(checkfirst)
        if len(calls) == 1:  # another process creates the tables after this one looked
            other = sa.create_engine(f"sqlite:///{path}")
            with other.begin() as c:
                real(c)
            other.dispose()
            return real(conn, checkfirst=False)
        return real(conn, checkfirst=checkfirst)

    monkeypatch.setattr(results._meta, "create_all", lose_the_race)
    store = ResultsStore(path)
    store.add(_result("r1"))
    assert len(calls) == 2 and [r["run_id"] for r in store.rows()] == ["r1"]


def test_writing_the_same_run_twice_keeps_one_row(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    store.add(_result("a"), kind="run")
    changed = _result("a")
    changed["metrics"]["test"]["ndcg@10"] = 0.5
    store.add(changed, kind="run")
    rows = store.rows()
    assert len(rows) == 1
    assert rows[0]["result"]["metrics"]["test"]["ndcg@10"] == 0.5
    assert json.loads(json.dumps(rows[0]["result"]))["run_id"] == "a"


def test_filters_by_dataset_and_protocol(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    store.add(_result("a"), kind="run")
    other = _result("b")
    other["protocol"] = "user-time"
    store.add(other, kind="run")
    assert [r["run_id"] for r in store.rows(protocol="user-time")] == ["b"]
    assert store.rows(dataset="taobao") == []


def test_unknown_scheme_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown storage scheme 'mysql'"):
        ResultsStore("mysql://localhost/db")


def test_unreachable_postgres_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot open the results store"):
        ResultsStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
