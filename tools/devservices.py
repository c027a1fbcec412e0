"""Private Postgres and Redis servers for development and tests.

``python tools/devservices.py run [--data-dir DIR]`` starts them under
``.devdata/`` (kept between runs), applies migrations, creates a demo user and
serves the app on http://127.0.0.1:$PORT (8000). When the postgres account cannot
reach that folder, the data lives in a stable per-folder one under /var/tmp.
``run --demo servers`` (``make run DEMO=servers``) serves the same origin through
nginx, with two MCP servers behind it (tools/demo_servers.py) registered as
resources of the issuer.
``python tools/devservices.py test [pytest args]`` starts throwaway servers on
free ports and runs the test suite against them, spread over the CPUs by
pytest-xdist with a Postgres and a Redis for each worker (see ``xdist_workers``).
Ctrl-C, SIGTERM or SIGHUP stops everything that was started. A run killed
outright (SIGKILL) leaves its servers running: the next run in the same folder
stops them, and clears pid files that name no server of that folder.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEV_DATA = ROOT / ".devdata"
DATABASE_NAME = "mcp_auth"
#: The unprivileged account Postgres runs as when we are root (initdb refuses root).
POSTGRES_OS_USER = "postgres"
#: Where data lives when the postgres account cannot reach the requested folder.
FALLBACK_PARENT = Path("/var/tmp")
#: Signals that mean "stop everything".
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def log(message: str) -> None:
    print(f"[devservices] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start listening on port {port}")


def find_postgres_binary(name: str) -> str:
    """Find a Postgres server binary; Debian keeps them off PATH."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: (
            int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0
        ),
    )
    candidates += glob.glob(f"/usr/local/pgsql/bin/{name}")
    if not candidates:
        raise SystemExit(
            f"cannot find the Postgres binary {name!r}; install postgresql"
        )
    return candidates[-1]


def find_or_install(binary: str, package: str) -> str:
    """Find a server binary, installing its Debian package when we are root."""
    search = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin"
    found = shutil.which(binary, path=search)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"{binary} is missing; installing Debian's {package} package")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package], check=True, env=env
        )
        found = shutil.which(binary, path=search)
    if not found:
        raise SystemExit(f"cannot find {binary}; install Debian's {package}")
    return found


def find_chromium() -> tuple[str, str]:
    """Debian's Chromium and its ChromeDriver, for the browser tests."""
    return (
        find_or_install("chromium", "chromium"),
        find_or_install("chromedriver", "chromium-driver"),
    )


def find_redis_server() -> str:
    return find_or_install("redis-server", "redis-server")


def find_wrk() -> str:
    """The HTTP load generator behind ``make bench``."""
    return find_or_install("wrk", "wrk")


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", POSTGRES_OS_USER, "--", *command]


def _reachable_by_postgres_user(path: Path) -> bool:
    """Tell whether the postgres account can enter ``path`` (and every parent)."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(
        _as_postgres_user(["test", "-x", str(path)]), capture_output=True
    )
    return probe.returncode == 0


def fallback_data_dir(data_dir: Path) -> Path:
    """The stable stand-in for ``data_dir``, which the postgres account cannot reach."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return FALLBACK_PARENT / f"mcp-auth-{digest}"


def _private_dir(path: Path) -> Path:
    """Create or reuse ``path`` as ours: others may pass through, not list or write."""
    # FALLBACK_PARENT is world-writable: someone else could plant a symlink or a
    # folder of theirs under our name, to read or swap the database in it.
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o711)
    info = path.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & 0o022
    ):
        raise SystemExit(f"refusing to use {path}: not a folder only we can write")
    path.chmod(0o711)
    return path


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate, its key, and the CA that signed it (PEM files)."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    name: str

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGINT is Postgres's "fast shutdown"; redis-server also exits on it.
            # The whole group: runuser, when used, does not pass signals on.
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


#: In a data folder: the run using it, as "PID START" (START: the process's
#: start time, so that a pid used again by another process is no match).
OWNER_FILE = "devservices.pid"
#: The folders this process has claimed, and whether each was left by a
#: run that was killed (:func:`_claim`).
_claims: dict[Path, bool] = {}


