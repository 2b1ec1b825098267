"""`bench dashboard` serves optuna-dashboard for the studies on 127.0.0.1."""

import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes, dict]:
    # optuna-dashboard serves its bundle only to clients that accept an encoding
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read(), dict(response.headers)


@pytest.mark.slow
def test_dashboard_answers_and_serves_its_page(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="gru4rec-ml-100k-user-loo-any", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = _free_port()
    code = f"from bench.dashboard import serve; serve({storage!r}, port={port})"
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body, _ = _get(f"http://127.0.0.1:{port}/dashboard")
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.5)
        assert status == 200 and b"<html" in body.lower()
        status, bundle, headers = _get(f"http://127.0.0.1:{port}/static/bundle.js")
        assert status == 200 and len(bundle) > 10_000
        status, studies, _ = _get(f"http://127.0.0.1:{port}/api/studies")
        assert b"gru4rec-ml-100k-user-loo-any" in studies
    finally:
        server.terminate()
        server.wait(10)
