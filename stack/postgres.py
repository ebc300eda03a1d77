"""PostgreSQL from Debian's packages, as a private cluster under .stack/postgres (not the system's
`main` cluster): initdb on first start, the app's three roles (owner, writer, reader: conf/pipeline.toml
[postgres]) with their passwords and the database, schema files applied in order, then db/grants.sql.

Passwords not given in the settings are generated on first start into .stack/secrets/postgres-<role>.password
(mode 600), where every component on this machine reads them (marketpulse/config.py, postgres_password); every
start sets each role's password to the one the settings resolve to, so a changed password, or a .stack made by
a version with one role, needs no manual step."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
from contextlib import closing
from pathlib import Path

from marketpulse.config import (
    POSTGRES_ROLES,
    ConfigError,
    Settings,
    configured_password,
    postgres_connect_args,
    postgres_password,
    postgres_user,
    stack_secret_file,
)
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


GRANTS_FILE = paths.REPO / "db" / "grants.sql"


def ensure_secrets(settings: Settings) -> list[str]:
    """Generates the password of every role the settings give none (configured_password) into the stack's
    secret file, once; returns the roles generated now."""
    made = []
    for role in POSTGRES_ROLES:
        try:
            if configured_password(settings, role) is not None:
                continue
        except ConfigError as err:
            raise StackError(str(err)) from None
        secret = stack_secret_file(role)
        if secret.exists():
            continue
        secret.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL and mode 600 from the start: never readable by others, never overwritten.
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(24) + "\n")
        made.append(role)
    if made:
        say(f"PostgreSQL: generated the password of the {', '.join(made)} role(s) in "
            f"{paths.shown(stack_secret_file('owner').parent)}")
    return made


def prepare(settings: Settings) -> None:
    """Before the supervisor's first start: the roles' passwords and the cluster's data folder (initdb on
    first use)."""
    ensure_secrets(settings)
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



def provision(settings: Settings) -> None:
    """On the running local server (every `make up`, so a .stack of an older version is brought up to date):
    the passwords, the app's roles and database, then the schema and the grants."""
    ensure_secrets(settings)
    _ensure_roles_and_database(settings)
    apply_schema(settings)


def _superuser_connect(settings: Settings, dbname: str = "postgres"):
    """The cluster's superuser over the private Unix socket (trust), as psql in _psql_admin."""
    import psycopg2

    conn = psycopg2.connect(host=str(base_dir()), port=settings.postgres.port, user="postgres", dbname=dbname)
    conn.autocommit = True
    return conn


def role_statements(settings: Settings, roles: tuple[str, ...] = POSTGRES_ROLES,
                    existing: frozenset[str] | set[str] = frozenset()):
    """CREATE or ALTER ROLE for each role, with its password as a quoted literal (psycopg2.sql): the owner may
    create databases (the tests' scratch databases), the writer and the reader nothing."""
    from psycopg2 import sql

    statements = []
    for role in roles:
        name = postgres_user(settings, role)
        attributes = "LOGIN CREATEDB" if role == "owner" else "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        verb = "ALTER" if name in existing else "CREATE"
        statements.append(sql.SQL(f"{verb} ROLE {{}} {attributes} PASSWORD {{}}").format(
            sql.Identifier(name), sql.Literal(postgres_password(settings, role))))
    return statements


def check_role_names(settings: Settings) -> None:
    names = [postgres_user(settings, role) for role in POSTGRES_ROLES]
    if len(set(names)) != len(names):
        raise StackError(f"postgres.owner_user, writer_user and reader_user must differ (got "
                         f"{', '.join(names)})")


def _existing_roles(cur, names: list[str]) -> set[str]:
    cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,))
    return {row[0] for row in cur.fetchall()}


def sync_roles(cur, settings: Settings, roles: tuple[str, ...]) -> None:
    """Creates the roles that are missing and sets every one's password to the settings' (idempotent); makes
    the owner a member of the writer and the reader, so that it may end their sessions (DROP DATABASE ... WITH
    (FORCE) of the tests' scratch databases); it gains no right it lacks, owning every table already."""
    from psycopg2 import sql

    existing = _existing_roles(cur, [postgres_user(settings, role) for role in roles])
    try:
        for statement in role_statements(settings, roles, existing):
            cur.execute(statement)
    except ConfigError as err:
        raise StackError(str(err)) from None
    members = [sql.Identifier(postgres_user(settings, role)) for role in roles if role != "owner"]
    if members:
        cur.execute(sql.SQL("GRANT {} TO {}").format(sql.SQL(", ").join(members),
                                                      sql.Identifier(postgres_user(settings, "owner"))))


def _ensure_roles_and_database(settings: Settings) -> None:
    from psycopg2 import sql

    check_role_names(settings)
    pg = settings.postgres
    with closing(_superuser_connect(settings)) as conn, conn.cursor() as cur:
        sync_roles(cur, settings, POSTGRES_ROLES)
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,))
        if not cur.fetchone():
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(pg.database), sql.Identifier(postgres_user(settings, "owner"))))


def ensure_service_roles(settings: Settings) -> None:
    """For `python -m stack init` on a server the stack did not start (docker-compose, Kubernetes), as the
    owner: a superuser owner (docker-compose's postgres image) creates the writer and reader and sets their
    passwords; any other owner needs them made already (CloudNativePG's managed roles) and says which lack."""
    check_role_names(settings)
    with closing(connect(settings, "owner")) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if cur.fetchone()[0]:
            sync_roles(cur, settings, ("writer", "reader"))
            return
        names = [postgres_user(settings, role) for role in ("writer", "reader")]
        missing = sorted(set(names) - _existing_roles(cur, names))
    if missing:
        raise StackError(f"PostgreSQL role(s) {', '.join(missing)} missing, and "
                         f"{postgres_user(settings, 'owner')} may not create roles: create them (README, "
                         "Database roles and passwords)")


def connect(settings: Settings, role: str, **kwargs):
    """psycopg2 connection as `role` (keyword arguments: no value is quoted by hand)."""
    import psycopg2

    try:
        args = postgres_connect_args(settings, role)
    except ConfigError as err:
        raise StackError(str(err)) from None
    return psycopg2.connect(**args, **kwargs)


def grant_statements(settings: Settings):
    """db/grants.sql with the database and role names filled in as quoted identifiers."""
    from psycopg2 import sql

    names = {"database": settings.postgres.database,
             **{role: postgres_user(settings, role) for role in POSTGRES_ROLES}}
    identifiers = {key: sql.Identifier(value) for key, value in names.items()}
    return sql.SQL(GRANTS_FILE.read_text()).format(**identifiers)


def apply_schema(settings: Settings) -> list[str]:
    """As the owner: applies db/schema/*.sql not yet recorded in schema_migrations, each in its own
    transaction, then db/grants.sql (every time: idempotent)."""
    import psycopg2

    applied = []
    with closing(connect(settings, "owner")) as conn, conn.cursor() as cur:
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
        try:
            cur.execute(grant_statements(settings))
            conn.commit()
        except psycopg2.Error as err:
            conn.rollback()
            raise StackError(f"{paths.shown(GRANTS_FILE)} failed: {str(err).strip()}") from None
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

    try:
        connect(settings, "owner", connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def healthy(settings: Settings) -> bool:
    return bool(pids()) and port_open(settings.postgres.port, settings.postgres.host)
