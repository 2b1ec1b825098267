"""The `bench` command line: each command parses its options and delegates to the library.

Adding a command is adding one function: decorate it with `@app.command()` (or with a
sub-app's, e.g. `@data_app.command()`), declare its options, import what it delegates
to inside the function (so `bench --help` stays fast), and print the result.
A `BenchError` raised anywhere below a command is printed as its message and fix, in
red, with exit code 2 and no traceback; any other exception keeps its traceback.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from bench import __version__
from bench.errors import BenchError, ConfigError

EXIT_USER_ERROR = 2


def _report(err: BenchError) -> None:
    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/] [red]{escape(err.render())}[/]"
    )


class _BenchGroup(TyperGroup):
    """Root group: turns a BenchError from any subcommand into a message and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchError as err:
            _report(err)
            raise typer.Exit(getattr(err, "exit_code", EXIT_USER_ERROR)) from None


app = typer.Typer(
    name="bench",
    cls=_BenchGroup,
    help="Leakage-safe benchmarking and AutoML for user-behaviour sequence prediction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(
    help="Data sets: list, download, generate, prepare (protocol -> artifact) and describe.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Leakage-safe benchmarking and AutoML for user-behaviour sequence prediction."""


# ---------------------------------------------------------------- option parsing


def parse_assignments(values: list[str] | None, option: str) -> dict:
    """`key=value` strings into a dict; values are typed by YAML (3 -> int, true -> bool,
    [a, b] -> list); dates, times and text YAML cannot read stay text for the library."""
    out: dict = {}
    for text in values or []:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"expected key=value, got {text!r}",
                option=option,
                hint=f"write e.g. {option} min_item_support=3",
            )
        if key in out:
            raise ConfigError(f"{key} is given twice", option=option, hint="give each key once")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            if not raw.strip().startswith(("[", "{", '"', "'")):
                value = raw.strip()  # plain text YAML cannot hold, e.g. a strftime "%Y-%m-%d"
            else:
                problem = getattr(err, "problem", None) or "not valid YAML"
                raise ConfigError(
                    f"cannot read the value of {key}: {raw!r} ({problem})",
                    option=option,
                    hint="close the list, mapping or quote, e.g. key=[1, 2]",
                ) from None
        out[key] = raw.strip() if isinstance(value, dt.date | dt.datetime) else value
    return out


class Target(StrEnum):
    any = "any"
    buy = "buy"


class SynthKind(StrEnum):
    taobao = "taobao"


