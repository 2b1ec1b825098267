"""`bench dashboard`: optuna-dashboard for the sweep studies, on 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Callable
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


def serve(
    storage: str | None = None,
    port: int = 8080,
    host: str = "127.0.0.1",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted. Binds to loopback unless the user names another host.
    `ready(url)` is called only once the socket listens, so a printed URL answers when
    clicked; port 0 takes a free port, and the URL names the one taken."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna
    from optuna_dashboard import wsgi

    url = existing_storage(storage)
    app = wsgi(optuna.storages.RDBStorage(url))

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args) -> None:  # one line per request otherwise
            pass

    try:
        server = make_server(host, port, app, handler_class=QuietHandler)
    except OSError as err:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {err.strerror or err}",
            option="--port",
            hint="choose another port (e.g. --port 8081), or stop what holds this one",
        ) from None
    with server:
        if ready is not None:
            ready(f"http://{host}:{server.server_port}/")
        server.serve_forever()
