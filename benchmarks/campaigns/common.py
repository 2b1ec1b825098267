"""What the campaign scripts share: where the repository and the data are, the machine a
figure was measured on, the thread settings of a measured subprocess, and the argparse
frame every script starts from, with `--smoke`.

`--smoke` swaps in tiny sizes (seconds, not minutes) so that the test suite runs every
script (tests/test_benchmark_scripts.py) and none rots unnoticed. The sizes a script gives
`parser(smoke=...)` are defaults: an option given on the command line still wins. A part
a smoke run cannot do on this machine (no RecBole venv, no GPU, no data set) is left out
with `skipped(part, reason)`; a script that can do nothing at all says `skip_all(reason)`.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
SKIPPED = "smoke: skipped"
SKIPPED_ALL = "smoke: skipped all:"


def data_dir() -> str:
    """`$BENCH_DATA_DIR`, else the shared data next to the repository (as bench looks)."""
    return os.environ.get("BENCH_DATA_DIR", str(DEFAULT_DATA))


def parser(doc: str, smoke: dict | None = None, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first paragraph of `doc`, with `--smoke`, whose
    tiny sizes are `smoke` (option dest -> value)."""
    p = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0], **kwargs)
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes, seconds: a check that the script runs"
    )
    p.set_defaults(smoke_sizes=dict(smoke or {}))
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; with `--smoke`, again over the smoke sizes as defaults."""
    args, _ = p.parse_known_args(argv)
    if args.smoke:
        p.set_defaults(**args.smoke_sizes)
    return p.parse_args(argv)


def skipped(part: str, reason: str) -> None:
    print(f"{SKIPPED} {part}: {reason}", flush=True)


def skip_all(reason: str) -> int:
    """Say that nothing of the script can run here; the exit status of a clean skip."""
    print(f"{SKIPPED_ALL} {reason}", flush=True)
    return 0


def missing_data(name: str) -> str | None:
    """Why data set `name` cannot be read here, or None when its files are present."""
    folder = Path(data_dir()) / name
    if folder.is_dir() and any(folder.iterdir()):
        return None
    return f"data set {name} not in {folder.parent} (set BENCH_DATA_DIR)"


def machine(threads: int | None = None) -> dict:
    """nproc, CPU model, load and Python, for the record next to the numbers."""
    from bench.provenance import cpu_name

    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu_name(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    return info | ({"threads": threads} if threads is not None else {})


def machine_line() -> str:
    """The machine in one line: CPU, cores, torch version."""
    import torch

    from bench.provenance import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"


def thread_env(threads: int) -> dict:
    """The environment of a measured subprocess: every BLAS / OpenMP pool at `threads`, and
    the repository importable (`python -m benchmarks.campaigns...` from any folder)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write_planted(root: Path, n_seq: int, n_items: int, length: int, seed: int = 0) -> dict:
    """A `custom` data set of planted sequences under `root` (one line a sequence); returns
    the run settings that read it (data_dir and adapter_options)."""
    from bench.datasets.synth_tensors import planted_sequences

    (root / "custom").mkdir(parents=True, exist_ok=True)
    items, _ = planted_sequences(n_seq=n_seq, n_items=n_items, length=length, seed=seed)
    lines = [",".join(map(str, row)) for row in items.tolist()]
    (root / "custom" / "planted.txt").write_text("\n".join(lines) + "\n")
    return {
        "data_dir": str(root),
        "adapter_options": {"path": "planted.txt", "format": "sequences"},
    }