Dataset = Annotated[
    str, typer.Option("--dataset", "-d", help="Data set name, as `bench data list` shows it.")
]
Protocol = Annotated[
    str | None,
    typer.Option("--protocol", "-p", help="Protocol (default: the data set's own)."),
]
TargetOpt = Annotated[
    Target, typer.Option("--target", help="Predict the next event of any behaviour, or a buy.")
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "--param",
        metavar="KEY=VALUE",
        help="Protocol parameter, repeatable (e.g. --set min_item_support=3; the "
        "protocol. prefix that `bench run` takes is accepted too).",
    ),
]
AdapterOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        metavar="KEY=VALUE",
        help="Adapter option, repeatable (e.g. for `custom`: -o path=log.csv).",
    ),
]
Columns = Annotated[
    str | None,
    typer.Option(
        "--columns",
        metavar="ROLE=COL,...",
        help="Column mapping of your own file (`custom`), e.g. user=uid,item=sku,time=ts; "
        "the same as -o columns=...",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder of the raw files, or the folder holding <dataset>/ "
        "(default: $BENCH_DATA_DIR/<dataset>, else ./data/<dataset>).",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Artifact cache (default: $BENCH_CACHE_DIR, else ./cache)."),
]


def _prepare(dataset, protocol, target, params, options, columns, data_dir, cache_dir, force):
    from bench.datasets.prepare import prepare

    adapter_options = parse_assignments(options, "--option")
    if columns is not None:
        adapter_options["columns"] = columns
    return prepare(
        dataset,
        protocol,
        target=target.value,
        params=_protocol_params(params) or None,
        data_dir=data_dir,
        cache_dir=cache_dir,
        force=force,
        adapter_options=adapter_options or None,
        progress=True,  # stage lines on stderr: stdout keeps the statistics (and --json)
    )


def _protocol_params(params: list[str] | None) -> dict:
    """--set values of a protocol, with or without the `protocol.` prefix `bench run`
    needs, so the same --set works on both commands."""
    values = parse_assignments(params, "--set")
    out = {key.removeprefix("protocol."): value for key, value in values.items()}
    if len(out) < len(values):
        raise ConfigError(
            "a parameter is given twice (with and without protocol.)",
            option="--set",
            hint="give each parameter once",
        )
    return out


# ---------------------------------------------------------------- bench data ...


@data_app.command(
    "list",
    epilog="Example: [bold]bench data list --data-dir ../shared/data[/]",
)
def data_list(data_dir: DataDir = None) -> None:
    """List the registered data sets and whether their raw files are found."""
    from bench.datasets.registry import get_adapter, list_datasets

    table = Table(title="data sets")
    for name in ("name", "description", "files", "default protocol", "synthetic", "raw files"):
        table.add_column(name, overflow="fold")
    for name, cls in list_datasets().items():
        found = get_adapter(name, data_dir).raw_files()
        status = (
            "[green]found[/] " + ", ".join(p.name for p in found) if found else "[red]missing[/]"
        )
        table.add_row(
            name,
            cls.description,
            ", ".join(cls.files) or "-",
            cls.default_protocol,
            "yes" if cls.synthetic else "no",
            status,
        )
    Console().print(table)


@data_app.command(
    "prepare",
    epilog="Example: [bold]bench data prepare --dataset taobao --protocol user-time "
    "--set min_item_support=2[/]",
)
def data_prepare(
    dataset: Dataset,
    protocol: Protocol = None,
    target: TargetOpt = Target.any,
    params: Params = None,
    options: AdapterOptions = None,
    columns: Columns = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
) -> None:
    """Build (or reuse) the cached artifact of a data set under a protocol; print its stats."""
    from bench.datasets.stats import dataset_stats, render_stats

    path = _prepare(dataset, protocol, target, params, options, columns, data_dir, cache_dir, force)
    console = Console()
    console.print(f"artifact: [bold]{escape(str(path))}[/]")
    render_stats(dataset_stats(path), console)


@data_app.command(
    "stats",
    epilog="Example: [bold]bench data stats --dataset diginetica --protocol session-srgnn[/]",
)
def data_stats(
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Data set name, as `bench data list` shows it."),
    ] = None,
    protocol: Protocol = None,
    target: TargetOpt = Target.any,
    params: Params = None,
    options: AdapterOptions = None,
    columns: Columns = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    artifact: Annotated[
        Path | None,
        typer.Option("--artifact", help="Describe this artifact folder instead of preparing."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Statistics of a prepared data set: users, sessions, items, behaviours, splits, drops."""
    import json

    from bench.datasets.stats import dataset_stats, render_stats

    if artifact is None and dataset is None:
        raise ConfigError(
            "give --dataset (or --artifact)",
            option="--dataset",
            hint="e.g. bench data stats --dataset ml-100k; `bench data list` shows the names",
        )
    path = artifact or _prepare(
        dataset, protocol, target, params, options, columns, data_dir, cache_dir, False
    )
    result = dataset_stats(path)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        render_stats(result, Console())


@data_app.command(
    "synth",
    epilog="Example: [bold]bench data synth taobao --rows 1000000 --seed 0[/] "
    "(writes ./data/taobao-synth/UserBehavior.csv)",
)
def data_synth(
    kind: Annotated[SynthKind, typer.Argument(help="Which file format to generate.")],
    rows: Annotated[int, typer.Option("--rows", "-n", min=1, help="Rows to write.")],
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    users: Annotated[int | None, typer.Option(help="Users (default: scaled with rows).")] = None,
    items: Annotated[int | None, typer.Option(help="Items (default: scaled with rows).")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where taobao-synth/ goes (default: $BENCH_DATA_DIR, else ./data).",
        ),
    ] = None,
) -> None:
    """Generate a synthetic data set in a real file format (always labelled synthetic)."""
    from bench.datasets.synth import write_taobao_synth

    base = data_dir or Path(os.environ.get("BENCH_DATA_DIR", "data"))
    folder = base if base.name == "taobao-synth" else base / "taobao-synth"
    summary = write_taobao_synth(
        folder / "UserBehavior.csv", rows, seed=seed, users=users, items=items
    )
    table = Table(title=f"synthetic {kind.value} data (not real)", show_header=False)
    for key, value in summary.items():
        table.add_row(key, escape(str(value)))
    Console().print(table)


@data_app.command(
    "fetch",
    epilog="Example: [bold]bench data fetch --dataset ml-100k --data-dir ./data[/]",
)
def data_fetch(
    dataset: Dataset,
    data_dir: DataDir = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Download from this URL (a mirror) instead.")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Also check the archive's SHA-256.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download even if the files are there.")
    ] = False,
) -> None:
    """Download a data set that has a public direct link (MovieLens), checksum verified."""
    from bench.datasets.fetch import fetch as download

    result = download(dataset, data_dir=data_dir, url=url, sha256=sha256, force=force)
    Console().print(f"fetched {escape(dataset)}: [bold]{escape(str(result))}[/]")


# ---------------------------------------------------------------- models, runs


RunSettings = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Run setting (lr=0.003), model hyperparameter (dropout=0.1 or model.dropout=0.1) "
        "or protocol parameter (protocol.min_item_support=3); repeatable.",
    ),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="YAML file with the same keys as --set.")
]
MaxEpochs = Annotated[int | None, typer.Option("--max-epochs", help="Epoch limit (default 30).")]
MaxTime = Annotated[
    str | None,
    typer.Option(
        "--max-time",
        metavar="SECONDS|HH:MM:SS",
        help="Wall-clock limit on training (e.g. 120 or 00:02:00); the best epoch so far "
        "is then evaluated. Recorded with the run; --resume may raise it.",
    ),
]


def _print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=title)
    table.add_column("split")
    names = [
        m
        for m in ("hr@10", "ndcg@10", "mrr@20", "hr@20", "ndcg@20", "hr@50")
        if m in next(iter(metrics.values()))
    ]
    for name in names:
        table.add_column(name, justify="right")
    for split, values in metrics.items():
        table.add_row(split, *(f"{values[n]:.4f}" for n in names))
    Console().print(table)


@app.command("models", epilog="Example: [bold]bench models 'gru*'[/]")
def models_list(
    pattern: Annotated[str, typer.Argument(help="Shell-style name pattern.")] = "*",
) -> None:
    """List the registered models: name, family, paper, default training mode (the other
    mode it allows in brackets; fitted models have none) and default hyperparameters."""
    from bench.models import get_model_class, list_models

    table = Table(title="models")
    for column in ("name", "family", "paper", "training", "defaults"):
        table.add_column(column, overflow="fold")
    for name in list_models(pattern):
        cls = get_model_class(name)
        defaults = ", ".join(f"{k}={v}" for k, v in cls.defaults().items())
        table.add_row(name, cls.family, cls.paper, _training_modes(cls), escape(defaults))
    Console().print(table)


def _training_modes(cls: type) -> str:
    """'sequences (or prefixes)', 'prefixes (or sequences)', 'prefixes' or 'fitted'."""
    mode = getattr(cls, "default_training", None)
    if mode is None:
        return "fitted"
    if not getattr(cls, "trains_on_sequences", False):
        return mode
    other = "prefixes" if mode == "sequences" else "sequences"
    return f"{mode} [dim](or {other})[/]"


@app.command(
    "run",
    epilog="Example: [bold]bench run --model gnn_lstm --dataset taobao --seed 1 "
    "--max-time 00:02:00 --set embedding_dim=128 --set lr=0.002[/]",
)
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (`bench models`).")],
    dataset: Dataset,
    protocol: Protocol = None,
    target: Annotated[Target | None, typer.Option("--target", help="any (default) or buy.")] = None,
    config: ConfigFile = None,
    settings: RunSettings = None,
    options: AdapterOptions = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for everything.")] = None,
    max_epochs: MaxEpochs = None,
    max_time: MaxTime = None,
    devices: Annotated[
        str | None, typer.Option("--devices", help="Devices (a number, or 'auto').")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="Lightning strategy, e.g. ddp.")
    ] = None,
    accelerator: Annotated[
        str | None, typer.Option("--accelerator", help="cpu, gpu or auto.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch CPU threads (recorded).")
    ] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    runs_dir: Annotated[
        Path | None, typer.Option("--runs-dir", help="Where runs go (default ./runs).")
    ] = None,
    results: Annotated[
        str | None,
        typer.Option("--results", help="Results store (default <runs-dir>/results.db)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from the run's last checkpoint (says from which epoch, or why "
            "not); with a larger --max-epochs or patience it continues a finished run.",
        ),
    ] = False,
    wandb: Annotated[
        bool, typer.Option("--wandb/--no-wandb", help="Track with W&B (offline by default).")
    ] = True,
) -> None:
    """Train and evaluate one model on one data set under one protocol."""
    from bench.training.config import load_config_file, resolve
    from bench.training.run import execute

    file_values = load_config_file(config) if config else {}
    flags = {
        "model": model,
        "dataset": dataset,
        "protocol": protocol,
        "target": target.value if target else None,
        "seed": seed,
        "max_epochs": max_epochs,
        "max_time": max_time,
        "devices": int(devices) if devices and devices.isdigit() else devices,
        "strategy": strategy,
        "accelerator": accelerator,
        "threads": threads,
        "data_dir": str(data_dir) if data_dir else None,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "runs_dir": str(runs_dir) if runs_dir else None,
        "resume": resume or None,
        "wandb": wandb,
        "adapter_options": parse_assignments(options, "--option"),
    }
    run_config = resolve(file_values, parse_assignments(settings, "--set"), flags)
    # the store lives beside the runs unless named
    result = execute(run_config, results=results or Path(run_config.runs_dir) / "results.db")
    if result.get("is_global_zero", True):
        _print_metrics(
            f"{result['model']} on {result['dataset']} ({result['protocol']})", result["metrics"]
        )
        Console().print(f"run: [bold]{escape(result['run_dir'])}[/]")


@app.command(
    "predict",
    epilog="Example: [bold]bench predict --run runs/gnn_lstm-taobao-... --history 3006793,2331370 "
    "--behaviours pv,cart --k 10 --json[/]",
)
def predict_cmd(
    run_dir: Annotated[Path, typer.Option("--run", help="A finished run folder.")],
    history: Annotated[
        str | None,
        typer.Option(
            "--history",
            help="Raw item ids, oldest first, comma-separated; unknown ids are left out "
            "with a warning.",
        ),
    ] = None,
    histories: Annotated[
        Path | None,
        typer.Option(
            "--histories",
            help="A file of many histories (- for stdin), one a line: JSON "
            '{"history": [...], "behaviours": [...], "id": ...} or plain ids separated by '
            "spaces or commas. One model load; one answer a line.",
        ),
    ] = None,
    behaviours: Annotated[
        str | None,
        typer.Option(
            "--behaviours",
            "--behaviors",
            help="With --history: one of pv, fav, cart, buy per item, comma-separated "
            "(default all pv); models trained with behaviours use them.",
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="How many items.")] = 20,
    exclude_seen: Annotated[
        bool, typer.Option("--exclude-seen", help="Leave the history's own items out.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON: one object per history (a line each)."),
    ] = False,
    skip_unknown: Annotated[
        bool,
        typer.Option(
            "--skip-unknown",
            help="With --histories: leave unknown item ids out of their history (listed in "
            "the answer) instead of refusing the line.",
        ),
    ] = False,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="With --histories: report a bad line (file, line, column) on stderr and "
            "go on, instead of stopping at it.",
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Histories per model pass.")
    ] = 256,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads.")] = None,
) -> None:
    """Top-K next items for a history of raw item ids, or for a file of many."""
    import json

    import torch

    from bench.training.predict import Recommender

    if (history is None) == (histories is None):
        raise ConfigError(
            "give either --history or --histories",
            option="--history",
            hint="--history 242,302 for one history, --histories FILE for many",
        )
    if histories is not None and behaviours is not None:
        raise ConfigError(
            "--behaviours goes with --history",
            option="--behaviours",
            hint='in a histories file give them per line: {"history": [...], "behaviours": [...]}',
        )
    if threads:
        torch.set_num_threads(threads)
    err = Console(stderr=True, highlight=False)
    rec = Recommender(run_dir)
    if histories is not None:
        answered = skipped = 0
        if not as_json:
            typer.echo(f"line\ttop {k} items (score)")
        for answer in rec.recommend_file(
            "-" if str(histories) == "-" else histories,
            k=k,
            exclude_seen=exclude_seen,
            skip_unknown=skip_unknown,
            skip_bad=skip_bad,
            batch_size=batch_size,
        ):
            if isinstance(answer, BenchError):
                skipped += 1
                err.print(f"[yellow]skipped:[/] {escape(answer.render())}")
            elif as_json:
                answered += 1
                typer.echo(json.dumps(answer))
            else:
                answered += 1
                top = "  ".join(f"{row['item']} ({row['score']:.4f})" for row in answer["items"])
                typer.echo(f"{answer['line']}\t{top}")
        if skipped or not as_json:
            err.print(f"{answered} histories answered, {skipped} bad lines skipped")
        return
    items = [h.strip() for h in history.split(",") if h.strip()]
    names = [b.strip() for b in behaviours.split(",")] if behaviours is not None else None
    try:
        out = rec.recommend(items, k=k, exclude_seen=exclude_seen, behaviors=names)
    except BenchError as bad:
        if bad.option == "behaviors":
            bad.option = "--behaviours"
        raise
    if out["unknown"]:
        err.print(
            f"[yellow]unknown to this model, left out:[/] {escape(', '.join(out['unknown']))}"
        )
    if as_json:
        given = {"history": items} | ({"behaviors": names} if names is not None else {})
        typer.echo(json.dumps(given | out))
        return
    table = Table(title=f"top {k} after {out['used_history']} history items")
    for column in ("rank", "item", "score"):
        table.add_column(column)
    for row in out["items"]:
        table.add_row(str(row["rank"]), escape(str(row["item"])), f"{row['score']:.4f}")
    Console().print(table)


@app.command(
    "evaluate",
    epilog="Example: [bold]bench evaluate --run runs/gru4rec-ml-100k-... --devices 2 "
    "--strategy ddp --accelerator cpu[/]",
)
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Option("--run", help="A finished run folder.")],
    split: Annotated[str, typer.Option("--split", help="test or valid.")] = "test",
    devices: Annotated[str, typer.Option("--devices", help="Processes / devices.")] = "1",
    strategy: Annotated[str, typer.Option("--strategy", help="e.g. ddp.")] = "auto",
    accelerator: Annotated[str, typer.Option("--accelerator", help="cpu or gpu.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Evaluate a finished run's best checkpoint again (e.g. on several processes)."""
    import json

    from bench.training.run import evaluate_run, is_launched_rank

    if split not in ("test", "valid"):
        raise ConfigError(f"unknown split {split!r}", option="--split", hint="test or valid")
    metrics = evaluate_run(
        run_dir,
        devices=int(devices) if devices.isdigit() else devices,
        strategy=strategy,
        accelerator=accelerator,
        split=split,
    )
    if is_launched_rank():
        return
    if as_json:
        typer.echo(json.dumps(metrics))
    else:
        _print_metrics(str(run_dir), {split: metrics})


# ---------------------------------------------------------------- sweeps, boards


def _sweep_common(given: dict, model: str, *, automl: bool = False) -> tuple:
    """What `bench sweep` and `bench automl` share, read from the command's own arguments
    (its `locals()`): the run settings every trial shares, as a RunConfig of `model`, and
    the search options (storage, results store, budget, pruner). For `automl` the settings
    are shared by many models (training=sequences holds where a model allows it) and are
    not checked against `model` here (automl checks every model's before any work)."""
    from bench.training.config import RUN_KEYS, load_config_file, resolve

    file_values = load_config_file(given["config"]) if given["config"] else {}
    assignments = parse_assignments(given["settings"], "--set")
    shared = RUN_KEYS | {"protocol_params", "adapter_options"}
    unknown = sorted(
        k
        for k in {**file_values, **assignments}
        if k not in shared and not k.startswith("protocol.")
    )
    if unknown:
        raise ConfigError(
            f"unknown run setting(s) {', '.join(unknown)}",
            option="--set",
            hint=f"sweeps take run settings ({', '.join(sorted(RUN_KEYS))}) and "
            "protocol.<name>; the search space sets the model's hyperparameters",
        )
    flags = {
        "model": model,
        "dataset": given["dataset"],
        "protocol": given["protocol"],
        "target": given["target"].value,
        "max_epochs": given["max_epochs"],
        "max_time": given["max_time"],
        "data_dir": str(given["data_dir"]) if given["data_dir"] else None,
        "cache_dir": str(given["cache_dir"]) if given["cache_dir"] else None,
        "threads": given["threads"],
        # --wandb is the default that a config file or --set wandb=... overrides
        "wandb": None if "wandb" in {**file_values, **assignments} else given["wandb"],
        "adapter_options": parse_assignments(given["options"], "--option"),
    }
    run = resolve(file_values, assignments, flags, check=not automl, shared_training=automl)
    return run, {
        "storage": given["storage"],
        "results": given["results"],
        "heartbeat": given["heartbeat"],
        "cpu_seconds": given["cpu_seconds"],
        "pruner": (given["pruner"] or PrunerName.median).value,
        "patience": given["patience"],
        "progress": True,  # a line per finished trial, or a bar on a terminal
    }


SweepStorage = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna storage: a file (default runs/optuna.db), "
        "sqlite:///... or postgresql://... shared by workers on many machines.",
    ),
]
Results = Annotated[
    str | None, typer.Option("--results", help="Results store (default runs/results.db).")
]
Heartbeat = Annotated[
    int, typer.Option("--heartbeat", min=1, help="Seconds between worker heartbeats.")
]
Threads = Annotated[int | None, typer.Option("--threads", help="torch CPU threads per worker.")]
Seeds = Annotated[int, typer.Option("--seeds", min=1, help="Seeds of the final runs.")]
SweepWandb = Annotated[
    bool, typer.Option("--wandb/--no-wandb", help="Track trials with W&B (offline by default).")
]


class PrunerName(StrEnum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


CpuSeconds = Annotated[
    float | None,
    typer.Option(
        "--cpu-seconds",
        min=0.001,
        help="CPU-seconds budget (per model): no new trial starts once finished trials "
        "used this much process CPU time, and a trained model's trial still running then "
        "is ended (pruned); the search ends on --trials or this, whichever comes first.",
    ),
]
PrunerOpt = Annotated[
    PrunerName,
    typer.Option("--pruner", help="Stop weak trials early on validation NDCG@10 after each epoch."),
]
PatienceTrials = Annotated[
    int | None,
    typer.Option(
        "--patience-trials",
        min=1,
        help="Converged: stop after this many finished trials in a row without a new best.",
    ),
]


@app.command(
    "sweep",
    epilog="Example: [bold]bench sweep --model sasrec --dataset ml-100k --trials 30 --workers 2 "
    "--max-epochs 20[/]",
)
def sweep_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (`bench models`).")],
    dataset: Dataset,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Finished trials wanted.")],
    protocol: Protocol = None,
    target: TargetOpt = Target.any,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds of search per worker.")
    ] = None,
    storage: SweepStorage = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Local processes.")] = 1,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="One worker per listed GPU, e.g. 0,1,2,3.")
    ] = None,
    seeds: Seeds = 3,
    results: Results = None,
    settings: RunSettings = None,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    threads: Threads = None,
    heartbeat: Heartbeat = 60,
    options: AdapterOptions = None,
    wandb: SweepWandb = True,
    cpu_seconds: CpuSeconds = None,
    pruner: PrunerOpt = PrunerName.median,
    patience: PatienceTrials = None,
    max_epochs: MaxEpochs = None,
    max_time: MaxTime = None,
) -> None:
    """Tune a model with Optuna (TPE, pruning), then train the best with several seeds."""
    from bench.sweep import SweepOptions, sweep

    gpu_list = None
    if gpus:
        try:
            gpu_list = [int(g) for g in gpus.split(",")]
        except ValueError:
            raise ConfigError(
                f"expected GPU numbers like 0,1 not {gpus!r}",
                option="--gpus",
                hint="list the device indices nvidia-smi shows, e.g. --gpus 0,1",
            ) from None
    run, common = _sweep_common(locals(), model)
    outcome = sweep(
        SweepOptions(
            run=run,
            trials=trials,
            timeout=timeout,
            study=study,
            workers=workers,
            gpus=gpu_list,
            seeds=seeds,
            **common,
        )
    )
    budget = outcome["budget"]
    Console().print(
        f"study [bold]{escape(outcome['study'])}[/]: best trial {outcome['best_trial']} "
        f"(valid {outcome['best_value']:.4f}) with {escape(str(outcome['best_params']))}; "
        f"budget {budget['trials']} trials, {budget['seconds']:.0f} s, "
        f"{budget['cpu_seconds']:.0f} CPU s, stopped by {budget['stopped_by']}"
    )
    for result in outcome["finals"]:
        _print_metrics(f"seed {result['seed']}", result["metrics"])


