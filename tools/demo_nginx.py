"""nginx in front of the issuer and two MCP servers, on one origin.

``site_config`` writes the ``server {}`` block the README shows and the tests
and ``make run DEMO=servers`` run: ``/notes/`` goes to the notes server once the
issuer's ``GET /auth/verify`` has accepted the token for it, ``/search/`` goes
straight to the search server (which checks tokens itself), and every other
path is the issuer. ``start_nginx`` runs it with every file nginx writes kept
in one folder.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

from devservices import find_or_install


def site_config(
    *,
    listen: str,
    server_name: str,
    issuer_upstream: str,
    notes_upstream: str,
    search_upstream: str,
    notes_resource: str,
) -> str:
    """The ``server {}`` block; upstreams are ``http://host:port`` with no path."""
    return f"""\
server {{
    listen {listen};
    server_name {server_name};

    # Server A (notes): nginx asks the issuer about every request first.
    location /notes/ {{
        auth_request /_verify;
        # On 401 nginx passes the issuer's WWW-Authenticate challenge on itself.
        auth_request_set $auth_subject $upstream_http_x_auth_subject;
        auth_request_set $auth_client $upstream_http_x_auth_client;
        auth_request_set $auth_scope $upstream_http_x_auth_scope;
        # proxy_set_header replaces whatever the client sent under these names,
        # so the server can believe them.
        proxy_set_header X-Auth-Subject $auth_subject;
        proxy_set_header X-Auth-Client $auth_client;
        proxy_set_header X-Auth-Scope $auth_scope;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        # Streamable HTTP may answer with a server-sent event stream.
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_read_timeout 1h;
        proxy_pass {notes_upstream};
    }}

    # The token check. The issuer finds the guarded resource from the public
    # host and path: /notes/mcp is under the registered {{ISSUER}}/notes.
    location = /_verify {{
        internal;
        proxy_pass {issuer_upstream}/auth/verify;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        # nginx passes the client's own headers to the subrequest: a client
        # must not pick the resource its token is checked against. This
        # location guards one resource, named outright.
        proxy_set_header X-MCP-Resource {notes_resource};
        # The original address too ($http_host keeps the port, $host drops
        # it): the issuer refuses a request whose two disagree, such as one
        # whose Host the client chose to name another registered server.
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Forwarded-Uri $request_uri;
        proxy_set_header X-Forwarded-Proto $scheme;
    }}

    # Server B (search) checks tokens itself, against the issuer's JWKS.
    location /search/ {{
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_read_timeout 1h;
        proxy_pass {search_upstream};
    }}

    # Everything else is the issuer: discovery (and each resource's RFC 9728
    # document), /register, /authorize, /login, /token, /account, its own /mcp.
    location / {{
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_pass {issuer_upstream};
    }}
}}
"""


def main_config(directory: Path, site: Path) -> str:
    """An nginx.conf that keeps every file nginx writes inside ``directory``."""
    temp = {
        name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    return f"""
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
"""


def start_nginx(directory: Path, site_text: str, port: int) -> subprocess.Popen:
    """Check and start nginx with ``site_text``; return once it listens on ``port``.

    ``directory`` must be enterable by nginx's workers (``nobody`` when we are root).
    """
    directory.mkdir(parents=True, exist_ok=True)
    site = directory / "site.conf"
    site.write_text(site_text)
    config = directory / "nginx.conf"
    config.write_text(main_config(directory, site))
    nginx = find_or_install("nginx", "nginx")
    log = directory / "startup.log"
    base = [nginx, "-p", str(directory), "-c", str(config), "-e", str(log)]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx refused its configuration: {check.stderr}")
    process = subprocess.Popen(
        base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"nginx exited: {log.read_text() if log.exists() else ''}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return process
        time.sleep(0.05)
    stop_nginx(process)
    raise RuntimeError(f"nginx did not listen on {port}")


def stop_nginx(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)  # graceful shutdown
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
