"""`bench data ...` through typer's CliRunner: help, listing, errors, option parsing, and
end to end (synth -> prepare -> stats, fetch) on small files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from bench import cli
from bench.cli import app, parse_assignments
from bench.datasets import registry
from bench.errors import ConfigError, DataError
from tests.test_datamodule import small_sequences, write_artifact

torch.set_num_threads(1)

DATA_DIR = Path(
    os.environ.get("BENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
)
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


@pytest.mark.parametrize(
    "command, example",
    [
        ("list", "bench data list"),
        ("prepare", "bench data prepare --dataset"),
        ("stats", "bench data stats --dataset"),
        ("synth", "bench data synth taobao --rows"),
        ("fetch", "bench data fetch --dataset"),
    ],
)
def test_help_shows_an_example(command, example):
    result = invoke("data", command, "--help")
    assert result.exit_code == 0, result.output
    assert f"bench data {command}" in result.output  # usage line
    assert "Example:" in result.output and example in result.output


def test_root_help_lists_data_commands():
    result = invoke("data", "--help")
    assert result.exit_code == 0
    for command in ("list", "prepare", "stats", "synth", "fetch"):
        assert command in result.output
    assert invoke("--version").output.startswith("bench ")


class _Fake(registry.Adapter):
    name = "zz-fake"
    description = "a fake data set for the CLI test"
    files: ClassVar[tuple[str, ...]] = ("events.csv", "extra.csv")
    homepage = "https://example.org"
    default_protocol = "user-time"
    synthetic = True


class _Absent(_Fake):
    name = "zz-absent"
    description = "never downloaded"
    synthetic = False


def test_list_shows_found_and_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.DATASETS._classes, _Fake.name, _Fake)
    monkeypatch.setitem(registry.DATASETS._classes, _Absent.name, _Absent)
    (tmp_path / "zz-fake").mkdir()
    (tmp_path / "zz-fake" / "events.csv").write_text("1,2\n")
    result = invoke("data", "list", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line for line in result.output.splitlines() if "zz-" in line
    }
    fake = [c.strip() for c in rows["zz-fake"].split("│")[1:-1]]
    assert fake == [
        "zz-fake", "a fake data set for the CLI test", "events.csv, extra.csv", "user-time",
        "yes", "found events.csv",
    ]  # fmt: skip
    absent = [c.strip() for c in rows["zz-absent"].split("│")[1:-1]]
    assert absent[4:] == ["no", "missing"]


def test_parse_assignments_types_values():
    values = ["a=3", "b=true", "c=0.5", "d=[1, 2]", "e=2017-11-25", "f=hello world", "g="]
    assert parse_assignments(values, "--set") == {
        "a": 3, "b": True, "c": 0.5, "d": [1, 2], "e": "2017-11-25", "f": "hello world",
        "g": None,
    }  # fmt: skip
    assert parse_assignments(["start=2017-11-25T00:00:00+08:00"], "--set") == {
        "start": "2017-11-25T00:00:00+08:00"
    }
    assert parse_assignments(None, "--set") == {}
    # text YAML cannot read (a strftime format) stays text; mappings inside a value too
    assert parse_assignments(["time_format=%Y-%m-%d %H:%M", "columns=user=a,item=b"], "-o") == {
        "time_format": "%Y-%m-%d %H:%M",
        "columns": "user=a,item=b",
    }


@pytest.mark.parametrize(
    "values, message",
    [(["x"], "expected key=value"), (["=3"], "expected key=value"),
     (["k=[1,"], "cannot read the value of k"), (["k='a"], "cannot read the value of k"), (["k=1", "k=2"], "k is given twice")],
)  # fmt: skip
def test_parse_assignments_errors_name_the_option(values, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_assignments(values, "--set")
    assert err.value.option == "--set"


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "prepare", "-d", "taobao", "--set", "min_item_support"], "option --set"),
        (["data", "prepare", "-d", "taobao", "-o", "nokey"], "option --option"),
        (["data", "prepare", "-d", "no-such-set"], "unknown data set 'no-such-set'"),
        (["data", "stats"], "give --dataset"),
    ],
)
def test_user_errors_exit_2_without_traceback(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_data_error_shows_file_and_fix(tmp_path):
    result = invoke("data", "stats", "--artifact", str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert str(tmp_path / "missing" / "meta.json") in result.output
    assert "fix: run `bench data prepare`" in result.output


def test_unexpected_exceptions_keep_their_traceback(tmp_path, monkeypatch):
    def boom(_):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr("bench.datasets.stats.dataset_stats", boom)
    result = invoke("data", "stats", "--artifact", str(tmp_path))
    assert isinstance(result.exception, RuntimeError)
    assert result.exit_code == 1


def test_main_prints_bench_error_in_red_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench", "data", "stats", "--artifact", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no prepared artifact here" in err and "Traceback" not in err

    def raise_data_error(**_):
        raise DataError("outside any command")

    monkeypatch.setattr(cli, "app", raise_data_error)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "outside any command" in capsys.readouterr().err


def test_stats_of_an_artifact_table_and_json(tmp_path):
    artifact = write_artifact(tmp_path / "a", small_sequences(), max_len=3)
    result = invoke("data", "stats", "--artifact", str(artifact))
    assert result.exit_code == 0, result.output
    assert "per split" in result.output and "history length per example" in result.output
    result = invoke("data", "stats", "--artifact", str(artifact), "--json")
    stats = json.loads(result.stdout)
    assert stats["events"] == 14 and stats["splits"]["valid"]["examples"] == 3


def test_prepare_delegates_parsed_options(tmp_path, monkeypatch):
    """Options arrive typed at bench.datasets.prepare.prepare; the stats of its artifact print."""
    artifact = write_artifact(tmp_path / "a", small_sequences())
    calls = []

    def fake_prepare(dataset, protocol=None, **kw):
        calls.append((dataset, protocol, kw))
        return artifact

    monkeypatch.setattr("bench.datasets.prepare.prepare", fake_prepare)
    result = invoke(
        "data", "prepare", "-d", "taobao", "-p", "user-time", "--target", "buy",
        "--set", "min_item_support=2", "--param", "tz=UTC", "-o", "path=x.csv", "--force",
        "--columns", "user=u,item=i",
        "--data-dir", "/d", "--cache-dir", "/c",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [
        (
            "taobao",
            "user-time",
            {
                "target": "buy",
                "params": {"min_item_support": 2, "tz": "UTC"},
                "data_dir": Path("/d"),
                "cache_dir": Path("/c"),
                "force": True,
                "adapter_options": {"path": "x.csv", "columns": "user=u,item=i"},
                "progress": True,  # stage lines on stderr
            },
        )
    ]
    assert f"artifact: {artifact}" in result.output
    assert "events per behaviour" in result.output
    assert invoke("data", "prepare", "-d", "x", "--target", "all").exit_code == 2  # click usage


# ---------------------------------------------------------------- end to end


def test_synth_writes_the_taobao_file(tmp_path):
    result = invoke("data", "synth", "taobao", "--rows", "3000", "--seed", "4", "--data-dir",
                    str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    written = tmp_path / "taobao-synth" / "UserBehavior.csv"
    lines = written.read_text().splitlines()
    assert len(lines) == 3000 and len(lines[0].split(",")) == 5
    assert (tmp_path / "taobao-synth" / "SYNTHETIC.txt").exists()
    assert "not real" in result.output
    again = tmp_path / "again"
    invoke("data", "synth", "taobao", "--rows", "3000", "--seed", "4", "--data-dir", str(again))
    assert (again / "taobao-synth" / "UserBehavior.csv").read_bytes() == written.read_bytes()


def _has_adapter(name: str) -> bool:
    return name in registry.list_datasets()


@pytest.mark.skipif(not _has_adapter("taobao-synth"), reason="taobao-synth adapter not there yet")
def test_synth_prepare_stats_end_to_end(tmp_path):
    from bench.datasets.stats import dataset_stats

    data, cache = tmp_path / "data", tmp_path / "cache"
    assert (
        invoke("data", "synth", "taobao", "--rows", "20000", "--data-dir", str(data)).exit_code == 0
    )
    args = ["-d", "taobao-synth", "--data-dir", str(data), "--cache-dir", str(cache)]
    args += ["--set", "min_item_support=1"]
    result = invoke("data", "prepare", *args)
    assert result.exit_code == 0, result.output
    artifact = Path(result.output.split("artifact:")[1].split()[0])
    assert artifact.is_dir() and artifact.is_relative_to(cache)
    assert "SYNTHETIC" in result.output
    result = invoke("data", "stats", *args, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(dataset_stats(artifact)))


@pytest.mark.skipif(not _has_adapter("ml-100k"), reason="ml-100k adapter not there yet")
def test_stats_on_real_movielens(tmp_path):
    result = invoke(
        "data", "stats", "-d", "ml-100k", "-p", "user-loo", "--data-dir", str(DATA_DIR),
        "--cache-dir", str(tmp_path), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    # ML-100K: 943 users, 100,000 ratings, all kept by user-loo; one valid and one test
    # target per user
    assert stats["users"] == 943 and stats["events"] == 100_000
    assert stats["splits"]["valid"]["examples"] == stats["splits"]["test"]["examples"] == 943


def _custom_log(folder: Path) -> Path:
    (folder / "custom").mkdir(parents=True)
    lines = ["uid;sku;when"]
    for u in range(6):
        lines += [f"u{u};{(u * 7 + k * 3) % 8 + 1};{1_600_000_000 + u * 100_000 + k * 60}"
                  for k in range(6)]  # fmt: skip
    (folder / "custom" / "log.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_prepare_own_file_with_columns(tmp_path):
    data = _custom_log(tmp_path / "data")
    args = ["data", "prepare", "-d", "custom", "-p", "user-loo", "--data-dir", str(data)]
    args += ["--cache-dir", str(tmp_path / "cache"), "-o", "path=log.csv"]
    result = invoke(*args, "--columns", "user=uid,item=sku,time=when")
    assert result.exit_code == 0, result.output
    artifact = Path(result.output.split("artifact:")[1].split()[0])
    meta = json.loads((artifact / "meta.json").read_text())
    assert meta["adapter_options"]["columns"] == "user=uid,item=sku,time=when"
    assert meta["counts"]["total"]["events"] == 36
    # a wrong mapping is the adapter's clear error, exit 2, naming the column
    result = invoke(*args, "--columns", "user=nobody,item=sku,time=when")
    assert result.exit_code == 2, result.output
    assert "nobody" in result.output and "Traceback" not in result.output


def _serve(folder: Path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_fetch_from_a_local_server(tmp_path):
    import hashlib
    import zipfile

    served = tmp_path / "www"
    served.mkdir()
    archive = served / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    server = _serve(served)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip"
        base = ["data", "fetch", "-d", "ml-100k", "--url", url]
        result = invoke(*base, "--data-dir", str(tmp_path / "bad"), "--sha256", "0" * 64)
        assert result.exit_code == 2 and "SHA-256 mismatch" in result.output
        assert not (tmp_path / "bad" / "ml-100k" / "u.data").exists()
        result = invoke(*base, "--data-dir", str(tmp_path / "d"), "--sha256", digest)
        assert result.exit_code == 0, result.output
    finally:
        server.shutdown()
    assert (tmp_path / "d" / "ml-100k" / "u.data").read_text().startswith("1\t10\t5")
    assert "fetched ml-100k" in result.output