def _started_at(pid: int) -> str | None:
    """When a running process started (``/proc/PID/stat`` field 22); None if
    it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _claim(stack: contextlib.ExitStack, data_dir: Path) -> bool:
    """Make ``data_dir`` this process's until ``stack`` closes; say whether the
    run before us there was killed (its servers may still be running).

    Refuses, in one line, a folder that another live run is using.
    """
    data_dir = data_dir.resolve()
    if data_dir in _claims:
        return _claims[data_dir]
    owner = data_dir / OWNER_FILE
    try:
        pid, started = owner.read_text().split()
    except (OSError, ValueError):
        pid = started = ""
    if pid and int(pid) != os.getpid() and _started_at(int(pid)) == started:
        raise SystemExit(
            f"{data_dir} is in use by another run (pid {pid}); stop it first"
            f" (Ctrl-C there, or kill {pid})"
        )
    owner.write_text(f"{os.getpid()} {_started_at(os.getpid())}\n")
    _claims[data_dir] = killed = bool(pid)

    def release() -> None:
        _claims.pop(data_dir, None)
        owner.unlink(missing_ok=True)

    stack.callback(release)
    return killed


def _clear_leftover(
    pidfile: Path, program: str, directory: Path, stop: signal.Signals, killed: bool
) -> None:
    """Make sure no ``program`` serving ``directory`` is still running, as
    ``pidfile`` says, before we start our own.

    One left by a killed run is stopped with ``stop``; a pid file naming a
    process that is gone, or is not such a server, is removed (a server
    refuses to start beside one that names a live process, whoever it is).
    Any other running server is refused in one line saying what to do.
    """
    try:
        pid = int(pidfile.read_text().split()[0])
    except FileNotFoundError:
        return
    except (OSError, ValueError, IndexError):
        pid = 0
    if pid > 0 and _serves(pid, program, directory):
        if not killed:
            raise SystemExit(
                f"{program} (pid {pid}) still serves {directory}, and no run owns"
                f" it; stop it (kill -{stop.name[3:]} {pid}) and run again"
            )
        log(f"stopping the {program} (pid {pid}) a killed run left running")
        os.kill(pid, stop)
        deadline = time.monotonic() + 60
        while _started_at(pid) is not None:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{program} (pid {pid}) did not stop; kill it and run again"
                )
            time.sleep(0.1)
    if pidfile.exists():  # nothing of ours runs: a stale file
        log(f"removing the stale {pidfile} (pid {pid} is no {program} of this folder)")
        pidfile.unlink()


def _serves(pid: int, program: str, directory: Path) -> bool:
    """Whether process ``pid`` is ``program`` working in ``directory``."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    if name != program or _started_at(pid) is None:
        return False
    try:  # postgres and redis-server work in their folder
        if Path(os.readlink(f"/proc/{pid}/cwd")) == directory.resolve():
            return True
    except OSError:
        pass
    return str(directory.resolve()).encode() in command  # -D DIR, nginx's -p DIR


