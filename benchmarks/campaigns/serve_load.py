"""Latency and throughput of `bench serve` under a bounded load, against 127.0.0.1.

For each run: start `bench serve` in its own process (optionally pinned to CPU cores with
taskset), wait for /health, warm up, then for each concurrency level send a fixed number
of POST /recommend requests from that many concurrent asyncio workers (one keep-alive
connection each: a minimal HTTP/1.1 client by default, httpx with --client httpx; at 64
in flight httpx's pool costs more CPU than the server on a 2-core box), histories drawn from the run's own test split (raw ids,
k = 20). Reports p50 / p99 latency per request, requests per second over the level's
wall time, the mean batch the server formed (/health counters) and any non-200 answer.

The generator shares the machine with the server: on a 2-core box it takes CPU time the
server could use, so requests/s is a lower bound of the server's capacity.

    .venv/bin/python benchmarks/campaigns/serve_load.py --runs runs/serve/sasrec-... runs/serve/sknn-... \
        --server-cores 0 --concurrency 1,8,64 --requests 400,2000,4000 --out serve_load.json
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.campaigns import common

ROOT = common.ROOT


def test_histories(run_dir: Path, n: int, seed: int = 0) -> list[list[str]]:
    """Up to n histories of the run's test split as raw item ids (oldest first)."""
    import polars as pl

    from bench.datasets.datamodule import SequenceDataModule

    result = json.loads((run_dir / "result.json").read_text())
    data = SequenceDataModule(result["artifact"], eval_batch_size=n)
    raw = dict(
        pl.read_parquet(Path(result["artifact"]) / "items.parquet", columns=["item", "raw_item"])
        .cast({"item": pl.Int64, "raw_item": pl.String})
        .iter_rows()
    )
    dataset = data.dataset("test")
    rows = random.Random(seed).sample(range(len(dataset)), min(n, len(dataset)))
    batch = dataset.__getitems__(rows)
    out = []
    for items, length in zip(batch["items"].tolist(), batch["lengths"].tolist(), strict=True):
        out.append([raw[i] for i in items[:length]])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, port: int, cores: str | None, threads: int, max_batch: int):
    command = [sys.executable, "-m", "bench.cli", "serve", "--run", str(run_dir)]
    command += ["--port", str(port), "--threads", str(threads), "--max-batch", str(max_batch)]
    if cores:
        command = ["taskset", "-c", cores, *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # sknn fits its index at start-up
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bench serve exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("bench serve did not come up within 600 s")


class RawClient:
    """One HTTP/1.1 keep-alive connection, the fewest Python steps per request: httpx's
    pool spends more CPU than the server when 64 requests are in flight on a 2-core box."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def __aenter__(self) -> RawClient:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(data), data)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")
        )
        return status, await self.reader.readexactly(length)


async def load_raw(url: str, histories: list[list[str]], concurrency: int, n: int) -> dict:
    """As `load`, through RawClient connections."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: dict[int, int] = {}
    counter = iter(range(n))

    async def worker() -> None:
        async with RawClient(host, int(port)) as client:
            for i in counter:
                body = {"history": histories[i % len(histories)], "k": 20}
                start = time.perf_counter()
                status, _ = await client.post("/recommend", body)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "wall": time.perf_counter() - start, "errors": errors}


