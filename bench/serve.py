"""`bench serve`: a run's model behind HTTP (FastAPI on uvicorn), micro-batched.

Requests are checked in the event loop (unknown items, behaviours, k) and answered with a
4xx that says what is wrong; only valid requests reach the model. They wait in an asyncio
queue; one task drains it into batches and runs each through `Recommender.top` on a
single worker thread, so the event loop keeps accepting requests while torch computes
(torch releases the GIL) and concurrent requests share one model pass. A lone client
never waits for company: the batcher only lingers for stragglers (`max_wait_ms`) while
the previous batch held more than one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from bench.errors import BenchError
from bench.training.predict import History, Recommender, UnknownItems

MAX_K = 1000
MAX_HISTORY = 10_000  # events per request; the model reads only the last max_len

Behavior = Literal["pv", "fav", "cart", "buy"]


class RecommendRequest(BaseModel):
    """A history of raw item ids, oldest first; ids may be JSON strings or numbers."""

    model_config = ConfigDict(coerce_numbers_to_str=True, extra="forbid")

    history: list[str] = Field(min_length=1, max_length=MAX_HISTORY)
    behaviors: list[Behavior] | None = Field(
        None, description="One of pv, fav, cart, buy per history item (default: all pv)."
    )
    k: int = Field(20, ge=1, le=MAX_K)
    exclude_seen: bool = Field(False, description="Leave the history's own items out.")
    skip_unknown: bool = Field(
        False, description="Ignore items the model does not know instead of refusing them."
    )


class ScoredItem(BaseModel):
    rank: int
    item: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    unknown: list[str]
    used_history: int


class ExplainRequest(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True, extra="forbid")

    history: list[str] = Field(min_length=1, max_length=MAX_HISTORY)
    item: str
    behaviors: list[Behavior] | None = None
    skip_unknown: bool = False


def bad_request(err: BenchError) -> HTTPException:
    """A user mistake as 422 with its message, fix and (for unknown items) the list."""
    detail: dict = {"message": err.message}
    if err.hint:
        detail["fix"] = err.hint
    if isinstance(err, UnknownItems):
        detail["unknown"] = err.unknown
    return HTTPException(status_code=422, detail=detail)


@dataclass
class _Job:
    history: History
    k: int
    exclude_seen: bool
    future: asyncio.Future


class Batcher:
    """Gathers queued requests into batches of at most `max_batch` for one model pass."""

    def __init__(self, recommender: Recommender, max_batch: int = 64, max_wait_ms: float = 2.0):
        self.recommender = recommender
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="bench-model")
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.requests = 0
        self.model_seconds = 0.0  # wall time inside model passes (for load tests)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, history: History, k: int, exclude_seen: bool) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(history, k, exclude_seen, future))
        return await future

    async def _gather(self, busy: bool) -> list[_Job]:
        jobs = [await self.queue.get()]
        deadline = time.perf_counter() + (self.max_wait if busy else 0.0)
        while len(jobs) < self.max_batch:
            if not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        busy = False
        while True:
            jobs = await self._gather(busy)
            busy = len(jobs) > 1
            jobs = [j for j in jobs if not j.future.cancelled()]  # the client went away
            if not jobs:
                continue
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self.executor,
                    self.recommender.top,
                    [j.history for j in jobs],
                    [j.k for j in jobs],
                    [j.exclude_seen for j in jobs],
                )
            except Exception as err:  # a model failure is the server's fault: a 500
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.model_seconds += time.perf_counter() - start
            self.batches += 1
            self.requests += len(jobs)
            for job, items in zip(jobs, results, strict=True):
                if not job.future.done():
                    job.future.set_result(items)


def create_app(
    run_dir: str | Path | Recommender, max_batch: int = 64, max_wait_ms: float = 2.0
) -> FastAPI:
    """The FastAPI app of one run (loaded once, here, not per request)."""
    recommender = run_dir if isinstance(run_dir, Recommender) else Recommender(run_dir)
    batcher = Batcher(recommender, max_batch, max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title=f"bench serve: {recommender.name}",
        description=f"Top-K next items from run {recommender.run_dir.name}.",
        lifespan=lifespan,
    )
    app.state.recommender = recommender
    app.state.batcher = batcher

    @app.get("/health")
    async def health() -> dict:
        """Liveness, and what is loaded."""
        return {
            "status": "ok",
            "run": recommender.run_dir.name,
            "model": recommender.name,
            "family": recommender.family,
            "n_items": recommender.n_items,
            "max_len": recommender.max_len,
            "batches": batcher.batches,
            "requests": batcher.requests,
            "model_seconds": batcher.model_seconds,
        }

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(request: RecommendRequest) -> Response:
        """Top-k items after the history, in the raw id space, with their scores.

        Unknown history items are refused with a 422 that lists them, unless
        `skip_unknown` is set; the model reads the last max_len known events."""
        try:
            history = recommender.resolve(
                request.history, request.behaviors, request.skip_unknown, option="history"
            )
        except BenchError as err:
            raise bad_request(err) from None
        items = await batcher.submit(history, request.k, request.exclude_seen)
        # Serialised here, not re-validated through the response model: a third of the
        # HTTP cost per request at high load; the model still documents the schema.
        body = {"items": items, "unknown": history.unknown, "used_history": len(history)}
        return Response(json.dumps(body), media_type="application/json")

    @app.post("/explain")
    async def explain_endpoint(request: ExplainRequest) -> dict:
        """Which history events drove the item's score (see `bench.explain`)."""
        from bench.explain import explain

        try:
            history = recommender.resolve(
                request.history, request.behaviors, request.skip_unknown, option="history"
            )
            item = recommender.item_index(request.item, option="item")
        except BenchError as err:
            raise bad_request(err) from None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(batcher.executor, explain, recommender, history, item)

    return app


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    log_level: str = "warning",
) -> None:
    """Load the run, then serve it with uvicorn until interrupted."""
    import uvicorn

    app = create_app(run_dir, max_batch, max_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