def start_postgres(
    data_dir: Path,
    durable: bool,
    tls: TlsFiles | None = None,
    extra_options: tuple[str, ...] = (),
) -> Server:
    """Start (initialising if needed) a Postgres cluster in ``data_dir``.

    With ``tls`` it accepts TCP connections over TLS only, and its URL asks
    psycopg to verify the certificate against ``tls.ca``. ``extra_options`` are
    more ``postgres`` arguments, e.g. the benchmark's
    ``-c shared_preload_libraries=pg_stat_statements``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, POSTGRES_OS_USER, POSTGRES_OS_USER)
    data_dir.chmod(0o700)
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(
            _as_postgres_user(
                [
                    find_postgres_binary("initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    port = free_port()
    options = [
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={data_dir}",
        "-p",
        str(port),
    ]
    if tls:
        options += _postgres_tls_options(data_dir, tls)
    if not durable:
        options += [
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
    options += extra_options
    with open(data_dir / "server.log", "ab") as server_log:
        process = subprocess.Popen(
            _as_postgres_user(
                [find_postgres_binary("postgres"), "-D", str(data_dir), *options]
            ),
            stdout=subprocess.DEVNULL,
            stderr=server_log,
            start_new_session=True,
        )
    server = Server(process, "", "postgres")
    base = f"postgresql://postgres@127.0.0.1:{port}"
    query = f"?sslmode=verify-full&sslrootcert={tls.ca}" if tls else ""
    with _stopped_on_failure(server):
        wait_for_port(port, process, "postgres")
        _create_database(base, query)
    server.url = f"{base}/{DATABASE_NAME}{query}"
    return server


def _postgres_tls_options(data_dir: Path, tls: TlsFiles) -> list[str]:
    """Serve TLS and refuse plain TCP (pg_hba ``hostnossl ... reject``)."""
    # Postgres refuses a key readable by anyone but its owner, the server account.
    for source, name in ((tls.cert, "server.crt"), (tls.key, "server.key")):
        target = data_dir / name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(target, POSTGRES_OS_USER, POSTGRES_OS_USER)
    hba = data_dir / "pg_hba_tls.conf"
    hba.write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 trust\n"
        "hostnossl all all all reject\n"
    )
    return [
        "-c",
        "ssl=on",
        "-c",
        f"ssl_cert_file={data_dir / 'server.crt'}",
        "-c",
        f"ssl_key_file={data_dir / 'server.key'}",
        "-c",
        f"hba_file={hba}",
    ]


@contextlib.contextmanager
def _stopped_on_failure(server: Server) -> Iterator[None]:
    """Stop a just-started server if it never became usable (or we were stopped)."""
    try:
        yield
    except BaseException:
        server.stop()
        raise


def _create_database(base_url: str, query: str = "") -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            dsn = f"{base_url}/postgres{query}"
            with psycopg.connect(dsn, autocommit=True) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_redis(data_dir: Path, durable: bool, tls: TlsFiles | None = None) -> Server:
    """Start Redis; with ``tls`` it listens for TLS only (``--port 0``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = ["--port", str(port)]
    if tls:
        listen = ["--port", "0", "--tls-port", str(port)]
        listen += ["--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key)]
        listen += ["--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]
    command = [
        find_redis_server(),
        *listen,
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "60 1" if durable else "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        # So that a run after a killed one finds this server (_clear_leftover).
        "--pidfile",
        str(data_dir / "redis.pid"),
    ]
    with open(data_dir / "redis.log", "ab") as server_log:
        process = subprocess.Popen(
            command, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"redis://127.0.0.1:{port}/0"
    if tls:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tls.ca}"
    server = Server(process, url, "redis")
    with _stopped_on_failure(server):
        wait_for_port(port, process, "redis-server")
    return server


@contextlib.contextmanager
def services(
    data_dir: Path,
    durable: bool,
    tls: TlsFiles | None = None,
    postgres_options: tuple[str, ...] = (),
) -> Iterator[dict[str, str]]:
    """Run Postgres and Redis for the duration of the block; yield their URLs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if not _reachable_by_postgres_user(data_dir):
            if durable:
                data_dir = _private_dir(fallback_data_dir(data_dir))
            else:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mcp-"))
                data_dir = Path(tmp)
                data_dir.chmod(0o711)
            log(f"the postgres account cannot reach the data folder; using {data_dir}")
        killed = _claim(stack, data_dir)
        pg_dir, redis_dir = data_dir / "postgres", data_dir / "redis"
        # SIGINT: Postgres's fast shutdown; SIGTERM: Redis saves, then exits.
        pg_lock = pg_dir / "postmaster.pid"
        _clear_leftover(pg_lock, "postgres", pg_dir, signal.SIGINT, killed)
        redis_pid = redis_dir / "redis.pid"
        _clear_leftover(redis_pid, "redis-server", redis_dir, signal.SIGTERM, killed)
        postgres = start_postgres(pg_dir, durable, tls, postgres_options)
        stack.callback(postgres.stop)
        redis = start_redis(redis_dir, durable, tls)
        stack.callback(redis.stop)
        yield {"DATABASE_URL": postgres.url, "REDIS_URL": redis.url}


#: In the data folder: what ``make run`` keeps between runs (0600).
SECRETS_FILE = "secrets.env"
DEMO_EMAIL = "demo@example.com"


@dataclass(frozen=True)
class DevSecrets:
    """The secrets file: ``SECRET_KEY``, so that sign-ins survive restarts,
    and the demo user's password, printed on every run."""

    path: Path
    secret_key: str
    demo_password: str


def _dev_secrets(data_dir: Path) -> DevSecrets:
    """Read the secrets file, adding what it lacks; readable by its owner only.

    A ``JWT_SECRET`` an earlier version kept there is dropped: ``make run``
    lets the service make and manage its own signing key, as a default
    deploy does (README, "Signing keys").
    """
    path = data_dir / SECRETS_FILE
    kept: dict[str, str] = {}
    if path.exists():
        lines = path.read_text().splitlines()
        kept = dict(line.split("=", 1) for line in lines if "=" in line)
    values = {key: value for key, value in kept.items() if key != "JWT_SECRET"}
    values.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    values.setdefault("DEMO_PASSWORD", secrets.token_urlsafe(12))
    if values != kept:
        _write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)  # a file of an earlier version too
    return DevSecrets(path, values["SECRET_KEY"], values["DEMO_PASSWORD"])


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only from the start."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def _flask(
    env: dict[str, str], *args: str, **kwargs: Any
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args], env=env, **kwargs
    )


