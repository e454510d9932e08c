"""Engines for the result tables and their schema: created or upgraded with Alembic on first use.

The tables live in the study's own database (the Optuna storage URL). On the first use of a URL in a
process, :func:`engine_for` runs the Alembic migrations up to the head revision, under a lock so that
several workers starting at once do not race (PostgreSQL: an advisory lock in the migration's
transaction; SQLite: ``BEGIN IMMEDIATE``; MySQL: ``GET_LOCK``). A database whose songhpo schema is
newer than this code is refused with an :class:`~storage.errors.InputError`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url

from storage.errors import InputError, first_line
from storage.models import VERSION_TABLE

__all__ = [
    "dispose_engines",
    "engine_for",
    "ensure_schema",
    "head_revision",
    "schema_revision",
    "sqlite_file",
    "upgrade_schema",
    "write_transaction",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Key of the PostgreSQL advisory lock serialising schema upgrades (any constant bigint).
_PG_LOCK_KEY = 0x736F6E67687030  # "songhp0"
#: Name of the MySQL/MariaDB lock serialising schema upgrades, and how long to wait for it.
_MYSQL_LOCK_NAME = "songhpo_schema"
_LOCK_SECONDS = 120
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def safe_url(url: str) -> str:
    """``url`` with any password masked (never print a raw storage URL)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL must not be echoed
        return "<storage URL>"


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite ``url`` (``None``: another backend, in-memory, or unparsable)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - callers report unparsable URLs when they open them
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_results_engine(url: str) -> Engine:
    """A new engine for ``url`` (no schema check): small pools and pre-ping, or SQLite with WAL.

    SQLite connections emit their own ``BEGIN`` so that :func:`write_transaction` can take the write
    lock up front (``BEGIN IMMEDIATE``) and DDL is transactional.
    """
    try:
        backend = make_url(url).get_backend_name()
    except Exception as exc:
        raise InputError(f"storage: {safe_url(url)!r} is not a valid SQLAlchemy URL") from exc
    try:
        if backend == "sqlite":
            engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_SECONDS})
            _sqlite_transactions(engine)
        else:
            engine = create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True, pool_recycle=1800)
    except Exception as exc:
        raise InputError(f"storage {safe_url(url)}: cannot open ({type(exc).__name__}: {first_line(exc)})") from exc
    return engine


#: How long a SQLite connection waits for another one's lock (sqlite3's ``timeout``, seconds).
_SQLITE_BUSY_SECONDS = 60.0


def switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL`` on a SQLite DB-API ``cursor``, waiting while another connection holds the
    database (for songhpo's tables here and for the Optuna storage in :mod:`hpo.study`).

    Switching a new database to WAL needs it to itself, and when several processes open it at once SQLite
    answers "database is locked" at once instead of waiting in the busy handler; wait here as that would.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and commits before DDL; take control of it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers (dashboards) never block the study's writers; same settings as the Optuna storage.
        switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("songhpo_sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that will write (SQLite: write lock taken at ``BEGIN``).

    Taking SQLite's write lock up front avoids the read-then-write lock upgrade that fails at once
    with "database is locked" when another process writes; the busy timeout applies instead.
    """
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(songhpo_sqlite_begin="IMMEDIATE")
        with connection.begin():
            yield connection


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The schema revision this code writes and reads."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def schema_revision(engine: Engine) -> str | None:
    """The songhpo schema revision stamped in the database (``None``: no songhpo tables yet)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def ensure_schema(engine: Engine, url: str | None = None) -> str:
    """Create or upgrade the songhpo tables to the head revision; return it.

    Raises
    ------
    InputError
        If the database carries a songhpo revision this code does not know (written by a newer
        songhpo), or the upgrade fails.
    """
    return upgrade_schema(engine, "head", url=url)


def upgrade_schema(engine: Engine, revision: str = "head", *, url: str | None = None) -> str:
    """Upgrade the songhpo tables to ``revision`` (tests use older revisions); return the result."""
    where = safe_url(url if url is not None else engine.url.render_as_string(hide_password=False))
    head = head_revision()
    with _mysql_schema_lock(engine):
        with write_transaction(engine) as connection:
            _lock_schema(connection)
            revision = _upgrade_locked(connection, head if revision == "head" else revision, head, where)
        # MySQL's session lock is released only here, after the commit: released inside the transaction,
        # another process could read the version row before the last migration's stamp was committed and
        # run that migration's DDL again ("table already exists").
        return revision


def _upgrade_locked(connection: Connection, target: str, head: str, where: str) -> str:
    try:
        current = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
    except Exception as exc:
        raise InputError(f"storage {where}: cannot read the songhpo schema version ({first_line(exc)})") from exc
    if current is not None and current not in _known_revisions():
        raise InputError(
            f"storage {where}: the songhpo tables are at schema revision {current!r}, newer than this songhpo "
            f"(which knows up to {head!r}); upgrade songhpo to read or write them"
        )
    if current == target:
        return current
    try:
        command.upgrade(_alembic_config(connection), target)
    except CommandError as exc:
        raise InputError(f"storage {where}: cannot upgrade the songhpo tables to {target!r} ({first_line(exc)})") from exc
    return target


def _lock_schema(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Released at the end of the transaction, which also holds the (transactional) DDL.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    # SQLite: write_transaction began with BEGIN IMMEDIATE, which already excludes other writers.
    # MySQL: _mysql_schema_lock, held around the whole transaction.


@contextmanager
def _mysql_schema_lock(engine: Engine) -> Iterator[None]:
    """MySQL/MariaDB: hold the schema's session lock on a connection of its own until the upgrade has committed
    (DDL commits implicitly in MySQL, so no transaction can hold it). Other dialects: nothing."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        yield
        return
    with engine.connect() as connection:
        # GET_LOCK returns 1 when taken, 0 on timeout and NULL on error: only 1 may go on.
        taken = connection.execute(text("SELECT GET_LOCK(:name, :seconds)"),
                                   {"name": _MYSQL_LOCK_NAME, "seconds": _LOCK_SECONDS}).scalar()
        if taken != 1:
            raise InputError(f"storage: could not take the schema lock {_MYSQL_LOCK_NAME!r} within {_LOCK_SECONDS} s "
                             "(another songhpo process is upgrading the tables, or is stuck); try again")
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK_NAME})


def engine_for(url: str) -> Engine:
    """The process-wide engine of ``url``, with the songhpo schema at the head revision.

    The schema is checked once per URL and process; a refused or failed check is retried on the
    next call (nothing is cached then).
    """
    with _engines_lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        engine = create_results_engine(url)
        try:
            ensure_schema(engine, url)
        except InputError:
            engine.dispose()
            raise
        except Exception as exc:
            engine.dispose()
            raise InputError(f"storage {safe_url(url)}: cannot connect ({type(exc).__name__}: {first_line(exc)})") from exc
        _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests dropping databases, forked processes)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()