@app.command(
    "automl",
    epilog="Example: [bold]bench automl --dataset ml-100k --models gru4rec,sasrec,sknn --trials 20 "
    "--cpu-seconds 3600 --max-epochs 20[/]",
)
def automl_cmd(
    dataset: Dataset,
    models: Annotated[str, typer.Option("--models", help="Comma-separated names, or all.")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="Trials per model.")],
    protocol: Protocol = None,
    target: TargetOpt = Target.any,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds of search per model.")
    ] = None,
    seeds: Seeds = 3,
    storage: SweepStorage = None,
    results: Results = None,
    out: Annotated[Path, typer.Option("--out", help="Leaderboard folder.")] = Path("leaderboards"),
    settings: RunSettings = None,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    threads: Threads = None,
    heartbeat: Heartbeat = 60,
    options: AdapterOptions = None,
    wandb: SweepWandb = True,
    cpu_seconds: CpuSeconds = None,
    pruner: PrunerOpt = PrunerName.median,
    patience: PatienceTrials = None,
    max_epochs: MaxEpochs = None,
    max_time: MaxTime = None,
) -> None:
    """The same tuning budget for every model, then the leaderboard of the data set."""
    from bench.models.registry import list_models
    from bench.sweep import automl

    names = [m.strip() for m in models.split(",") if m.strip()]
    names = list_models() if names == ["all"] else names
    if not names:
        raise ConfigError(
            "--models names no model", option="--models", hint="e.g. --models gru4rec,sknn"
        )
    given = locals()
    # each model's own run settings: its default training mode and that mode's defaults
    resolved = [_sweep_common(given, name, automl=True) for name in names]
    common = resolved[0][1]
    outcome = automl(
        [run for run, _ in resolved],
        trials=trials,
        seeds=seeds,
        leaderboard_dir=out,
        timeout=timeout,
        **common,
    )
    for path in outcome["files"]:
        Console().print(f"wrote {escape(path)}")