def _ensure_demo_user(env: dict[str, str], kept: DevSecrets) -> None:
    """Make the demo user with the kept password, or give it that password
    back; print both, on every run."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "demo-user", DEMO_EMAIL],
        env=env,
        input=kept.demo_password + "\n",
        text=True,
        capture_output=True,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr.strip() or "could not make the demo user")
    if result.stdout.strip() == "reset":
        # Made by an older `make run`, which printed its password only once.
        log("the demo user had a password that was never kept; it has the kept one now")
    print(
        f"\n  demo user: {DEMO_EMAIL}\n  password:  {kept.demo_password}"
        f"\n  (kept in {kept.path})\n",
        flush=True,
    )


def demo_user(email: str, password: str) -> str:
    """With the app's settings: make the account ``email`` with ``password``,
    or give it that password if it has another; ``created``, ``reset`` or
    ``kept``. Run as ``devservices.py demo-user EMAIL`` (password on stdin),
    in a process of its own, since the app reads its settings at import."""
    from app import create_app
    from app.db import db
    from app.logs import log_to_stderr
    from app.passwords import hash_password, verify_password
    from app.users import create_user, find_by_email

    app = create_app()
    log_to_stderr()  # stdout is the answer
    with app.app_context():
        user = find_by_email(email)
        if user is None:
            with db.transaction():
                create_user(email, password)
            return "created"
        if verify_password(user.password_hash, password):
            return "kept"
        with db.transaction():
            user.password_hash = hash_password(password)
        return "reset"


#: What ``run --demo`` can start besides the app.
DEMOS = ("servers",)


def run(data_dir: Path = DEV_DATA, demo: str | None = None) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    kept = _dev_secrets(data_dir)
    # No JWT_SIGNING_KEY or JWT_SECRET of ours: the service makes its own
    # signing key (RS256) at `db upgrade` and publishes it, as a default
    # deploy does. One set in the environment still wins, as it does there.
    env = {**os.environ, "SECRET_KEY": kept.secret_key}
    env.setdefault("PORT", "8000")
    env.setdefault("ISSUER", f"http://127.0.0.1:{env['PORT']}")
    # Lets a metadata document served on this machine stand for a client.
    env.setdefault("CIMD_ALLOW_LOOPBACK", "on")
    with contextlib.ExitStack() as stack:
        if not (env.get("DATABASE_URL") and env.get("REDIS_URL")):
            urls = stack.enter_context(services(data_dir, durable=True))
            for name, url in urls.items():
                env[name] = env.get(name) or url
        if _flask(env, "db", "upgrade").returncode != 0:
            return 1
        _ensure_demo_user(env, kept)
        if demo == "servers":
            return _run_servers_demo(env, data_dir, stack)
        log(f"serving on {env['ISSUER']} (Ctrl-C stops everything)")
        server = _start_gunicorn(env, int(env["PORT"]))
        stack.callback(_terminate, server)
        return server.wait()


def _start_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{port}",
            "app:create_app()",
        ],
        env=env,
    )


def _signing_algorithm(env: dict[str, str], app_url: str) -> str:
    """The JWS algorithm the app signs with: the ``alg`` of the keys it
    publishes (RS256 for the key the service makes unless told otherwise)."""
    import json
    from datetime import UTC, datetime
    from urllib.request import urlopen

    with urlopen(f"{app_url}/.well-known/jwks.json", timeout=30) as answer:
        algorithms = {key["alg"] for key in json.load(answer)["keys"]}
    if len(algorithms) == 1:
        return algorithms.pop()
    if not algorithms:
        raise SystemExit("DEMO=servers needs a published signing key; unset JWT_SECRET")
    # A rotation to another SIGNING_KEY_ALGORITHM is under way: the key
    # signing now says which (the search server's verifier takes one).
    listed = _flask(env, "keys", "list", "--json", capture_output=True, text=True)
    if listed.returncode != 0:
        raise SystemExit(listed.stderr.strip())
    now = datetime.now(UTC)
    signing = [
        key
        for key in json.loads(listed.stdout)
        if datetime.fromisoformat(key["signs_from"]) <= now
    ]
    return str(signing[-1]["algorithm"])


def register_demo_resources(
    env: dict[str, str], registrations: list[list[str]]
) -> None:
    """``flask --app app resources add`` each resource not registered yet."""
    import json

    listed = _flask(env, "resources", "list", "--json", capture_output=True, text=True)
    if listed.returncode != 0:
        raise SystemExit(listed.stderr.strip())
    known = {entry["uri"] for entry in json.loads(listed.stdout)}
    for arguments in registrations:
        if arguments[0] in known:
            continue
        added = _flask(
            env, "resources", "add", *arguments, capture_output=True, text=True
        )
        if added.returncode != 0:
            raise SystemExit(added.stderr.strip())
        # The URI is the last line (the audit record may come first).
        log(f"registered the resource {added.stdout.strip().splitlines()[-1]}")


def _run_servers_demo(
    env: dict[str, str], data_dir: Path, stack: contextlib.ExitStack
) -> int:
    """nginx on PORT (the issuer's origin) in front of the app and two MCP servers."""
    from urllib.parse import urlsplit

    import demo_nginx
    from demo_servers import Demo

    public = urlsplit(env["ISSUER"])
    if public.scheme != "http" or public.hostname != "127.0.0.1" or public.path:
        raise SystemExit("DEMO=servers serves http://127.0.0.1:$PORT; unset ISSUER")
    demo = Demo(env["ISSUER"])
    killed = _claim(stack, data_dir)  # nginx on PORT: one run at a time
    # The app is behind nginx: one proxy hop, whose X-Forwarded-* it believes.
    # nginx is the one proxy, and its check location sets the resource headers.
    env = {**env, "TRUSTED_PROXY_HOPS": "1", "VERIFY_RESOURCE_HEADERS": "on"}
    register_demo_resources(env, demo.registrations())
    app_port = free_port()
    server = _start_gunicorn(env, app_port)
    stack.callback(_terminate, server)
    wait_for_port(app_port, server, "gunicorn")
    # The search server checks tokens with the key set: the same algorithm.
    algorithm = _signing_algorithm(env, f"http://127.0.0.1:{app_port}")
    script = str(ROOT / "tools" / "demo_servers.py")
    upstreams: dict[str, str] = {}
    for name, extra in (("notes", []), ("search", ["--algorithm", algorithm])):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, script, name, "--issuer", demo.issuer]
            + ["--port", str(port), *extra],
            env=env,
        )
        stack.callback(_terminate, process)
        wait_for_port(port, process, f"the {name} server")
        upstreams[name] = f"http://127.0.0.1:{port}"
    nginx_dir = data_dir / "nginx"
    nginx_dir.mkdir(exist_ok=True)
    nginx_dir.chmod(0o755)  # its workers run as nobody when we are root
    # SIGQUIT: nginx's graceful shutdown.
    _clear_leftover(nginx_dir / "nginx.pid", "nginx", nginx_dir, signal.SIGQUIT, killed)
    site = demo_nginx.site_config(
        listen=f"127.0.0.1:{env['PORT']}",
        server_name="127.0.0.1",
        issuer_upstream=f"http://127.0.0.1:{app_port}",
        notes_upstream=upstreams["notes"],
        search_upstream=upstreams["search"],
        notes_resource=demo.notes_resource,
    )
    try:
        nginx = demo_nginx.start_nginx(nginx_dir, site, int(env["PORT"]))
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    stack.callback(demo_nginx.stop_nginx, nginx)
    print(
        "\n  Two MCP servers behind one issuer; give an MCP client either URL:\n"
        f"    {demo.notes_url}    (notes: nginx asks /auth/verify)\n"
        f"    {demo.search_url}   (search: checks tokens with the JWKS, {algorithm})\n"
        f"  the issuer's own MCP endpoint: {demo.issuer}/mcp\n"
        f"  your connected applications:  {demo.issuer}/account\n",
        flush=True,
    )
    log(f"serving on {demo.issuer} through nginx (Ctrl-C stops everything)")
    return server.wait()


