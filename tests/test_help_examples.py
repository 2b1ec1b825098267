"""Every example a user is shown runs: each `Example:` of every command's --help epilog
and every `bench ...` line of README.md's command blocks, in-process, on the real files
in ../shared/data. So an example that drifts from the options (`-o file=` where the
option is `path=`) fails here, not in a new user's first minutes.

The examples run as written except for size and place: training is cut to one epoch of
three batches (`--max-epochs 1`, `--set limit_train_batches=3`), searches to one trial
and one seed, synthetic files to 2,000 rows, one worker; runs, cache, results and
outputs go to a temporary folder; W&B is off. An example that needs something this
machine does not have is skipped with the reason (SKIPPED, below); none is only parsed:
each runs to exit code 0.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from bench.cli import app

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO.parent / "shared" / "data").resolve()
ROOT = typer.main.get_command(app)

# the first words of an example, or a word in it, and why it cannot run here
SKIPPED = {
    "data fetch": "downloads from the network",
    "dashboard": "serves until stopped (test_first_hour checks that its URL answers)",
    "serve": "serves HTTP until stopped",
    "postgresql://": "needs a PostgreSQL server",
    "--gpus": "needs GPUs",
}
# examples known to be wrong, with what is wrong: strict, so a fix turns them green
WRONG: dict[str, str] = {}
# sizes cut down; every other value is kept as the example gives it
SMALL = {"--max-epochs": "1", "--trials": "1", "--seeds": "1", "--workers": "1", "--rows": "2000"}


def _commands(cmd=ROOT, path=()):
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, cmd


def help_examples() -> list[tuple[str, str]]:
    found = []
    for path, cmd in _commands():
        for text in re.findall(r"Example: \[bold\](.+?)\[/\]", cmd.epilog or ""):
            found.append((f"bench {' '.join(path)} --help", text))
    return found


def readme_examples() -> list[tuple[str, str]]:
    """`bench` lines of README.md's bash blocks, continuation lines joined, comments cut."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("bench "):
                found.append(("README.md", line))
    return found


EXAMPLES = help_examples() + readme_examples()


def test_the_examples_are_found():
    """Every command shows an example, and the README lists its commands."""
    shown = {where for where, _ in EXAMPLES}
    for path, _ in _commands():
        assert f"bench {' '.join(path)} --help" in shown, f"bench {' '.join(path)} has no Example:"
    assert sum(where == "README.md" for where, _ in EXAMPLES) >= 15


def test_adapter_options_in_help_texts_exist():
    """`-o key=value` suggested in any option's help names an option `custom` takes
    (five pages once suggested -o file=, which is path=)."""
    from bench.datasets.registry import get_adapter

    takes = set(get_adapter("custom", None).option_help)
    suggested = [
        (path, key)
        for path, cmd in _commands()
        for param in cmd.params
        for key in re.findall(r"-o (\w+)=", getattr(param, "help", None) or "")
    ]
    assert len({path for path, _ in suggested}) >= 5
    assert [(p, k) for p, k in suggested if k not in takes] == []


def _command_of(args: list[str]):
    cmd, depth = ROOT, 0
    while hasattr(cmd, "commands"):
        cmd, depth = cmd.commands[args[depth]], depth + 1
    return cmd, depth


def _options(cmd) -> set[str]:
    return {name for param in cmd.params for name in getattr(param, "opts", [])}


def _value(args: list[str], option: str) -> str | None:
    return args[args.index(option) + 1] if option in args else None


def _replace(args: list[str], option: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(option) + 1] = value
    return out


def _adapt(args: list[str], tmp: Path, runs_for) -> list[str]:
    """The example, sized for a test and pointed at tmp and ../shared/data."""
    cmd, depth = _command_of(args)
    have = _options(cmd)
    for option, small in SMALL.items():
        if option in args:
            args = _replace(args, option, small)
    if "--data-dir" in args:
        given = _value(args, "--data-dir")
        args = _replace(args, "--data-dir", str(tmp / given) if "mylogs" in given else str(DATA))
    if "--run" in args:
        args = _replace(args, "--run", str(runs_for(_value(args, "--run"))))
    if "--storage" in args:
        args = _replace(args, "--storage", str(tmp / "optuna.db"))
    extra = {
        "--data-dir": str(tmp / "data") if args[:2] == ["data", "synth"] else str(DATA),
        "--cache-dir": str(tmp / "cache"),
        "--runs-dir": str(tmp / "runs"),
        "--results": str(tmp / "runs" / "results.db"),
        "--out": str(tmp / "out"),
        "--threads": "1",
        "--max-epochs": "1",
    }
    for option, value in extra.items():
        if option in have and option not in args:
            args += [option, value]
    if "--wandb" in have:
        args.append("--no-wandb")
    if args[0] in ("run", "sweep", "automl"):
        args += ["--set", "limit_train_batches=3"]
    return args


