"""The results store: one row per finished run or sweep trial, safe for many writers.

SQLite in WAL mode by default (many processes on one machine); any SQLAlchemy URL
(PostgreSQL for sweeps across machines) works the same way. A row keeps the whole
result.json next to the columns that tables are built from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlalchemy as sa

from bench.errors import ConfigError

DEFAULT_STORE = "runs/results.db"

_meta = sa.MetaData()
results_table = sa.Table(
    "results",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # run | trial | final
    sa.Column("study", sa.String(255)),
    sa.Column("trial", sa.Integer),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("synthetic", sa.Boolean, nullable=False, default=False),
    sa.Column("protocol", sa.String(64), nullable=False),
    sa.Column("protocol_hash", sa.String(64), nullable=False),
    sa.Column("target", sa.String(8), nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("result", sa.Text, nullable=False),  # the full result.json
    sa.UniqueConstraint("run_id", "kind", "study", "trial", name="one_row_per_run"),
)


def engine_for(url: str | Path | None = None) -> sa.Engine:
    """An engine for a store URL or a plain file path (SQLite, WAL, waits on locks)."""
    url = str(url or DEFAULT_STORE)
    if "://" not in url:
        if Path(url).is_dir():
            raise ConfigError(
                f"{url} is a folder, not a results store",
                option="--results",
                hint="name a file, e.g. runs/results.db",
            )
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{url}"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"unknown storage scheme {scheme!r} in {url!r}",
            option="--results",
            hint="use a file path, sqlite:///path.db or postgresql://user@host/db",
        )
    if scheme == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _wal(conn, _record):
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        _create_tables(engine)
    except sa.exc.DatabaseError as err:  # OperationalError too: a server that is not there
        reason = str(err.orig).strip().splitlines()[0]
        not_sqlite = "not a database" in reason or "file is encrypted" in reason
        raise ConfigError(
            f"cannot open the results store {url!r}: {reason}",
            option="--results",
            hint="that file is not a SQLite results store; name another file (a new one is created)"
            if not_sqlite
            else "check that the database server runs and the URL is right",
        ) from None
    return engine


def _create_tables(engine: sa.Engine) -> None:
    """Create the tables a new store lacks. Processes opening one new store at once (a
    campaign's workers) race between looking and creating: the loser's CREATE fails with
    "already exists", and looking again then finds the table."""
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                _meta.create_all(conn, checkfirst=True)
            return
        except sa.exc.DatabaseError as err:
            if "already exists" not in str(err.orig) or attempt == 2:
                raise


class ResultsStore:
    def __init__(self, url: str | Path | None = None) -> None:
        self.url = str(url or DEFAULT_STORE)
        self.engine = engine_for(url)

    def add(
        self,
        result: dict,
        *,
        kind: str = "run",
        study: str | None = None,
        trial: int | None = None,
        created_at: float | None = None,
    ) -> None:
        """Insert one row; writing the same (run, kind, study, trial) twice keeps one row.
        `created_at`: when the row was first made (a row carried from an archive keeps its
        own), else now."""
        row = {
            "run_id": result["run_id"],
            "kind": kind,
            "study": study,
            "trial": trial,
            "model": result["model"],
            "dataset": result["dataset"],
            "synthetic": bool(result.get("synthetic")),
            "protocol": result["protocol"],
            "protocol_hash": result["protocol_hash"],
            "target": result.get("target", "any"),
            "seed": int(result["seed"]),
            "created_at": time.time() if created_at is None else created_at,
            "result": json.dumps(result, default=str),
        }
        for attempt in range(20):
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        results_table.delete().where(
                            (results_table.c.run_id == row["run_id"])
                            & (results_table.c.kind == kind)
                            & _eq(results_table.c.study, study)
                            & _eq(results_table.c.trial, trial)
                        )
                    )
                    conn.execute(results_table.insert().values(**row))
                return
            except sa.exc.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def rows(
        self, *, dataset: str | None = None, protocol: str | None = None, kind: str | None = None
    ) -> list[dict]:
        query = sa.select(results_table).order_by(results_table.c.id)
        if dataset:
            query = query.where(results_table.c.dataset == dataset)
        if protocol:
            query = query.where(results_table.c.protocol == protocol)
        if kind:
            query = query.where(results_table.c.kind == kind)
        with self.engine.connect() as conn:
            out = []
            for row in conn.execute(query).mappings():
                record = dict(row)
                record["result"] = json.loads(record["result"])
                out.append(record)
            return out


def _eq(column, value):
    return column.is_(None) if value is None else column == value
