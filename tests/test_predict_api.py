"""`bench predict` for real use and its Python API: `bench.load_run(...).recommend` gives
what `bench predict --json` prints, a file of many histories gives what single calls give,
bad lines are named by file, line and column (or skipped and reported), behaviours reach
models that use them, and loading a run for prediction leaves Lightning unimported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bench
from bench.cli import app
from bench.datasets.spec import read_spec, read_train_sequences
from bench.errors import BenchError
from bench.training.config import resolve
from bench.training.run import execute
from tests.conftest import small_event_log
from tests.planted_runs import QUICK, run_settings

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def events_root(tmp_path_factory):
    """A data folder with an event log that has behaviours (pv, fav, cart, buy)."""
    root = tmp_path_factory.mktemp("predict_events")
    (root / "custom").mkdir()
    small_event_log(root / "custom" / "events.csv")
    return root


@pytest.fixture(scope="module")
def events_gru_run(events_root):
    return _train_on_events(events_root, "gru4rec")


def _train_on_events(root: Path, model: str, **params) -> str:
    run = run_settings(root, model, **QUICK, max_epochs=1)
    run["adapter_options"] = {"path": "events.csv"}
    return execute(resolve({}, params, run), progress=False)["run_dir"]


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def _answers(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


HISTORIES = [["3", "7"], ["12", "5", "5", "40", "1"], ["50"], [str(i) for i in range(1, 51)] * 2]


# ------------------------------------------------------------------ one history


def test_load_run_recommend_equals_predict_json(gru_run):
    rec = bench.load_run(gru_run)
    assert rec.name == "gru4rec" and rec.n_items == 50
    for history in HISTORIES:
        got = _cli(
            "predict", "--run", gru_run, "--history", ",".join(history), "--json", "--k", "7"
        )
        assert got.exit_code == 0, got.output
        (printed,) = _answers(got.stdout)
        assert printed == {"history": history, **rec.recommend(history, k=7)}
    # unknown ids: left out, listed, and said on stderr
    got = _cli("predict", "--run", gru_run, "--history", "3,nope,7", "--json", "--exclude-seen")
    assert got.exit_code == 0 and "nope" in got.stderr
    (printed,) = _answers(got.stdout)
    assert printed["unknown"] == ["nope"] and printed["used_history"] == 2
    assert {"3", "7"}.isdisjoint(row["item"] for row in printed["items"])
    assert printed["items"] == rec.recommend(["3", "7"], exclude_seen=True)["items"]
    # raw ids may be integers; k beyond the catalogue gives the whole catalogue
    assert rec.recommend([3, 7], k=500)["items"][:20] == rec.recommend(["3", "7"])["items"]
    assert len(rec.recommend([3, 7], k=500)["items"]) == 50


def test_api_refuses_what_it_would_misread(gru_run):
    rec = bench.load_run(gru_run)
    with pytest.raises(BenchError, match="list of raw item ids"):
        rec.recommend("3,7")  # would be read one character an item
    with pytest.raises(BenchError, match="list of names"):
        rec.recommend(["3", "7"], behaviors="pv,cart")
    with pytest.raises(BenchError, match="k must be"):
        rec.recommend(["3"], k=0)
    with pytest.raises(BenchError, match=r"histories\[1\].*1 behaviours for 2"):
        rec.recommend_many([["3"], ["3", "7"]], behaviours=[None, ["pv"]])
    with pytest.raises(BenchError, match=r"histories\[1\].*unknown.*nope"):
        rec.recommend_many([["3"], ["nope", "7"]], skip_unknown=False)
    with pytest.raises(BenchError, match="both"):
        rec.recommend(["3"], behaviors=["pv"], behaviours=["pv"])


# ------------------------------------------------------------------ many histories


def test_histories_file_answers_as_single_calls(gru_run, tmp_path):
    rec = bench.load_run(gru_run)
    lines = [
        '{"history": ["3", "7"], "id": "user-1"}',
        "12 5 5 40 1",
        "",  # blank lines are passed over, and still counted
        '{"history": [50], "behaviours": ["cart"]}',
        ",".join(HISTORIES[3]),
        "7, 3",
    ]
    file = tmp_path / "histories.txt"
    file.write_text("\n".join(lines) + "\n")
    got = _cli("predict", "--run", gru_run, "--histories", str(file), "--json", "--k", "5")
    got_batched = _cli(
        *("predict", "--run", gru_run, "--histories", str(file)),
        *("--json", "--k", "5", "--batch-size", "2"),
    )
    assert got.exit_code == 0 and got_batched.exit_code == 0, got.output + got_batched.output
    answers = _answers(got.stdout)
    expected = [["3", "7"], ["12", "5", "5", "40", "1"], ["50"], HISTORIES[3], ["7", "3"]]
    assert [a["line"] for a in answers] == [1, 2, 4, 5, 6]
    assert [a["history"] for a in answers] == expected
    assert answers[0]["id"] == "user-1" and "id" not in answers[1]
    assert answers[2]["behaviors"] == ["cart"]
    for answer, batched, history in zip(
        answers, _answers(got_batched.stdout), expected, strict=True
    ):
        single = rec.recommend(history, k=5)
        assert answer["used_history"] == single["used_history"] == batched["used_history"]
        # one model pass over several histories rounds a few scores differently (~1e-7)
        for row in (answer, batched):
            assert [r["item"] for r in row["items"]] == [r["item"] for r in single["items"]]
            assert [r["score"] for r in row["items"]] == pytest.approx(
                [r["score"] for r in single["items"]], rel=1e-5
            )
    # the Python batch form gives the file's answers, batch for batch
    many = rec.recommend_many(expected, k=5, behaviors=[None, None, ["cart"], None, None])
    assert many == [{key: a[key] for key in ("items", "unknown", "used_history")} for a in answers]
    # the plain table form: one line per history, best item first
    table = _cli("predict", "--run", gru_run, "--histories", str(file), "--k", "3")
    assert table.exit_code == 0, table.output
    rows = table.stdout.splitlines()[1:]
    assert [row.split("\t")[0] for row in rows] == ["1", "2", "4", "5", "6"]
    assert rows[0].split("\t")[1].split()[0] == answers[0]["items"][0]["item"]


def test_histories_from_stdin(gru_run):
    got = CliRunner().invoke(
        app,
        ["predict", "--run", gru_run, "--histories", "-", "--json", "--k", "3"],
        input="3 7\n12,5\n",
    )
    assert got.exit_code == 0, got.output
    assert [a["history"] for a in _answers(got.stdout)] == [["3", "7"], ["12", "5"]]


BAD_LINES = [
    ("3 nope 7", ["line 3, column 3", "nope"]),
    ('{"history": ["3", "nope"]}', ["line 3, column 'history[1]'", "nope"]),
    ('{"history": ["3", "7"], "behaviours": ["pv"]}', ["column 'behaviours'", "1 behaviours"]),
    ('{"history": ["3"], "behaviors": ["click"]}', ["column 'behaviors[0]'", "'click'"]),
    ('{"history": ["3", 7.5]}', ["column 'history[1]'", "7.5"]),
    ('{"history": ["3", }', ["line 3, column 19", "not valid JSON"]),
    ('{"hist": ["3"]}', ["line 3, column 'hist'", "unknown key"]),
    ('{"history": []}', ["column 'history'", "non-empty"]),
    ("nope gone", ["line 3, column 1", "none of the history"]),
]


@pytest.mark.parametrize(("bad", "words"), BAD_LINES, ids=[b for b, _ in BAD_LINES])
def test_a_bad_line_is_named_and_the_lines_before_it_are_kept(gru_run, tmp_path, bad, words):
    file = tmp_path / "h.jsonl"
    file.write_text(f"3 7\n12 5\n{bad}\n50\n")
    got = _cli("predict", "--run", gru_run, "--histories", str(file), "--json")
    assert got.exit_code == 2, got.output
    assert "Traceback" not in got.output
    assert f"{file}, line 3" in got.stderr
    message = " ".join(got.stderr.split())
    for word in words:
        assert word in message, message
    assert "the 2 histories before this line were answered" in message
    assert [a["line"] for a in _answers(got.stdout)] == [1, 2]  # nothing computed is lost


def test_skip_bad_reports_each_bad_line_and_answers_the_rest(gru_run, tmp_path):
    file = tmp_path / "h.jsonl"
    text = ["3 7"]
    for bad, _ in BAD_LINES:
        text += [bad, "12 5"]
    file.write_text("\n".join(text) + "\n")
    got = _cli("predict", "--run", gru_run, "--histories", str(file), "--json", "--skip-bad")
    assert got.exit_code == 0, got.output
    answers = _answers(got.stdout)
    assert [a["line"] for a in answers] == [1] + [2 * i + 3 for i in range(len(BAD_LINES))]
    stderr = " ".join(got.stderr.split())
    for i in range(len(BAD_LINES)):
        assert f"skipped: {file}, line {2 * i + 2}," in stderr
    assert f"{len(answers)} histories answered, {len(BAD_LINES)} bad lines skipped" in stderr
    # --skip-unknown leaves unknown ids out, as `recommend` does, and lists them
    got = _cli(
        *("predict", "--run", gru_run, "--histories", str(file), "--json"),
        *("--skip-bad", "--skip-unknown"),
    )
    by_line = {a["line"]: a for a in _answers(got.stdout)}
    assert by_line[2]["unknown"] == ["nope"] and by_line[2]["used_history"] == 2
    assert by_line[2]["items"] == by_line[1]["items"]  # "3 nope 7" is answered as "3 7"
    assert 18 not in by_line  # "nope gone": nothing known is left, still a bad line


def test_a_missing_file_and_a_mixed_up_command_line_are_clear(gru_run, tmp_path):
    got = _cli("predict", "--run", gru_run, "--histories", str(tmp_path / "none.txt"))
    assert got.exit_code == 2 and "none.txt" in got.stderr and "--histories" in got.stderr
    got = _cli("predict", "--run", gru_run)
    assert got.exit_code == 2 and "--history or --histories" in got.stderr
    got = _cli("predict", "--run", gru_run, "--history", "3", "--histories", "x")
    assert got.exit_code == 2 and "either" in got.stderr
    got = _cli("predict", "--run", gru_run, "--history", "3,7", "--behaviours", "pv,click")
    assert got.exit_code == 2 and "--behaviours" in got.stderr and "click" in got.stderr


# ------------------------------------------------------------------ behaviours


def test_behaviours_change_the_scores_of_a_behaviour_aware_model(events_gru_run):
    rec = bench.load_run(events_gru_run)
    assert rec.spec.has_behavior and rec.model.embedding.behaviors is not None
    history = rec.raw[1:5]
    views = rec.recommend(history, k=rec.n_items)
    carts = rec.recommend(history, k=rec.n_items, behaviours=["pv", "pv", "cart", "buy"])
    score = {r["item"]: r["score"] for r in views["items"]}
    changed = [abs(score[r["item"]] - r["score"]) for r in carts["items"]]
    assert max(changed) > 1e-4
    # the CLI passes them through: its JSON is the API's answer
    got = _cli(
        *("predict", "--run", str(rec.run_dir), "--history", ",".join(history)),
        *("--behaviours", "pv,pv,cart,buy", "--json", "--k", str(rec.n_items)),
    )
    assert got.exit_code == 0, got.output
    (printed,) = _answers(got.stdout)
    assert printed["items"] == carts["items"]
    assert printed["behaviors"] == ["pv", "pv", "cart", "buy"]


def test_behaviour_weights_reorder_a_repeat_model(events_root):
    """repeat with buy_weight 20: a bought item outranks a later viewed one; viewed
    both, the later one leads."""
    rec = bench.load_run(_train_on_events(events_root, "repeat", buy_weight=20.0))
    a, b = rec.raw[1], rec.raw[2]
    top = [r["item"] for r in rec.recommend([a, b], k=2, behaviors=["buy", "pv"])["items"]]
    assert top == [a, b]
    top = [r["item"] for r in rec.recommend([a, b], k=2, behaviors=["pv", "pv"])["items"]]
    assert top == [b, a]
    line = json.dumps({"history": [a, b], "behaviours": ["buy", "pv"]})
    (answer,) = rec.recommend_file(_Lines([line]), k=2)
    assert [r["item"] for r in answer["items"]] == [a, b]


class _Lines(list):
    """An in-memory histories stream (recommend_file reads any iterable of lines)."""

    name = "<memory>"


# ------------------------------------------------------------------ start-up


def test_the_spec_from_meta_counts_equals_the_one_from_an_events_scan(events_gru_run):
    """Prediction and the DataModule read one spec (bench.datasets.spec); its feature
    flags come from meta.json's counts, which must say what a scan of the events says."""
    from bench.datasets.artifact import read_meta
    from bench.datasets.spec import event_flags

    artifact = Path(json.loads((Path(events_gru_run) / "result.json").read_text())["artifact"])
    meta = read_meta(artifact)
    assert meta.get("counts")  # prepare wrote them, so the fast path is the one taken
    assert event_flags(artifact, meta, need_max=False) == event_flags(artifact, {}, need_max=False)
    spec = read_spec(artifact, meta, 20)
    assert spec.has_behavior and spec.has_category and spec.max_len == 20
    sequences = read_train_sequences(artifact)
    assert sequences.offsets[-1] == sequences.items.numel() == int(spec.item_counts.sum())


def test_loading_a_run_for_prediction_does_not_import_lightning(gru_run):
    """Lightning was 7 of the 11 s a `bench predict` took to start."""
    code = (
        "import sys, bench\n"
        f"assert bench.load_run({gru_run!r}).recommend(['3', '7'], k=3)['items']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
