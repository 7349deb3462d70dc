"""Fixtures for the gateway tests: a real Synapse (SQLite, loopback), a recording HTTP proxy in
front of it (to see exactly what reached the homeserver), and the jeton-gateway binary.

Every process a fixture starts is stopped by the same fixture.
"""

import contextlib
import http.client
import http.server
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
GATEWAY_BIN = REPO / "target" / "debug" / "jeton-gateway"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url, timeout=90.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Synapse:
    def __init__(self, base, shared_secret):
        self.base = base
        self.shared_secret = shared_secret

    def stop(self):
        """Stops the homeserver (its database stays)."""
        stop(self.proc)

    def start(self):
        """Starts the homeserver again on the same port and database; returns once it answers."""
        self.proc = self.launch()
        wait_for_http(self.base + "/_matrix/client/versions", proc=self.proc)

    def request(self, method, path, body=None, token=None):
        """Plain HTTP+JSON straight to Synapse: the source of truth the tests compare with."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


@contextlib.contextmanager
def synapse_server():
    """A Synapse on a free loopback port, SQLite in a temp dir, rate limits off; stopped and
    removed on exit."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="jeton-synapse-"))
    port = free_port()
    secret = "jeton-test-shared-secret"
    config = workdir / "homeserver.yaml"
    subprocess.run(
        [sys.executable, "-m", "synapse.app.homeserver", "--server-name", "localhost",
         "--config-path", str(config), "--generate-config", "--report-stats=no",
         "--data-directory", str(workdir)],
        check=True, cwd=workdir, capture_output=True,
    )
    limits = {"per_second": 10000, "burst_count": 10000}
    overrides = {
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                        "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}},
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": secret,
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "presence": {"enabled": False},
        "rc_message": limits, "rc_registration": limits, "rc_login": {"address": limits, "account": limits, "failed_attempts": limits},
        "rc_joins": {"local": limits, "remote": limits},
        "rc_invites": {"per_room": limits, "per_user": limits},
        "rc_key_requests": limits, "rc_3pid_validation": limits, "rc_admin_redaction": limits,
        "rc_room_creation": limits, "rc_delayed_event_mgmt": limits,
        "log_config": None,
    }
    overrides.pop("log_config")
    (workdir / "overrides.yaml").write_text(json.dumps(overrides))  # JSON is YAML
    log = open(workdir / "synapse.log", "wb")

    def launch():
        return subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config), "-c", str(workdir / "overrides.yaml")],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        )

    server = Synapse(f"http://127.0.0.1:{port}", secret)
    server.launch = launch
    server.proc = launch()
    try:
        wait_for_http(server.base + "/_matrix/client/versions", proc=server.proc)
        server.media_store = workdir / "media_store"  # where tests reach the stored files
        yield server
    finally:
        stop(server.proc)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def synapse():
    with synapse_server() as server:
        yield server


class RecordingProxy:
    """HTTP (or, with `tls`, https) proxy between the gateway and Synapse that records every
    request it forwards."""

    def __init__(self, upstream_port, tls=None):
        self.requests = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, body))
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                except OSError:
                    return
                finally:
                    conn.close()
                try:
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the gateway gave up on this request (a cancelled long-poll)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:  # an ssl.SSLContext: the proxy then speaks https, as a real deployment's front does
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, method=None, contains=""):
        with self.lock:
            return [r for r in self.requests if (method is None or r[0] == method) and contains in r[1]]

    def clear(self):
        with self.lock:
            self.requests.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def proxy(synapse):
    p = RecordingProxy(int(synapse.base.rsplit(":", 1)[1]))
    yield p
    p.close()


_built = []


def build_gateway():
    """Builds the gateway (and the `jeton` CLI the tests decode CBOR with) once per session, so
    the tests never run a stale binary; a no-op when it is up to date."""
    if not _built:
        subprocess.run(["cargo", "build", "-q", "-p", "jeton-gateway", "-p", "jeton"], cwd=REPO, check=True)
        _built.append(True)
    return GATEWAY_BIN


class Gateway:
    def __init__(self, port, metrics_port, proc):
        self.port = port
        self.metrics_port = metrics_port
        self.proc = proc
        self.address = ("127.0.0.1", port)
        self.uri = f"coap://127.0.0.1:{port}"

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def metric(self, prefix):
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))


def start_gateway(homeserver, *extra):
    binary = build_gateway()
    port = free_port(socket.SOCK_DGRAM)
    metrics_port = free_port()
    settings = {
        "--homeserver": homeserver, "--listen": f"127.0.0.1:{port}", "--metrics-listen": f"127.0.0.1:{metrics_port}",
        # Tests send faster than a token would, and use short timers to finish in seconds.
        "--peer-rate": "1000", "--peer-burst": "1000", "--max-in-flight-per-peer": "64",
        "--observe-poll-timeout-ms": "2000", "--ack-timeout-ms": "500", "--log": "warn",
        # These suites speak plain MSC3079 (no EDHOC/OSCORE); tests/gateway/test_link.py turns
        # this off and pairs instead.
        "--compat-plain-msc3079": "true",
        # aiocoap 0.4.17 answers no RFC 9175 Echo challenge (neither to a plain request nor to
        # EDHOC message_1), so loopback is vouched for; tests/e2e (jeton-sim answers it) turns
        # this off.
        "--validated-prefixes": "127.0.0.0/8",
    }
    settings.update(zip(extra[::2], extra[1::2]))  # the caller's flags win
    args = [str(binary)] + [x for pair in settings.items() for x in pair]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JETON_GATEWAY_")}
    # stderr goes to a file: a pipe nobody reads would block a chatty gateway.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
    proc.log = log
    try:
        wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30, proc=proc)
    except Exception:
        stop(proc)
        raise
    return Gateway(port, metrics_port, proc)


@pytest.fixture(scope="session")
def gateway(proxy):
    gw = start_gateway(f"http://127.0.0.1:{proxy.port}")
    yield gw
    stop(gw.proc)