async def load(url: str, histories: list[list[str]], concurrency: int, n: int) -> dict:
    """n requests from `concurrency` workers; latencies in seconds, wall time, errors."""
    latencies: list[float] = []
    errors: dict[int | str, int] = {}
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for i in counter:
                body = {"history": histories[i % len(histories)], "k": 20}
                start = time.perf_counter()
                try:
                    answer = await client.post("/recommend", json=body)
                    status = answer.status_code
                except httpx.TransportError as err:  # counted, not fatal: the level goes on
                    status = type(err).__name__
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"latencies": latencies, "wall": wall, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_run(run_dir: Path, args) -> list[dict]:
    histories = test_histories(run_dir, 2000)
    port = free_port()
    proc, url = start_server(run_dir, port, args.server_cores, args.threads, args.max_batch)
    rows = []
    server = psutil.Process(proc.pid)
    try:
        generate = load_raw if args.client == "raw" else load
        asyncio.run(generate(url, histories, 4, args.warmup))
        for concurrency, n in zip(args.concurrency, args.requests, strict=True):
            before = httpx.get(f"{url}/health").json()
            cpu = sum(server.cpu_times()[:2])
            load_before = os.getloadavg()[0]
            out = asyncio.run(generate(url, histories, concurrency, n))
            cpu = sum(server.cpu_times()[:2]) - cpu
            after = httpx.get(f"{url}/health").json()
            batches = after["batches"] - before["batches"]
            lat = out["latencies"]
            row = {
                "run": run_dir.name,
                "model": after["model"],
                "n_items": after["n_items"],
                "concurrency": concurrency,
                "client": args.client,
                "requests": n,
                "p50_ms": 1000 * percentile(lat, 0.50),
                "p99_ms": 1000 * percentile(lat, 0.99),
                "requests_per_s": n / out["wall"],
                "mean_batch": (after["requests"] - before["requests"]) / max(batches, 1),
                # CPU the server spent per request (all its threads): what contention from
                # other processes does not inflate, unlike the wall-clock columns
                "server_cpu_ms": 1000 * cpu / n,
                "model_ms": 1000 * (after["model_seconds"] - before["model_seconds"]) / n,
                "load_average": max(load_before, os.getloadavg()[0]),
                "errors": out["errors"],
            }
            rows.append(row)
            print(
                f"{row['model']:>9} c={concurrency:<3} p50 {row['p50_ms']:7.2f} ms  "
                f"p99 {row['p99_ms']:7.2f} ms  {row['requests_per_s']:7.0f} req/s  "
                f"batch {row['mean_batch']:5.1f}  server CPU {row['server_cpu_ms']:.2f} ms/req  "
                f"load {row['load_average']:.1f}  errors {row['errors'] or 0}",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


def smoke_run(root: Path) -> Path:
    """A finished run to serve in a smoke check: gru4rec, one epoch on planted sequences."""
    from bench.training.config import RunConfig
    from bench.training.run import execute

    config = RunConfig(
        model="gru4rec",
        dataset="custom",
        protocol="user-loo",
        max_epochs=1,
        threads=1,
        wandb=False,
        runs_dir=str(root / "runs"),
        cache_dir=str(root / "cache"),
        params={"embedding_dim": 16, "hidden_size": 16},
        **common.write_planted(root / "data", n_seq=200, n_items=50, length=8),
    )
    return Path(execute(config, progress=False)["run_dir"])


def main() -> None:
    smoke = {"concurrency": "1,4", "requests": "10,20", "warmup": 2}
    parser = common.parser(__doc__, smoke=smoke)
    parser.add_argument("--runs", nargs="+", type=Path, help="finished run folders (required)")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--requests", default="500,2000,4000", help="requests per level")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--server-cores", help="taskset CPU list for the server, e.g. 0 or 0,1")
    parser.add_argument("--client-cores", help="CPU list for this load generator")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="load generator's HTTP client"
    )
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = common.parse(parser)
    if args.smoke and not args.runs:
        args.runs = [smoke_run(Path(tempfile.mkdtemp(prefix="serve_load_")))]
    if not args.runs:
        parser.error("--runs is required: the finished run folders to serve")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.requests = [int(c) for c in args.requests.split(",")]
    if len(args.requests) != len(args.concurrency):
        parser.error("give one --requests count per --concurrency level")
    if args.client_cores:
        os.sched_setaffinity(0, {int(c) for c in args.client_cores.split(",")})
    rows = []
    for run_dir in args.runs:
        rows += bench_run(run_dir, args)
    machine = common.machine(args.threads) | {
        "server_cores": args.server_cores or "any",
        "client_cores": args.client_cores or "any",
    }
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(
        "\n| model | concurrency | p50 ms | p99 ms | requests/s | mean batch | server CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['concurrency']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['requests_per_s']:.0f} | {r['mean_batch']:.1f} | {r['server_cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
