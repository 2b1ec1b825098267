"""Preparation at scale: `user-time` on a synthetic Taobao file, Polars vs pandas.

    python benchmarks/campaigns/prepare_scale.py --rows 10000000
    python benchmarks/campaigns/prepare_scale.py --rows 100000000 --pandas-rows 10000000

Each step runs in a child process of its own so that its peak RSS (the child's
`ru_maxrss`, read with `os.wait4`) is its own: generation of the file (timed apart),
`bench.datasets.prepare.prepare("taobao-synth", "user-time", force=True)`, and the
straightforward pandas version of the same recipe (`benchmarks/campaigns/pandas_user_time.py`).
pandas runs at `--pandas-rows` (default: `--rows`); when that is smaller, Polars runs at
that size too, so the speedup is measured at equal size, and the throughput ratio at
the two sizes is reported as well. At the pandas size the two recipes must agree on
every count (events and examples per split, items, categories, drops).

Threads are set, not inherited: POLARS_MAX_THREADS and the Arrow CPU pool get
`--threads` (default: all cores); pandas itself is single-threaded. `--stages` adds a
per-line profile of the Polars run (wall seconds per bench source line, sampled).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.campaigns import common

ROOT = common.ROOT
GIB = 1 << 30


# ---------------------------------------------------------------- child steps


def _peak_self() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def step_generate(csv: str, rows: int, seed: int) -> dict:
    from bench.datasets.synth import write_taobao_synth

    return write_taobao_synth(Path(csv), rows, seed=seed)


def step_polars(data_dir: str, cache_dir: str, stages: bool) -> dict:
    from bench.datasets.artifact import read_meta
    from bench.datasets.prepare import prepare

    sampler = StackSampler() if stages else None
    t0 = time.perf_counter()
    try:
        folder = prepare(
            "taobao-synth", "user-time", data_dir=data_dir, cache_dir=cache_dir, force=True
        )
    finally:
        if sampler is not None:
            sampler.stop()
    seconds = time.perf_counter() - t0
    meta = read_meta(folder)
    out = {
        "seconds": round(seconds, 3),
        "events": meta["counts"]["total"]["events"],
        "n_items": meta["n_items"],
        "n_categories": meta["n_categories"],
        "counts": {
            s: {k: meta["counts"][s][k] for k in ("examples", "events")}
            for s in ("train", "valid", "test")
        },
        "drops": meta["drops"],
        "artifact_bytes": sum(f.stat().st_size for f in folder.iterdir()),
    }
    if sampler is not None:
        out["stages"] = sampler.table()
    return out


class StackSampler:
    """Wall time per source line of bench, by sampling the main thread's stack every 10 ms.

    Polars and numpy release the GIL in their heavy calls, so a sample lands on the bench
    line that waits for them. Each sample is attributed to the innermost bench frame, shown
    with the recipe-level line (prepare.py / the protocol module) that led there.
    """

    def __init__(self, interval: float = 0.01) -> None:
        import threading

        self.interval = interval
        self.seconds: dict[str, float] = {}
        self.main = threading.main_thread().ident
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _where(self, frame) -> str | None:
        inner, outer = None, None
        while frame is not None:
            name = frame.f_code.co_filename
            if "/bench/" in name and "benchmarks" not in name:
                here = f"{name.split('/bench/', 1)[1]}:{frame.f_lineno} {frame.f_code.co_name}"
                inner = inner or here
                if "protocols/" in name and "base.py" not in name or name.endswith("prepare.py"):
                    outer = outer or here
            frame = frame.f_back
        if inner is None:
            return None
        return inner if outer in (None, inner) else f"{outer} > {inner}"

    def _run(self) -> None:
        last = time.perf_counter()
        while not self.done.wait(self.interval):
            now = time.perf_counter()
            frame = sys._current_frames().get(self.main)
            key = self._where(frame) if frame is not None else None
            if key:
                self.seconds[key] = self.seconds.get(key, 0.0) + now - last
            last = now

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def table(self, top: int = 25) -> list[tuple[str, float]]:
        rows = sorted(self.seconds.items(), key=lambda r: -r[1])[:top]
        return [(k, round(v, 2)) for k, v in rows]


def step_pandas(csv: str, out_dir: str, threads: int) -> dict:
    import pyarrow

    pyarrow.set_cpu_count(threads)
    from benchmarks.campaigns.pandas_user_time import prepare_user_time

    return prepare_user_time(csv, out_dir)


STEPS = {"generate": step_generate, "polars": step_polars, "pandas": step_pandas}
PRELOAD = {
    "generate": ["bench.datasets.synth"],
    "polars": [
        "bench.datasets.prepare",
        "bench.datasets.protocols",
        "bench.datasets.adapters.taobao_synth",
    ],
    "pandas": ["pandas", "pyarrow.parquet", "benchmarks.campaigns.pandas_user_time"],
}


def child_main(argv: list[str]) -> None:
    import resource

    kind, args = argv[0], json.loads(argv[1])
    for module in PRELOAD[kind]:  # imports stay outside the measured CPU time
        importlib.import_module(module)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = STEPS[kind](**args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)
    result["peak_rss_self"] = _peak_self()
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent


def run_step(kind: str, args: dict, threads: int, timeout: float, log: Path) -> dict:
    """One step in a child process: its wall time, peak RSS and the JSON it printed."""
    env = dict(os.environ)
    env.update(
        POLARS_MAX_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "_step", kind, json.dumps(args)]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][7:]) if lines and proc.returncode == 0 else None
    return {
        "ok": result is not None,
        "returncode": proc.returncode,
        "process_s": round(wall, 3),
        "peak_rss": usage.ru_maxrss * 1024,
        "result": result,
        "tail": "" if result is not None else text[-3000:],
    }


def machine(threads: int) -> dict:
    from bench.provenance import cpu_name

    model = cpu_name()
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    for name in ("polars", "pandas", "numpy", "pyarrow"):
        try:
            from importlib import metadata

            versions[name] = metadata.version(name)
        except Exception:  # noqa: BLE001  (a missing package is just not reported)
            versions[name] = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem / GIB, 1),
        "python": platform.python_version(),
        "threads": {"polars": threads, "arrow": threads, "pandas": 1},
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
        **versions,
    }


def agreement(polars: dict, pandas: dict) -> dict:
    keys = ["events", "n_items", "n_categories", "counts", "drops"]
    diffs = {k: (polars.get(k), pandas.get(k)) for k in keys if polars.get(k) != pandas.get(k)}
    return {"ok": not diffs, "differences": diffs}


def row(step: str, rows: int, res: dict) -> dict:
    inner = res["result"]["seconds"] if res["ok"] else None
    wall = inner if inner is not None else res["process_s"]
    return {
        "step": step,
        "rows": rows,
        "ok": res["ok"],
        "wall_s": wall,
        "process_s": res["process_s"],
        "cpu_s": res["result"]["cpu_s"] if res["ok"] else None,
        "peak_rss_gib": round(res["peak_rss"] / GIB, 3),
        "rows_per_s": round(rows / wall) if res["ok"] and wall else None,
    }


def print_table(steps: list[dict], speedups: dict) -> None:
    head = (
        f"{'step':<21} {'rows':>12} {'wall s':>8} {'cpu s':>8} {'process s':>9} "
        f"{'peak RSS GiB':>12} {'rows/s':>10}  speedup vs pandas (wall; cpu)"
    )
    print(head)
    print("-" * len(head))
    for s in steps:
        wall = f"{s['wall_s']:.2f}" if s["ok"] else "failed"
        cpu = f"{s['cpu_s']:.2f}" if s["cpu_s"] is not None else "-"
        rate = f"{s['rows_per_s']:,}" if s["rows_per_s"] else "-"
        speed = speedups.get((s["step"], s["rows"]), "")
        print(
            f"{s['step']:<21} {s['rows']:>12,} {wall:>8} {cpu:>8} {s['process_s']:>9.2f} "
            f"{s['peak_rss_gib']:>12.2f} {rate:>10}  {speed}"
        )


def _generated(csv: Path, rows: int, seed: int) -> bool:
    """A complete synthetic file of these rows and seed is already there (kept by --keep)."""
    note = csv.with_name("SYNTHETIC.txt")
    if not (csv.exists() and note.exists()):
        return False
    text = note.read_text()
    params = json.loads(text[text.index("{") :])
    return params.get("rows") == rows and params.get("seed") == seed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_step":
        child_main(argv[1:])
        return 0
    parser = common.parser(
        __doc__,
        smoke={"rows": 10_000, "threads": 1},
        epilog="example: python benchmarks/campaigns/prepare_scale.py --rows 10000000",
    )
    parser.add_argument("--rows", type=int, help="rows of the synthetic file (required)")
    parser.add_argument("--pandas-rows", type=int, help="rows for pandas (default: --rows)")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    parser.add_argument("--workdir", type=Path, help="where files go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a kept synthetic file of the same rows and seed"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per step")
    parser.add_argument("--stages", action="store_true", help="profile the Polars stages")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = common.parse(parser, argv)
    if args.rows is None:
        parser.error("--rows is required (e.g. --rows 10000000)")
    pandas_rows = args.pandas_rows or args.rows

    work = args.workdir or Path(tempfile.mkdtemp(prefix="prepare-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine(args.threads)
    print(
        f"machine: {info['nproc']} cores ({info['cpu']}), {info['ram_gib']} GiB RAM, "
        f"load {info['load_avg_at_start']}; threads {info['threads']}; "
        f"polars {info['polars']}, pandas {info['pandas']}"
    )
    print(f"command: python benchmarks/campaigns/prepare_scale.py {' '.join(argv)}")
    sizes = sorted({args.rows, pandas_rows} if not args.no_pandas else {args.rows}, reverse=True)
    steps: list[dict] = []
    results: dict[tuple[str, int], dict] = {}
    try:
        for rows in sizes:
            data = work / f"data-{rows}"
            csv = data / "taobao-synth" / "UserBehavior.csv"
            log = work / f"log-{rows}"
            log.mkdir(exist_ok=True)
            if args.reuse and _generated(csv, rows, args.seed):
                print(f"reusing {csv} ({rows:,} rows, seed {args.seed})")
            else:
                gen = run_step(
                    "generate",
                    {"csv": str(csv), "rows": rows, "seed": args.seed},
                    args.threads,
                    args.timeout,
                    log / "generate.txt",
                )
                steps.append(row("generate (synthetic)", rows, gen))
                if not gen["ok"]:
                    print(gen["tail"], file=sys.stderr)
                    break
            runs = [
                (
                    "polars",
                    {
                        "data_dir": str(data),
                        "cache_dir": str(work / f"cache-{rows}"),
                        "stages": args.stages,
                    },
                )
            ]
            if not args.no_pandas and rows == pandas_rows:
                runs.append(
                    (
                        "pandas",
                        {
                            "csv": str(csv),
                            "out_dir": str(work / f"pandas-{rows}"),
                            "threads": args.threads,
                        },
                    )
                )
            for kind, kw in runs:
                res = run_step(kind, kw, args.threads, args.timeout, log / f"{kind}.txt")
                results[(kind, rows)] = res
                steps.append(row(f"prepare ({kind})", rows, res))
                if not res["ok"]:
                    print(f"{kind} at {rows:,} rows failed:\n{res['tail']}", file=sys.stderr)
            shutil.rmtree(work / f"cache-{rows}", ignore_errors=True)
            shutil.rmtree(work / f"pandas-{rows}", ignore_errors=True)
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
                shutil.rmtree(log, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    by = {(s["step"], s["rows"]): s for s in steps}
    speedups: dict[tuple[str, int], str] = {}
    summary: dict = {}
    base = by.get(("prepare (pandas)", pandas_rows))
    if base and base["ok"]:
        same = by.get(("prepare (polars)", pandas_rows))
        if same and same["ok"]:
            summary["speedup_same_size"] = round(base["wall_s"] / same["wall_s"], 2)
            summary["cpu_ratio_same_size"] = round(base["cpu_s"] / same["cpu_s"], 2)
            speedups[("prepare (polars)", pandas_rows)] = (
                f"{summary['speedup_same_size']}x; {summary['cpu_ratio_same_size']}x (same size)"
            )
        big = by.get(("prepare (polars)", args.rows))
        if pandas_rows != args.rows and big and big["ok"]:
            summary["throughput_ratio"] = round(big["rows_per_s"] / base["rows_per_s"], 2)
            cpu_rate = (big["rows"] / big["cpu_s"]) / (base["rows"] / base["cpu_s"])
            summary["cpu_throughput_ratio"] = round(cpu_rate, 2)
            speedups[("prepare (polars)", args.rows)] = (
                f"{summary['throughput_ratio']}x; {summary['cpu_throughput_ratio']}x "
                f"(rows/s vs pandas at {pandas_rows:,})"
            )
    agree = None
    pol, pan = results.get(("polars", pandas_rows)), results.get(("pandas", pandas_rows))
    if pol and pan and pol["ok"] and pan["ok"]:
        agree = agreement(pol["result"], pan["result"])
    print()
    print_table(steps, speedups)
    print()
    if agree is not None:
        status = "yes" if agree["ok"] else f"NO: {agree['differences']}"
        print(f"pandas and polars recipes agree on counts at {pandas_rows:,} rows: {status}")
        c = pol["result"]
        print(
            f"  events {c['events']:,}, items {c['n_items']:,}, examples "
            + ", ".join(f"{s} {c['counts'][s]['examples']:,}" for s in ("train", "valid", "test"))
        )
    for kind in ("polars",):
        res = results.get((kind, args.rows))
        if res and res["ok"] and res["result"].get("stages"):
            print(
                f"\nwhere the {kind} run at {args.rows:,} rows spends its time (wall s, sampled):"
            )
            for name, sec in res["result"]["stages"]:
                print(f"  {sec:9.3f}  {name}")
    if args.json:
        out = {
            "machine": info,
            "argv": argv,
            "steps": steps,
            **summary,
            "agreement": agree,
            "results": {f"{k}@{r}": v["result"] for (k, r), v in results.items()},
        }
        args.json.write_text(json.dumps(out, indent=2))
    failed = any(not s["ok"] for s in steps if s["step"] != "prepare (pandas)")
    return 1 if failed or (agree is not None and not agree["ok"]) else 0


if __name__ == "__main__":
    sys.exit(main())
