"""`bench serve`: the real command on a small run answers as `bench predict` does,
micro-batches concurrent requests, refuses bad input with a 4xx and a message, and
serves every model family."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bench.cli import app
from bench.serve import create_app
from bench.training.predict import Recommender, predict
from tests.planted_runs import train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(gru_run):
    """`bench serve` as a user starts it, in its own process."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "bench.cli", "serve", "--run", gru_run, "--port", str(port)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"bench serve exited {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("bench serve did not answer /health within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


HISTORIES = [["3", "7"], ["12", "5", "5", "40", "1"], ["50"], [str(i) for i in range(1, 51)] * 2]


def test_served_items_and_scores_equal_predicts(server, gru_run):
    health = httpx.get(f"{server}/health").json()
    assert health["model"] == "gru4rec" and health["n_items"] == 50
    for history in HISTORIES:
        got = httpx.post(f"{server}/recommend", json={"history": history, "k": 7})
        assert got.status_code == 200, got.text
        assert got.json() == predict(gru_run, history, k=7)
    # numbers are raw ids too; behaviours are optional, and change nothing for this
    # model (the planted file has page views only)
    numeric = httpx.post(f"{server}/recommend", json={"history": [3, 7], "k": 7}).json()
    assert numeric == predict(gru_run, ["3", "7"], k=7)
    seen = httpx.post(
        f"{server}/recommend",
        json={"history": ["3", "7"], "behaviors": ["pv", "cart"], "k": 5, "exclude_seen": True},
    ).json()
    assert {"3", "7"}.isdisjoint(row["item"] for row in seen["items"])
    assert len(seen["items"]) == 5
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/recommend" in httpx.get(f"{server}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"history": ["3", "nope", "gone"], "k": 5}, ["unknown", "nope", "gone"]),
        ({"history": [], "k": 5}, ["at least 1"]),
        ({"history": ["3"], "k": 0}, ["greater than or equal to 1"]),
        ({"history": ["3"], "k": 100000}, ["less than or equal to 1000"]),
        ({"history": ["3"], "k": "many"}, ["valid integer"]),
        ({"history": ["3", "7"], "behaviors": ["pv"]}, ["1 behaviours for 2 history items"]),
        ({"history": ["3"], "behaviors": ["click"]}, ["pv", "buy"]),
        ({"history": "3,7"}, ["valid list"]),
        ({"k": 5}, ["missing"]),
        ({"history": ["3"], "kk": 5}, ["extra", "kk"]),
        ({"history": [None]}, ["valid string"]),
        ({"history": [{"id": 3}]}, ["valid string"]),
        ({"history": ["3"], "k": 5.5}, ["valid integer"]),
        ({"history": [1e300, "3"]}, ["unknown", "1e+300"]),
        ({"history": ["3"], "exclude_seen": "perhaps"}, ["valid boolean"]),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(server, body, words):
    got = httpx.post(f"{server}/recommend", json=body)
    assert 400 <= got.status_code < 500, got.text
    text = got.text
    for word in words:
        assert word in text, (word, text)
    if "nope" in words:
        assert got.json()["detail"]["unknown"] == ["nope", "gone"]


def test_malformed_bodies_and_unknown_explain_items_are_4xx(server):
    got = httpx.post(
        f"{server}/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert got.status_code == 422 and "JSON" in got.text
    got = httpx.post(f"{server}/explain", json={"history": ["3", "7"], "item": "nosuch"})
    assert got.status_code == 422 and got.json()["detail"]["unknown"] == ["nosuch"]
    assert httpx.get(f"{server}/recommend").status_code == 405


def test_unknown_items_are_skipped_when_asked(server, gru_run):
    got = httpx.post(
        f"{server}/recommend", json={"history": ["3", "nope", "7"], "k": 4, "skip_unknown": True}
    )
    assert got.status_code == 200
    assert got.json() == predict(gru_run, ["3", "nope", "7"], k=4)
    assert got.json()["unknown"] == ["nope"]
    only_unknown = {"history": ["nope"], "skip_unknown": True}
    got = httpx.post(f"{server}/recommend", json=only_unknown)
    assert got.status_code == 422 and "none of the history" in got.text


def test_concurrent_requests_are_batched_and_answered_alike(server, gru_run):
    """64 requests at once share model passes; each gets its own history's answer."""
    rec = Recommender(gru_run)
    histories = [[str(1 + (i * 7 + j) % 50) for j in range(1 + i % 9)] for i in range(64)]

    async def fire():
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/recommend", json={"history": h, "k": 5}) for h in histories)
            )

    before = httpx.get(f"{server}/health").json()
    answers = asyncio.run(fire())
    after = httpx.get(f"{server}/health").json()
    assert after["requests"] - before["requests"] == 64
    assert after["batches"] - before["batches"] < 64  # some requests shared a pass
    for history, answer in zip(histories, answers, strict=True):
        want = rec.recommend(history, k=5)
        got = answer.json()
        # padding to the batch's longest history may move scores in the last float bits
        assert [r["item"] for r in got["items"]] == [r["item"] for r in want["items"]]
        assert [r["score"] for r in got["items"]] == pytest.approx(
            [r["score"] for r in want["items"]], rel=1e-5, abs=1e-5
        )


def test_serve_refuses_a_folder_that_is_not_a_run(tmp_path):
    out = CliRunner().invoke(app, ["serve", "--run", str(tmp_path)])
    assert out.exit_code == 2 and "not a finished run" in out.output


@pytest.mark.parametrize(
    "model, extra",
    [
        ("pop", {}),
        ("repeat", {}),
        ("sr", {}),
        ("sknn", {}),
        ("vsknn", {}),
        ("stan", {}),
        ("sasrec", {"max_epochs": 1}),
        ("bert4rec", {"max_epochs": 1}),
        ("gnn_lstm", {"max_epochs": 1}),
    ],
)
def test_every_family_is_served(planted_root, model, extra):
    run_dir = train(planted_root, model, **extra)
    with TestClient(create_app(run_dir)) as client:
        history = ["12", "5", "5", "40", "1"]
        got = client.post("/recommend", json={"history": history, "k": 6})
        assert got.status_code == 200, got.text
        assert got.json() == predict(run_dir, history, k=6)
        seen = client.post("/recommend", json={"history": history, "k": 6, "exclude_seen": True})
        assert set(history).isdisjoint(r["item"] for r in seen.json()["items"])
        explained = client.post("/explain", json={"history": history, "item": "40"})
        assert explained.status_code == 200 and len(explained.json()["occlusion"]) == 5
        assert client.post("/recommend", json={"history": ["x"]}).status_code == 422


def test_stable_topk_orders_ties_by_item_index():
    """The server's ranking: best first, equal scores by lower index, across the cut too."""
    from bench.training.predict import stable_topk

    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(2, 60, (1,), generator=gen))
        k = min(n, int(torch.randint(1, 10, (1,), generator=gen)))
        scores = torch.randint(0, 4, (3, n), generator=gen).float()
        values, index = stable_topk(scores, k)
        for row in range(3):
            want = sorted(range(n), key=lambda j: (-scores[row, j].item(), j))[:k]
            assert index[row].tolist() == want
            assert values[row].tolist() == scores[row, want].tolist()