@app.command("leaderboard", epilog="Example: [bold]bench leaderboard --dataset ml-100k[/]")
def leaderboard_cmd(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Only this data set.")
    ] = None,
    protocol: Protocol = None,
    results: Results = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("leaderboards"),
    wandb: Annotated[
        bool, typer.Option("--wandb/--no-wandb", help="Also log the tables to W&B (offline).")
    ] = False,
) -> None:
    """Markdown, CSV and an HTML page (table + accuracy/cost plot) from the results store."""
    from bench.leaderboard import build_tables, log_tables, write_leaderboards
    from bench.results import ResultsStore

    tables = build_tables(ResultsStore(results), dataset=dataset, protocol=protocol)
    for path in write_leaderboards(tables, out):
        Console().print(f"wrote {escape(str(path))}")
    if wandb:
        log_tables(tables, out / "wandb")


@app.command(
    "rekey",
    epilog="Example: [bold]bench rekey --runs-dir runs/cite --results runs/cite.db[/]",
)
def rekey_cmd(
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Folder of runs.")] = Path("runs"),
    results: Results = None,
) -> None:
    """Give runs made before run ids held every hyperparameter (defaults included) their
    ids now, folders and results-store rows alike, so a campaign skips them correctly."""
    from bench.training.rekey import rekey

    report = rekey(runs_dir, results or str(runs_dir / "results.db"))
    console = Console(soft_wrap=True)  # one line per run, as scripts read them
    for old, new in report.moved:
        console.print(f"{escape(old)} -> {escape(new)}")
    for folder, why in report.left:
        console.print(f"left as is: {escape(folder)} ({why})")
    console.print(
        f"{len(report.moved)} runs renamed ({report.rows} results rows), "
        f"{len(report.rewritten)} identities completed in place, {report.current} current, "
        f"{len(report.left)} left as is"
    )


