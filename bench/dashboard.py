"""`bench dashboard`: optuna-dashboard for the sweep studies, on 127.0.0.1 only."""

from __future__ import annotations

from pathlib import Path

from bench.errors import ConfigError
from bench.sweep import DEFAULT_STORAGE, storage_url


def existing_storage(storage: str | None) -> str:
    """The storage URL, refused when it names a SQLite file that is not there: serving
    would create an empty database and show no studies, a silent dead end."""
    given = storage or DEFAULT_STORAGE
    if "://" not in given or given.startswith("sqlite:///"):
        path = Path(given.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ConfigError(
                f"no study storage at {path}",
                option="--storage",
                hint="pass the file a sweep wrote (bench sweep --storage ...; the default is "
                f"{DEFAULT_STORAGE}), or run a sweep first",
            )
    return storage_url(given)


def serve(storage: str | None = None, port: int = 8080, host: str = "127.0.0.1") -> None:
    """Serve until interrupted. Binds to loopback unless the user names another host."""
    import optuna
    from optuna_dashboard import run_server

    url = existing_storage(storage)
    run_server(optuna.storages.RDBStorage(url), host=host, port=port)
