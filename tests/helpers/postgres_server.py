"""A real PostgreSQL for tests: Debian's server binaries, a throwaway cluster on a free loopback port.

`PostgresServer` runs `initdb` in a new temp dir and starts `postgres` there, listening on
127.0.0.1 and on a Unix socket inside the temp dir. PostgreSQL refuses to run as root, so when the
tests run as root the cluster belongs to the `postgres` user and its commands run through
`runuser -u postgres --` (the temp dir is chowned to that user). The superuser `postgres` connects
over the socket without a password (for the tests' own setup); the databases the tests use get a
role with a password and a `postgresql://user:pass@127.0.0.1:PORT/db` URL, as a deployment would.

`stop()` / `start()` (and `kill()`, an immediate shutdown) may be called mid-test to test failures:
the data and the port are kept. `close()` stops the server and removes the temp dir.

If the server binaries are missing, Debian's `postgresql` package is installed with
scripts/apt_packages.py (as the dashboard test does for chromium); `scripts/dev test` does it up
front too (`python -m tests.helpers.postgres_server install`).

Test speed over durability: the cluster runs with fsync, synchronous_commit and full_page_writes
off unless `durable=True` (the settled-spend write rate is measured on a durable one).
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import apt_packages  # noqa: E402

PACKAGE = "postgresql"
OS_USER = "postgres"
SUPERUSER = "postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresMissing(RuntimeError):
    """PostgreSQL is not installed and could not be installed; the message says how to."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_bindir() -> str | None:
    """The newest `/usr/lib/postgresql/N/bin` holding initdb and postgres (Debian's layout), else the
    directory of an `initdb` on PATH."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        v = os.path.basename(os.path.dirname(d))
        if v.isdigit() and all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres", "pg_ctl")):
            found.append((int(v), d))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def ensure_installed() -> str:
    """The server's bin dir, installing Debian's `postgresql` package when missing."""
    d = find_bindir()
    if d is None:
        try:
            apt_packages.install([PACKAGE], lambda msg: print(f"[postgresql] {msg}", file=sys.stderr, flush=True))
        except apt_packages.AptError as e:
            raise PostgresMissing(str(e)) from None
        d = find_bindir()
        if d is None:
            raise PostgresMissing(f"apt-get installed {PACKAGE} but no initdb/postgres/pg_ctl was found "
                                  f"under /usr/lib/postgresql/*/bin or on PATH")
    return d


def _as_os_user(cmd: list[str]) -> list[str]:
    """`cmd` run as a user PostgreSQL accepts: as is unless root; as `postgres` (runuser, else su)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", OS_USER, "--"] + cmd
    return ["su", "-s", "/bin/sh", "-c", shlex.join(cmd), OS_USER]


class PostgresServer:
    def __init__(self, *, durable: bool = False, port: int | None = None):
        self.bindir = ensure_installed()
        self.durable = durable
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="finops-pg-")
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.logfile = os.path.join(self.dir, "postgres.log")
        os.mkdir(self.sockdir)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(OS_USER)         # Debian's package creates this user
            for p in (self.dir, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        self.running = False
        self._dbs = 0

    # --- running server commands --------------------------------------------------------------

    def _run(self, prog: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = _as_os_user([os.path.join(self.bindir, prog), *args])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if check and r.returncode != 0:
            raise RuntimeError(f"{prog} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}"
                               f"{self._log_tail()}")
        return r

    def _log_tail(self, n: int = 20) -> str:
        try:
            with open(self.logfile) as f:
                return "\n--- postgres.log ---\n" + "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "PostgresServer":
        if self.running:
            return self
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.sockdir}",
                "-c max_connections=200", "-c shared_buffers=32MB", "-c log_min_messages=warning"]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "60", "-o", " ".join(opts), "start")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode "fast": clients are disconnected cleanly; "immediate": like a crash)."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def kill(self) -> None:
        """An immediate shutdown: no checkpoint, clients cut off (the next start recovers)."""
        self.stop("immediate")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- databases and roles -------------------------------------------------------------------

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """libpq conninfo for the superuser over the Unix socket (trust: no password)."""
        return f"host={self.sockdir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def admin(self, sql: str, params=None, dbname: str = "postgres") -> list:
        """Run one statement as the superuser (autocommit); the rows it returns, if any."""
        import psycopg
        with psycopg.connect(self.admin_conninfo(dbname), autocommit=True) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None, user: str | None = None,
                        password: str | None = None) -> str:
        """A new database owned by a new login role with a password; its URL over TCP."""
        self._dbs += 1
        name = name or f"t{os.getpid()}_{self._dbs}"
        user = user or f"{name}_owner"
        password = password or f"pw-{os.urandom(6).hex()}"
        for n in (name, user):
            if not _NAME.match(n):
                raise ValueError(f"database and role names must match {_NAME.pattern}, got {n!r}")
        from psycopg import sql
        import psycopg
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as c:
            c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
            c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(user)))
        return self.url(name, user, password)

    def drop_database(self, name: str) -> None:
        from psycopg import sql
        import psycopg
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def url(self, dbname: str, user: str, password: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    def terminate_connections(self, dbname: str) -> int:
        """Cut every client connection to `dbname` (a failover or a network cut, as clients see it)."""
        rows = self.admin("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        return rows[0][0]


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Wait until `url` accepts a connection."""
    import psycopg
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        try:
            print(ensure_installed())
        except PostgresMissing as e:
            print(f"[postgresql] {e}", file=sys.stderr)
            sys.exit(1)
    else:
        print("usage: python -m tests.helpers.postgres_server install", file=sys.stderr)
        sys.exit(2)