@app.command("dashboard", epilog="Example: [bold]bench dashboard --storage runs/optuna.db[/]")
def dashboard_cmd(
    storage: SweepStorage = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")
    ] = 8080,
) -> None:
    """Serve optuna-dashboard for the sweep studies on 127.0.0.1."""
    from bench.dashboard import existing_storage, serve

    def ready(url: str) -> None:  # called once the port listens: the URL answers
        Console().print(f"optuna-dashboard on [bold]{url}[/] (Ctrl-C stops)")
        sys.stdout.flush()

    existing_storage(storage)  # a missing file is refused before anything is printed
    serve(storage, port=port, ready=ready)


@app.command(
    "serve",
    epilog="Example: [bold]bench serve --run runs/sasrec-diginetica-... --port 8000[/] then "
    'POST /recommend {"history": ["242", "302"], "k": 10}; docs at /docs',
)
def serve_cmd(
    run_dir: Annotated[Path, typer.Option("--run", help="A finished run folder.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Most requests in one model pass.")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="Wait for stragglers under load.")
    ] = 2.0,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads.")] = None,
) -> None:
    """Serve a run over HTTP: POST /recommend, POST /explain, GET /health, docs at /docs."""
    import torch

    from bench.serve import create_app

    if threads:
        torch.set_num_threads(threads)
    app_ = create_app(run_dir, max_batch=max_batch, max_wait_ms=max_wait_ms)  # loads first
    import uvicorn

    Console().print(
        f"serving {escape(run_dir.name)} on [bold]http://{host}:{port}/[/] (Ctrl-C stops)"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


@app.command(
    "explain",
    epilog="Example: [bold]bench explain --run runs/sasrec-ml-100k-... --history 242,302,377 "
    "--item 51[/]",
)
def explain_cmd(
    run_dir: Annotated[Path, typer.Option("--run", help="A finished run folder.")],
    history: Annotated[str, typer.Option("--history", help="Raw item ids, oldest first.")],
    item: Annotated[str, typer.Option("--item", help="The raw item id to explain.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which history events drove an item's score: occlusion, gradients, attention,
    neighbour sessions (kNN) or matching events (repeat)."""
    import json

    from bench.explain import explain, render
    from bench.training.predict import Recommender

    rec = Recommender(run_dir)
    resolved = rec.resolve([h.strip() for h in history.split(",") if h.strip()])
    out = explain(rec, resolved, rec.item_index(item.strip()))
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    if out["unknown"]:
        Console(stderr=True).print(
            f"[yellow]unknown to this model, left out:[/] {escape(', '.join(out['unknown']))}"
        )
    for table in render(out):
        Console().print(table)


def main() -> None:
    """Console-script entry point (`bench`)."""
    try:
        app(prog_name="bench")
    except BenchError as err:  # raised outside a command, e.g. while importing plug-ins
        _report(err)
        sys.exit(getattr(err, "exit_code", EXIT_USER_ERROR))


if __name__ == "__main__":
    main()