def _terminate(process: subprocess.Popen) -> None:
    """Stop gunicorn gracefully: requests in flight finish (``graceful_timeout``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _raise_stop(signum: int, _frame: object) -> None:
    # Only once: the clean-up that follows must not be cut short by another signal.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cpu_count() -> int:
    """The CPUs we may use: our affinity, capped by a cgroup v2 quota (a
    container's ``--cpus``), which ``os.cpu_count`` knows nothing of."""
    count = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    return count


def _names_tests(pytest_args: list[str]) -> bool:
    """Whether the arguments name test files or tests (``tests/x.py::test_y``);
    a folder (``tests``) is not a few tests."""
    return any(
        not arg.startswith("-") and (ROOT / arg.split("::", 1)[0]).is_file()
        for arg in pytest_args
    )


def xdist_workers(pytest_args: list[str]) -> tuple[int, list[str]]:
    """How many pytest-xdist workers to run, and pytest's arguments to say so.

    Nothing asked: one worker per CPU for the whole suite, and none when the
    arguments name test files (starting workers and their servers costs more
    than a file or a test takes). ``-n N`` / ``-n auto`` in the arguments
    decide instead (``-n 0`` or ``-p no:xdist``: none). 0 means no xdist.
    Workers take whole modules (``--dist loadscope``), so that a module's
    fixtures (a buildpack build, TLS servers, an nginx) are made once, unless
    the arguments choose a ``--dist``.
    """
    args = list(pytest_args)
    if "no:xdist" in args or "-pno:xdist" in args:
        return 0, args
    workers: int | None = None
    index = 0
    while index < len(args):
        arg, at, prefix = args[index], None, ""
        if arg in ("-n", "--numprocesses"):
            at = index + 1
        elif arg.startswith("--numprocesses="):
            at, prefix = index, "--numprocesses="
        elif arg.startswith("-n") and len(arg) > 2:
            at, prefix = index, "-n"
        if at is not None and at < len(args):
            value = args[at].removeprefix(prefix)
            if value in ("auto", "logical"):
                # Resolved here, where each worker's servers are started.
                value = str(cpu_count())
                args[at] = prefix + value
            if not value.isdigit():
                raise SystemExit(f"-n takes a number, auto or logical, not {value!r}")
            workers = int(value)
            index = at
        index += 1
    if workers is None:
        workers = 0 if _names_tests(args) else cpu_count()
        if workers < 2:
            return 0, args
        args = ["-n", str(workers), *args]
    if workers and not any(a == "--dist" or a.startswith("--dist=") for a in args):
        args += ["--dist", "loadscope"]
    return workers, args


def test(pytest_args: list[str]) -> int:
    """Run pytest against throwaway servers: one Postgres and one Redis, or a
    pair for each xdist worker (``TEST_DATABASE_URL_GW0``...), so that workers
    never empty each other's tables or keys (tests/conftest.py picks its own)."""
    workers, pytest_args = xdist_workers(pytest_args)
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        for worker in [f"_GW{n}" for n in range(workers)] or [""]:
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="mcp-auth-test-")
            )
            data_dir = Path(tmp)
            data_dir.chmod(0o755)
            urls = stack.enter_context(services(data_dir, durable=False))
            env.update({f"TEST_{k}{worker}": v for k, v in urls.items()})
        if workers:
            log(f"{workers} pytest-xdist workers, each with its own Postgres and Redis")
        return subprocess.run(
            [sys.executable, "-m", "pytest", *pytest_args], env=env, cwd=ROOT
        ).returncode


