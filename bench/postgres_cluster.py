"""A throw-away PostgreSQL cluster on 127.0.0.1: the PostgreSQL ticket store's tests run on one
(``tests/peers/postgres.py`` imports it from here), and so do the call benches with
``--storage postgresql`` (``bench/storage.py``).

Debian installs the server binaries under /usr/lib/postgresql/<version>/bin, off PATH, so they
are looked for there first. initdb and postgres refuse to run as root: as root the cluster runs
as the ``postgres`` system user (the package creates it) in a temporary folder it owns.
TCP connections need the password (SCRAM), so a wrong one is refused as in production. The
cluster trades durability for speed (fsync, synchronous_commit and full_page_writes off): what
it holds is thrown away with it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SUPERUSER = "bridge"
PASSWORD = "bridge-test-secret"
READY_WITHIN_S = 30.0


def server_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: the newest Debian one, else PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def missing() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if server_bin() is None:
        return "PostgreSQL's initdb is not installed"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


class PostgresCluster:
    def __init__(self, port: int) -> None:
        bin_dir = server_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.bin = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        self._started = False

    def url(self, dbname: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def start(self) -> PostgresCluster:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
        if self._as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        init = self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
            f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            )
        )
        started = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-W", "start",
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}")
        self._started = True
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WITHIN_S
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    log = self.log.read_text(errors="replace") if self.log.exists() else ""
                    raise RuntimeError(f"PostgreSQL not ready: {exc}\n{log[-2000:]}") from exc
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def server_pid(self) -> int | None:
        """The postmaster's PID (its backends are its children), from postmaster.pid."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def stop(self) -> None:
        # postmaster.pid too: a start interrupted (Ctrl-C) after pg_ctl launched the server.
        if self._started or (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self._started = False
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
