"""`bench dashboard`: optuna-dashboard for the sweep studies, on 127.0.0.1 only."""

from __future__ import annotations

from bench.sweep import storage_url


def serve(storage: str | None = None, port: int = 8080, host: str = "127.0.0.1") -> None:
    """Serve until interrupted. Binds to loopback unless the user names another host."""
    import optuna
    from optuna_dashboard import run_server

    url = storage_url(storage)
    run_server(optuna.storages.RDBStorage(url), host=host, port=port)
