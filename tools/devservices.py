"""Private Postgres and Redis servers for development and tests.

``python tools/devservices.py run`` starts them under ``.devdata/`` (kept between
runs), applies migrations, creates a demo user and serves the app on
http://127.0.0.1:8000. ``python tools/devservices.py test [pytest args]`` starts
throwaway servers on free ports and runs the test suite against them. Ctrl-C
stops everything that was started.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_DATA = ROOT / ".devdata"
DATABASE_NAME = "mcp_auth"
#: The unprivileged account Postgres runs as when we are root (initdb refuses root).
POSTGRES_OS_USER = "postgres"


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


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", POSTGRES_OS_USER, "--", *command]


def _usable_by_postgres_user(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(
        _as_postgres_user(["test", "-w", str(path)]), capture_output=True
    )
    return probe.returncode == 0


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


def start_postgres(data_dir: Path, durable: bool) -> Server:
    """Start (initialising if needed) a Postgres cluster in ``data_dir``."""
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
    if not durable:
        options += [
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
    with open(data_dir / "server.log", "ab") as server_log:
        process = subprocess.Popen(
            _as_postgres_user(
                [find_postgres_binary("postgres"), "-D", str(data_dir), *options]
            ),
            stdout=subprocess.DEVNULL,
            stderr=server_log,
            start_new_session=True,
        )
    wait_for_port(port, process, "postgres")
    base = f"postgresql://postgres@127.0.0.1:{port}"
    _create_database(base)
    return Server(process, f"{base}/{DATABASE_NAME}", "postgres")


def _create_database(base_url: str) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
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


def start_redis(data_dir: Path, durable: bool) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        find_redis_server(),
        "--port",
        str(port),
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
    ]
    with open(data_dir / "redis.log", "ab") as server_log:
        process = subprocess.Popen(
            command, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for_port(port, process, "redis-server")
    return Server(process, f"redis://127.0.0.1:{port}/0", "redis")


@contextlib.contextmanager
def services(data_dir: Path, durable: bool) -> Iterator[dict[str, str]]:
    """Run Postgres and Redis for the duration of the block; yield their URLs."""
    if not _usable_by_postgres_user(data_dir.parent):
        data_dir = Path(tempfile.mkdtemp(prefix="mcp-auth-"))
        data_dir.chmod(0o755)
    started: list[Server] = []
    try:
        started.append(start_postgres(data_dir / "postgres", durable))
        started.append(start_redis(data_dir / "redis", durable))
        yield {"DATABASE_URL": started[0].url, "REDIS_URL": started[1].url}
    finally:
        for server in reversed(started):
            server.stop()


def _dev_secrets() -> dict[str, str]:
    """Keep development secrets stable across runs, so sessions survive restarts."""
    path = DEV_DATA / "secrets.env"
    if not path.exists():
        path.write_text(
            f"SECRET_KEY={secrets.token_urlsafe(48)}\nJWT_SECRET={secrets.token_urlsafe(48)}\n"
        )
        path.chmod(0o600)
    pairs = (
        line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
    )
    return {key: value for key, value in pairs}


def _dev_signing_key() -> str:
    """An EC P-256 key kept in the dev data dir, so tokens survive restarts."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = DEV_DATA / "jwt-signing-key.pem"
    if not path.exists():
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Created 0600 from the start: a private key is never world-readable.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
    return path.read_text()


def _flask(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args], env=env, **kwargs
    )


def _create_demo_user(env: dict[str, str]) -> None:
    email = "demo@example.com"
    password = secrets.token_urlsafe(12)
    result = _flask(
        env,
        "users",
        "create",
        email,
        "--password-stdin",
        input=password + "\n",
        text=True,
        capture_output=True,
    )
    if result.returncode == 0:
        print(f"\n  demo user: {email}\n  password:  {password}\n", flush=True)
    elif "already exists" not in result.stderr:
        raise SystemExit(result.stderr.strip())


def run() -> int:
    DEV_DATA.mkdir(exist_ok=True)
    env = {**os.environ, **_dev_secrets()}
    if not env.get("JWT_SIGNING_KEY"):
        # The asymmetric set-up by default: /.well-known/jwks.json is live.
        env["JWT_SIGNING_KEY"] = _dev_signing_key()
    env.setdefault("ISSUER", "http://127.0.0.1:8000")
    env.setdefault("PORT", "8000")
    with contextlib.ExitStack() as stack:
        if not (env.get("DATABASE_URL") and env.get("REDIS_URL")):
            urls = stack.enter_context(services(DEV_DATA, durable=True))
            for name, url in urls.items():
                env[name] = env.get(name) or url
        if _flask(env, "db", "upgrade").returncode != 0:
            return 1
        _create_demo_user(env)
        log(f"serving on {env['ISSUER']} (Ctrl-C stops everything)")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{env['PORT']}",
                "app:create_app()",
            ],
            env=env,
        )
        try:
            return server.wait()
        except KeyboardInterrupt:
            server.send_signal(signal.SIGTERM)
            server.wait()
            return 0


def test(pytest_args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="mcp-auth-test-") as tmp:
        data_dir = Path(tmp)
        data_dir.chmod(0o755)
        with services(data_dir, durable=False) as urls:
            env = {**os.environ, **{f"TEST_{k}": v for k, v in urls.items()}}
            return subprocess.run(
                [sys.executable, "-m", "pytest", *pytest_args], env=env, cwd=ROOT
            ).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "run":
        return run()
    return test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
