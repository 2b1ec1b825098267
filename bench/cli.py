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
            raise typer.Exit(EXIT_USER_ERROR) from None


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
        help="Protocol parameter, repeatable (e.g. --set min_item_support=3).",
    ),
]
AdapterOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        metavar="KEY=VALUE",
        help="Adapter option, repeatable (e.g. for `custom`: -o file=log.csv).",
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
        params=parse_assignments(params, "--set") or None,
        data_dir=data_dir,
        cache_dir=cache_dir,
        force=force,
        adapter_options=adapter_options or None,
    )


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
        raise ConfigError("give --dataset (or --artifact)", option="--dataset")
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


def main() -> None:
    """Console-script entry point (`bench`)."""
    try:
        app(prog_name="bench")
    except BenchError as err:  # raised outside a command, e.g. while importing plug-ins
        _report(err)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
