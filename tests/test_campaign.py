"""benchmarks/campaigns/campaign.py: a second invocation with the same settings runs nothing (the
store already holds each run by its id); another protocol variant is another run; bad
input is a clear error. The script runs as its users run it (tests import no benchmark)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.leaderboard import build_tables
from bench.results import ResultsStore

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()  # the test changes directory


pytestmark = pytest.mark.skipif(not (DATA / "ml-100k").exists(), reason="ml-100k not available")


def campaign(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m benchmarks.campaigns.campaign ARGS` in `cwd`, reading the test data."""
    env = dict(os.environ, BENCH_DATA_DIR=str(DATA), WANDB_MODE="offline")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "benchmarks.campaigns.campaign", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def test_second_invocation_runs_nothing_and_variants_are_new_runs(tmp_path):
    args = ["--datasets", "ml-100k", "--models", "pop", "--seeds", "0", "--results", "c.db"]
    args += ["--runs-dir", "runs", "--cache-dir", "cache", "--leaderboards", "boards"]
    first = campaign(args, tmp_path)  # relative paths resolve here, in the children too
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "1 runs to do, 0 already in c.db" in out and "ml-100k    pop" in out
    (row,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert row["model"] == "pop" and (tmp_path / "runs" / row["run_id"] / "result.json").exists()
    assert list((tmp_path / "boards").glob("ml-100k__user-loo__any__*.md"))
    # the run's ranks, stored relative to its folder, give the table its per-target NDCG@10
    (table,) = build_tables(ResultsStore(tmp_path / "c.db"))
    (pop,) = table["rows"]
    assert (
        table["targets"] == 943 and table["data_fingerprint"] == row["result"]["data_fingerprint"]
    )
    assert pop["gains"].mean() == pytest.approx(pop["mean"]["ndcg@10"])

    second = campaign(args, tmp_path)
    assert second.returncode == 0 and "0 runs to do, 1 already in c.db" in second.stdout
    (again,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert again["created_at"] == row["created_at"]  # not run and stored again

    # a protocol parameter makes another protocol hash: another run, planned not skipped
    variant = [*args, "--protocol-set", "min_seq_length=5", "--seeds", "0,1", "--dry-run"]
    third = campaign(variant, tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    out = third.stdout
    assert "2 runs to do" in out
    assert "would run ml-100k pop 0" in out and "would run ml-100k pop 1" in out


def test_runs_made_on_another_machine_are_adopted_and_then_skipped(tmp_path):
    """A GPU machine runs part of a campaign into its own folder; --adopt brings its
    finished runs here (without checkpoints), records them where they now sit, and the
    campaign here then skips them. An unfinished folder stays behind."""
    args = ["--datasets", "ml-100k", "--models", "pop", "--seeds", "0", "--cache-dir", "cache"]
    elsewhere = tmp_path / "gpu"
    elsewhere.mkdir()
    made = campaign(
        [*args, "--results", "g.db", "--runs-dir", "runs", "--leaderboards", "b"], elsewhere
    )
    assert made.returncode == 0, made.stderr[-3000:]
    (finished,) = [p.parent for p in (elsewhere / "runs").glob("*/result.json")]
    (finished / "checkpoints").mkdir()
    (finished / "checkpoints" / "last.ckpt").write_bytes(b"x" * 1000)
    (elsewhere / "runs" / "sasrec-ml-100k-user-loo-s0-0000000f").mkdir()  # stopped early
    broken = elsewhere / "runs" / "narm-ml-100k-user-loo-s0-0000000e"
    broken.mkdir()
    (broken / "result.json").write_text('{"run_id": ')  # cut off while copied

    here = ["--results", "c.db", "--runs-dir", "runs"]
    adopted = campaign([*here, "--adopt", str(elsewhere / "runs")], tmp_path)
    assert adopted.returncode == 0, adopted.stderr[-3000:]
    assert "1 finished runs adopted" in adopted.stdout
    assert f"{broken / 'result.json'}: not JSON" in adopted.stderr
    assert [p.parent.name for p in (tmp_path / "runs").glob("*/identity.json")] == [finished.name]
    assert not (tmp_path / "runs" / finished.name / "checkpoints").exists()
    (row,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert row["run_id"] == finished.name
    assert row["result"]["run_dir"] == str((tmp_path / "runs" / finished.name).resolve())
    (table,) = build_tables(ResultsStore(tmp_path / "c.db"))  # its ranks read from here
    assert table["rows"][0]["gains"].mean() == pytest.approx(table["rows"][0]["mean"]["ndcg@10"])

    again = campaign([*here, "--adopt", str(elsewhere / "runs")], tmp_path)
    assert again.returncode == 0 and len(ResultsStore(tmp_path / "c.db").rows()) == 1
    missing = campaign([*here, "--adopt", str(tmp_path / "nowhere")], tmp_path)
    assert missing.returncode == 2 and "option --adopt:" in missing.stderr
    assert "Traceback" not in missing.stderr
    planned = campaign([*args, *here, "--dry-run"], tmp_path)
    assert "0 runs to do, 1 already in c.db" in planned.stdout, planned.stdout


def test_protocol_set_rejects_a_pair_without_a_value(tmp_path):
    """Values are typed by bench's `key=value` reader (tests/test_cli_data.py); a pair
    without one is a clear error naming the option, before any data is read."""
    args = ["--datasets", "ml-100k", "--protocol-set", "min_item_support", "--dry-run"]
    bad = campaign([*args, "--results", "c.db"], tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--protocol-set" in bad.stderr and "min_item_support=" in bad.stderr


@pytest.mark.slow  # prepares six real data sets
def test_every_campaign_data_set_plans_its_runs(tmp_path):
    """The six real data sets resolve to their default protocols and plan one run each."""
    names = [
        "ml-100k",
        "ml-latest-small",
        "taobao",
        "diginetica-dynamicrec",
        "yoochoose-dynamicrec",
        "diginetica",
    ]
    if not all((DATA / n).exists() for n in names):
        pytest.skip("real data sets not available")
    args = ["--datasets", ",".join(names), "--models", "pop", "--seeds", "0", "--dry-run"]
    args += ["--results", str(tmp_path / "c.db"), "--cache-dir", str(tmp_path / "cache")]
    planned = campaign(args, tmp_path)
    assert planned.returncode == 0, planned.stderr[-3000:]
    out = planned.stdout
    assert "6 runs to do" in out
    assert all(f"would run {n} pop 0" in out for n in names)
    # the Taobao sample with a lower item support is a variant the campaign can run
    taobao = [*args[:1], "taobao", *args[2:], "--protocol-set", "min_item_support=1"]
    variant = campaign(taobao, tmp_path)
    assert variant.returncode == 0 and "1 runs to do" in variant.stdout


@pytest.mark.slow  # trains gru4rec on ml-100k three times
def test_a_stopped_run_resumes_from_its_last_epoch_and_a_broken_checkpoint_starts_afresh(
    tmp_path,
):
    """A campaign stopped mid-run (a session's end) continues that run from its last
    checkpoint instead of starting it over; an unreadable checkpoint is not fatal."""
    args = ["--datasets", "ml-100k", "--models", "gru4rec", "--seeds", "0", "--results", "c.db"]
    args += ["--runs-dir", "runs", "--cache-dir", "cache", "--leaderboards", "boards"]
    args += ["--training", "sequences", "--max-epochs", "2", "--patience", "2"]
    first = campaign(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (row,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    run_dir = tmp_path / "runs" / row["run_id"]

    def stopped_before_the_result() -> None:  # what a kill after the last epoch leaves
        (tmp_path / "c.db").unlink()
        (run_dir / "result.json").unlink()

    (tmp_path / "c.db").unlink()  # finished, but the store never heard of it
    recorded = campaign(args, tmp_path)
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    assert "finished meanwhile, recorded" in recorded.stderr
    (kept,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert kept["result"]["finished_at"] == row["result"]["finished_at"]  # not trained again
    (table,) = build_tables(ResultsStore(tmp_path / "c.db"))  # its ranks are found
    assert table["rows"][0]["gains"].mean() == pytest.approx(
        row["result"]["metrics"]["test"]["ndcg@10"]
    )

    stopped_before_the_result()
    resumed = campaign(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {row['run_id']} from checkpoints/last.ckpt (after 2 of" in resumed.stderr
    (again,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert again["result"]["metrics"]["test"] == row["result"]["metrics"]["test"]

    stopped_before_the_result()
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # killed while writing it
    fresh = campaign(args, tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "truncated or corrupt" in fresh.stderr and "starting afresh" in fresh.stderr
    (third,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert third["result"]["epochs"] == 2  # trained from the start, not from a broken file
    assert third["result"]["metrics"]["test"] == row["result"]["metrics"]["test"]


@pytest.mark.slow  # starts a gru4rec run on ml-100k
def test_a_stopped_campaign_stops_its_runs_and_starts_no_more(tmp_path):
    """SIGTERM to the campaign reaches its running worker (which keeps its checkpoints)
    instead of leaving an orphan that trains on unseen; no further job starts."""
    env = dict(os.environ, BENCH_DATA_DIR=str(DATA), WANDB_MODE="offline")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    args = ["--datasets", "ml-100k", "--models", "gru4rec,lstm", "--seeds", "0"]
    store = str(tmp_path / "c.db")  # names this test's processes among all on the machine
    args += ["--results", store, "--runs-dir", "runs", "--cache-dir", "cache"]
    args += ["--training", "sequences", "--max-epochs", "50", "--leaderboards", "boards"]
    command = [sys.executable, "-m", "benchmarks.campaigns.campaign", *args]

    def start() -> subprocess.Popen:  # in a process group of its own, as a session is
        return subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def workers() -> list[int]:
        pattern = f"--results {store} .*--one "
        found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
        return [int(p) for p in found.stdout.split()]

    def epochs() -> int:
        from bench.training.run import checkpoint_epochs

        found = list((tmp_path / "runs").glob("gru4rec-*/checkpoints/last.ckpt"))
        return checkpoint_epochs(found[0]) if found else 0

    def wait_for_epochs(parent: subprocess.Popen, at_least: int) -> None:
        deadline = time.monotonic() + 300
        while epochs() < at_least:
            assert parent.poll() is None and time.monotonic() < deadline, parent.stderr.read()
            time.sleep(0.5)

    parent = start()
    wait_for_epochs(parent, 1)
    assert len(workers()) == 1
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=120)
    assert parent.returncode == 128 + signal.SIGTERM
    assert not workers()  # the worker went with it, none started after
    assert "stopped by SIGTERM" in err  # the run's own message: checkpoints kept
    assert not list((tmp_path / "runs").glob("lstm-*"))

    # a session's end signals the whole group at once, parent and a resumed worker alike:
    # the worker stops (not "starting afresh" over its checkpoint) and the parent ends
    kept = epochs()
    parent = start()
    wait_for_epochs(parent, kept + 1)
    os.killpg(parent.pid, signal.SIGTERM)
    out, err = parent.communicate(timeout=120)
    assert parent.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "resuming" in err and "starting afresh" not in err
    assert epochs() > kept and not workers()