def _run_options(args: list[str]) -> tuple[Path, str | None]:
    """``[--data-dir DIR] [--demo NAME]``; an empty NAME is no demo (``make run``)."""
    usage = "usage: devservices.py run [--data-dir DIR] [--demo servers]"
    options = {"--data-dir": "", "--demo": ""}
    if len(args) % 2:
        raise SystemExit(usage)
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag not in options:
            raise SystemExit(usage)
        options[flag] = value
    demo = options["--demo"] or None
    if demo is not None and demo not in DEMOS:
        raise SystemExit(f"unknown demo {demo!r}; choose from {', '.join(DEMOS)}")
    data_dir = (
        Path(options["--data-dir"]).resolve() if options["--data-dir"] else DEV_DATA
    )
    return data_dir, demo


def main(argv: list[str]) -> int:
    if argv[:1] == ["demo-user"] and len(argv) == 2:  # run's own (_ensure_demo_user)
        print(demo_user(argv[1], sys.stdin.readline().rstrip("\n")))
        return 0
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    # Whatever stops us (Ctrl-C, a process manager's or `timeout`'s TERM, a closed
    # terminal's HUP) unwinds the same way, stopping every server we started.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    try:
        if argv[0] == "run":
            return run(*_run_options(argv[1:]))
        return test(argv[1:])
    except KeyboardInterrupt:
        log("stopped")
        return 0 if argv[0] == "run" else 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
