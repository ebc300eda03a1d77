"""PostgreSQL from Debian's packages, as a private cluster under .stack/postgres (not the system's
`main` cluster): initdb on first start, a role and database for the app, schema files applied in order."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

from marketpulse.config import Settings
from stack import paths
from stack.errors import StackError
from stack.log import say
from stack.proc import Program, port_open, read_pid
from stack.setup import postgres_bin_dir

NAME = "postgres"
PROGRAMS = ("postgres",)
READY_TIMEOUT_S = 60.0


def _as_root() -> bool:
    return os.geteuid() == 0


def _as_postgres(cmd: list[str]) -> list[str]:
    # The server refuses to run as root; Debian's package creates the `postgres` system user.
    return ["runuser", "-u", "postgres", "--", *cmd] if _as_root() else cmd


def base_dir() -> Path:
    """.stack/postgres, or, when root owns a checkout the postgres user cannot enter (e.g. under /root),
    a folder under /var/lib/postgresql that .stack/postgres links to."""
    link = paths.STACK_DIR / "postgres"
    if link.is_symlink() or link.is_dir():
        return link.resolve()
    paths.STACK_DIR.mkdir(parents=True, exist_ok=True)
    if _as_root() and subprocess.run(_as_postgres(["test", "-x", str(paths.STACK_DIR)])).returncode != 0:
        digest = hashlib.sha1(str(paths.STACK_DIR).encode()).hexdigest()[:10]
        outside = Path("/var/lib/postgresql") / f"marketpulse-{digest}"
        outside.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside)
    else:
        link.mkdir()
    if _as_root():
        subprocess.run(["chown", "postgres:postgres", str(link.resolve())], check=True)
    return link.resolve()


def data_dir() -> Path:
    return base_dir() / "data"


def log_file() -> Path:
    return base_dir() / "postgres.log"


def _bin(name: str) -> str:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise StackError("PostgreSQL server is not installed: run `make setup` (it installs it)")
    return str(bin_dir / name)


def pids() -> list[int]:
    """The live postmaster pid (none or one)."""
    found = read_pid(data_dir() / "postmaster.pid")
    return [] if found is None else [found]


def program_pids() -> dict[str, list[int]]:
    return {"postgres": pids()}


def running() -> bool:
    """Our server process is alive (whether or not it answers yet)."""
    return bool(pids())


def log_hint() -> Path:
    return log_file()


def _psql_admin(settings: Settings, sql: str, db: str = "postgres") -> str:
    """Runs SQL as the cluster's superuser over the private Unix socket."""
    cmd = _as_postgres([_bin("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                        "-h", str(base_dir()), "-p", str(settings.postgres.port), "-U", "postgres",
                        "-d", db, "-c", sql])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"psql failed: {result.stderr.strip()}")
    return result.stdout.strip()


def prepare(settings: Settings) -> None:
    """Before the supervisor's first start: the cluster's data folder (initdb on first use)."""
    base_dir()
    _bin("postgres")
    if not (data_dir() / "PG_VERSION").exists():
        say("PostgreSQL: initdb (first start)")
        result = subprocess.run(
            _as_postgres([_bin("initdb"), "-D", str(data_dir()), "-U", "postgres", "--auth-local=trust",
                          "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]),
            capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"PostgreSQL initdb failed: {result.stderr.strip()[-400:]}")
    # The supervisor (maybe root) appends the server's output here; the postgres user keeps owning it.
    log_file().touch()
    if _as_root():
        subprocess.run(["chown", "postgres:postgres", str(log_file())], check=True)


def programs(settings: Settings) -> list[Program]:
    """The server binary itself in the foreground (not pg_ctl, which daemonizes), logging to stderr, so the
    supervisor is its parent. SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for clients)."""
    return [Program(
        name="postgres", title="PostgreSQL",
        argv=[_bin("postgres"), "-D", str(data_dir()), "-p", str(settings.postgres.port),
              "-k", str(base_dir()), "-c", f"listen_addresses={settings.postgres.host}",
              "-c", "max_connections=200"],
        log_file=log_file(), user="postgres" if _as_root() else None, stop_signal=signal.SIGINT,
        stop_timeout=60.0, cwd=base_dir())]


def ports(settings: Settings) -> list[tuple[int, str]]:
    return [(settings.postgres.port, "PostgreSQL")]


def ready(settings: Settings) -> bool:
    """Accepts the superuser's queries (not merely the port: it also listens while recovering)."""
    try:
        return _psql_admin(settings, "SELECT 1") == "1"
    except StackError:
        return False


def after_start(settings: Settings) -> None:
    """Once it answers: the app's role and database, then the schema."""
    _ensure_app_database(settings)
    apply_schema(settings)


def _ensure_app_database(settings: Settings) -> None:
    pg = settings.postgres
    role_exists = _psql_admin(settings, f"SELECT 1 FROM pg_roles WHERE rolname = '{pg.user}'")
    if not role_exists:
        # CREATEDB: tests build throw-away databases from the same schema files.
        _psql_admin(settings, f"CREATE ROLE \"{pg.user}\" LOGIN CREATEDB PASSWORD '{pg.password}'")
    db_exists = _psql_admin(settings, f"SELECT 1 FROM pg_database WHERE datname = '{pg.database}'")
    if not db_exists:
        _psql_admin(settings, f"CREATE DATABASE \"{pg.database}\" OWNER \"{pg.user}\"")


def apply_schema(settings: Settings) -> list[str]:
    """Applies db/schema/*.sql not yet recorded in schema_migrations, each in its own transaction."""
    import psycopg2

    from marketpulse.config import postgres_dsn

    applied = []
    with psycopg2.connect(postgres_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        conn.commit()
        for sql_file in sorted(paths.SCHEMA_DIR.glob("*.sql")):
            if sql_file.name in done:
                continue
            try:
                cur.execute(sql_file.read_text())
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (sql_file.name,))
                conn.commit()
            except psycopg2.Error as err:
                conn.rollback()
                raise StackError(f"schema file {sql_file.name} failed: {str(err).strip()}") from None
            applied.append(sql_file.name)
    if applied:
        say(f"PostgreSQL: applied schema {', '.join(applied)}")
    return applied


def stop(settings: Settings) -> bool:
    if not pids():
        return False
    subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data_dir()), "-m", "fast", "-w", "stop"]),
                   capture_output=True)
    return True


def reachable(settings: Settings) -> bool:
    """The app database accepts a login (whoever runs the server)."""
    import psycopg2

    from marketpulse.config import postgres_dsn

    try:
        psycopg2.connect(postgres_dsn(settings), connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def healthy(settings: Settings) -> bool:
    return bool(pids()) and port_open(settings.postgres.port, settings.postgres.host)