def _skip_reason(text: str) -> str | None:
    words = " ".join(shlex.split(text)[1:])
    for key, reason in SKIPPED.items():
        if words.startswith(key) or f" {key}" in f" {words}":
            return reason
    return None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A custom file for the README's own-data examples (Taobao rows renamed as a shop's
    export would name them) and finished runs for --run examples, made on demand."""
    tmp = tmp_path_factory.mktemp("examples")
    rows = (DATA / "taobao" / "UserBehavior.csv").read_text().splitlines()[:20000]
    lines = ["uid,sku,category,event_type,ts"] + rows
    (tmp / "mylogs").mkdir()
    (tmp / "mylogs" / "events.csv").write_text("\n".join(lines) + "\n")
    made: dict[str, Path] = {}

    def runs_for(given: str) -> Path:
        """A finished run of the model and data set the example's path names
        (runs/<model>-<dataset>-...; runs/<run_id>: gru4rec on ml-100k)."""
        match = re.match(r"runs/([a-z0-9_]+)-(ml-100k|taobao|diginetica)", given)
        model, dataset = match.groups() if match else ("gru4rec", "ml-100k")
        key = f"{model}-{dataset}"
        if key not in made:
            out = _invoke(
                ["run", "--model", model, "--dataset", dataset, "--data-dir", str(DATA)]
                + ["--cache-dir", str(tmp / "cache"), "--runs-dir", str(tmp / "made")]
                + ["--max-epochs", "1", "--threads", "1", "--no-wandb"]
                + ["--set", "limit_train_batches=3"]
            )
            made[key] = Path(re.search(r"run: (\S+)", out).group(1))
        return made[key]

    return tmp, runs_for


def _invoke(args: list[str]) -> str:
    env = {"COLUMNS": "300", "WANDB_MODE": "offline"}
    if "ddp" in args:
        # DDP starts its other processes by running this process's command line again:
        # in-process that would be pytest itself, so these run as `bench` does
        done = subprocess.run(
            [str(Path(sys.executable).parent / "bench"), *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        code, output, error = done.returncode, done.stdout + done.stderr, None
    else:
        result = CliRunner().invoke(app, args, env=env)
        code, output, error = result.exit_code, result.output, result.exception
    assert code == 0, f"bench {shlex.join(args)} exited {code}:\n{output[-3000:]}" + (
        f"\n{error!r}" if error else ""
    )
    return output


def _continue_or_resume(args: list[str], continued: bool, tmp: Path) -> list[str]:
    """A run first, as a --resume example presumes: finished, for an example that
    continues it with a larger --max-epochs; else left as a SIGTERM leaves a run
    (checkpoints, no result). Returns the example as it then runs."""
    _invoke([a for a in args if a != "--resume"])  # --max-epochs 1 by now
    if continued:
        return _replace(args, "--max-epochs", "2")  # more than the run it continues
    (result,) = (tmp / "runs").glob("*/result.json")
    result.unlink()
    return args


def _before(args: list[str], tmp: Path) -> None:
    """Results for a leaderboard example to tabulate, a run for a rekey example to keep."""
    if args[0] == "rekey":
        _invoke(
            ["run", "--model", "pop", "--dataset", "ml-100k", "--data-dir", str(DATA)]
            + ["--cache-dir", str(tmp / "cache"), "--no-wandb"]
            + ["--runs-dir", str(tmp / _value(args, "--runs-dir"))]
            + ["--results", str(tmp / _value(args, "--results"))]
        )
    if args[0] == "leaderboard":
        dataset = _value(args, "--dataset") or "ml-100k"
        _invoke(
            ["run", "--model", "pop", "--dataset", dataset, "--data-dir", str(DATA)]
            + ["--cache-dir", str(tmp / "cache"), "--runs-dir", str(tmp / "runs"), "--no-wandb"]
        )


@pytest.mark.slow  # about 4 minutes for all of them on 2 busy cores
@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[f"{w}: {t[:70]}" for w, t in EXAMPLES])
def test_example_runs(where, text, workspace, tmp_path, monkeypatch, request):
    reason = _skip_reason(text)
    if reason:
        pytest.skip(reason)
    for start, wrong in WRONG.items():
        if text.startswith(start):
            request.applymarker(pytest.mark.xfail(reason=wrong, strict=True))
    shared_tmp, runs_for = workspace
    (tmp_path / "mylogs").symlink_to(shared_tmp / "mylogs")
    monkeypatch.chdir(tmp_path)  # ./data, runs/, leaderboards/ of an example land here
    monkeypatch.setenv("BENCH_DATA_DIR", str(DATA))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(shared_tmp / "cache"))
    given = shlex.split(text)[1:]
    args = _adapt(given, tmp_path, runs_for)
    if args[0] == "run" and "--resume" in args:
        args = _continue_or_resume(args, continued="--max-epochs" in given, tmp=tmp_path)
    else:
        _before(args, tmp_path)
    _invoke(args)
