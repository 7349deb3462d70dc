#!/usr/bin/env python3
"""End-to-end smoke run of jeton-sim against the real stack, all on loopback:
Synapse (SQLite) + jeton-gateway + two jeton-sim tokens + a matrix-nio E2EE client.

Checks, in one encrypted room:
  1. token1 -> token2 and token2 -> token1 decrypt;
  2. nio -> both tokens decrypt; token1 -> nio decrypts as a text message (not an
     undecryptable MegolmEvent);
  3. the gateway restarts: both tokens recover without user action (a token that sends
     learns it from the 4.01 and registers again at once, an idle one after
     --observe-silence-secs);
  4. token1 is killed with SIGKILL at random moments while it queues --messages texts and
     restarted each time: nio receives every text token1 reported as queued exactly once and
     decrypts all of them (nio rejects a reused Megolm index as undecryptable).

It is a manual tool for developers until the tests/ suite takes these scenarios over:

    python3 tools/sim/e2e/smoke.py --synapse-python tests/.venv/bin/python \\
        --nio-python /path/to/venv-with-matrix-nio-e2e/bin/python \\
        --gateway target/debug/jeton-gateway --sim target/debug/jeton-sim

Every process it starts is stopped when it exits; the Synapse data lives in a temp dir.
"""
import argparse
import collections
import json
import os
import pathlib
import queue
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
PROCS = []


def start(args, **kw):
    proc = subprocess.Popen(args, **kw)
    PROCS.append(proc)
    return proc


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def synapse(python, work):
    port = free_port()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    config = work / "homeserver.yaml"
    subprocess.run([python, "-m", "synapse.app.homeserver", "--server-name", "localhost",
                    "--config-path", str(config), "--generate-config", "--report-stats=no",
                    "--data-directory", str(work)], check=True, cwd=work, capture_output=True, env=env)
    limits = {"per_second": 10000, "burst_count": 10000}
    overrides = {
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "sqlite3", "args": {"database": str(work / "homeserver.db")}},
        "enable_registration": True, "enable_registration_without_verification": True,
        "report_stats": False, "trusted_key_servers": [], "suppress_key_server_warning": True,
        "presence": {"enabled": False}, "rc_message": limits, "rc_registration": limits,
        "rc_login": {"address": limits, "account": limits, "failed_attempts": limits},
        "rc_joins": {"local": limits, "remote": limits},
        "rc_invites": {"per_room": limits, "per_user": limits}, "rc_key_requests": limits,
    }
    (work / "overrides.yaml").write_text(json.dumps(overrides))
    start([python, "-m", "synapse.app.homeserver", "-c", str(config), "-c", str(work / "overrides.yaml")],
          cwd=work, stdout=open(work / "synapse.log", "wb"), stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/_matrix/client/versions", timeout=2)
            return base
        except OSError:
            time.sleep(0.3)
    raise SystemExit("Synapse did not start")


class Token:
    """A jeton-sim process driven through its line protocol."""

    def __init__(self, args, name, gateway, work):
        self.args, self.name, self.gateway, self.work = args, name, gateway, work
        self.boot()

    def boot(self):
        self.proc = start([self.args.sim, "--gateway", self.gateway, "--user", self.name,
                           "--password", "secret", "--login", "--state-dir", str(self.work / self.name),
                           "--auto-join-from", "@alice:localhost", "--observe-silence-secs", "20"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=open(self.work / f"{self.name}.err", "a"), text=True, bufsize=1)
        self.lines = queue.Queue()
        proc, lines = self.proc, self.lines

        def read():
            for line in proc.stdout:
                if self.args.verbose:
                    print(f"[{self.name}] {line.rstrip()}", flush=True)
                lines.put(line.rstrip())
        threading.Thread(target=read, daemon=True).start()

    def kill_and_restart(self):
        self.proc.kill()
        self.proc.wait()
        self.boot()

    def command(self, line):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            return True
        except BrokenPipeError:
            return False

    def wait(self, *prefixes, timeout=90):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.startswith(prefixes):
                return line
        raise SystemExit(f"{self.name}: no line starting with {prefixes} in {timeout} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synapse-python", default="tests/.venv/bin/python")
    parser.add_argument("--nio-python", default="tests/.venv/bin/python")
    parser.add_argument("--gateway", default="target/debug/jeton-gateway")
    parser.add_argument("--sim", default="target/debug/jeton-sim")
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="jeton-e2e-"))
    base = synapse(args.synapse_python, work)

    def register(user):
        status, body = http(base, "POST", "/_matrix/client/v3/register",
                            {"username": user, "password": "secret", "auth": {"type": "m.login.dummy"}})
        assert status == 200, (status, body)
        return body["access_token"]

    alice = register("alice")
    for user in ["token1", "token2", "nio"]:
        register(user)
    status, body = http(base, "POST", "/_matrix/client/v3/createRoom", {
        "preset": "private_chat", "invite": ["@token1:localhost", "@token2:localhost", "@nio:localhost"],
        "initial_state": [{"type": "m.room.encryption", "state_key": "",
                           "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}, alice)
    room = body["room_id"]
    gateway = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"

    def start_gateway():
        return start([args.gateway, "--listen", gateway, "--homeserver", base, "--metrics-listen", "off"],
                     stdout=open(work / "gateway.log", "ab"), stderr=subprocess.STDOUT)

    gateway_proc = start_gateway()
    time.sleep(1)
    token1, token2 = (Token(args, name, gateway, work) for name in ["token1", "token2"])
    for token in (token1, token2):
        token.wait("joined")
    time.sleep(2)

    token1.command(f"send {room} hello from token1")
    token1.wait("delivered")
    assert token2.wait("message").endswith(" e2e hello from token1")
    token2.command(f"send {room} hello from token2")
    token2.wait("delivered")
    assert token1.wait("message").endswith(" e2e hello from token2")
    print("ok: the tokens read each other", flush=True)

    nio_store = work / "nio"
    nio = start([args.nio_python, str(HERE / "nio_client.py"), "peer", base, room, str(nio_store)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for token in (token1, token2):
        assert token.wait("message", timeout=120).endswith(" e2e hello from nio")
    token1.command(f"send {room} token1 to nio")
    token1.wait("delivered")
    nio.wait(timeout=120)
    assert "text @token1:localhost token1 to nio" in nio.stdout.read().splitlines()
    print("ok: nio and the tokens read each other", flush=True)

    gateway_proc.kill()
    gateway_proc.wait()
    gateway_proc = start_gateway()
    time.sleep(1)
    token2.command(f"send {room} after the gateway restart")
    token2.wait("delivered", timeout=120)
    assert token1.wait("message", timeout=120).endswith(" e2e after the gateway restart")
    print("ok: the tokens recover from a gateway restart", flush=True)

    rng = random.Random(args.seed)
    queued, kills, n = [], 0, 0
    while n < args.messages:
        body = f"kill-{n}"
        line = None
        if token1.command(f"send {room} {body}"):
            try:
                line = token1.wait("queued", "error", timeout=20)
            except SystemExit:
                line = None
        if line and line.startswith("queued"):
            queued.append(body)
            n += 1
        else:
            time.sleep(0.5)  # outbox full, or the token was down
        if rng.random() < 0.3:
            time.sleep(rng.random() * 0.4)
            token1.kill_and_restart()
            kills += 1
    for _ in range(120):
        token1.command("status")
        if "outbox=0" in token1.wait("status", timeout=10):
            break
        time.sleep(1)
    read = subprocess.run([args.nio_python, str(HERE / "nio_client.py"), "read", base, room, str(nio_store)],
                          capture_output=True, text=True, timeout=300).stdout.splitlines()
    texts = collections.Counter(l.split(" ", 2)[2] for l in read if l.startswith("text @token1:localhost kill-"))
    undecryptable = [l for l in read if l.startswith("undecryptable @token1")]
    missing = [b for b in queued if texts[b] == 0]
    duplicated = [b for b, count in texts.items() if count > 1]
    print(f"SIGKILL x{kills} during {len(queued)} queued messages: missing {missing}, "
          f"duplicated {duplicated}, undecryptable {len(undecryptable)}", flush=True)
    assert not missing and not duplicated and not undecryptable
    print("ok: every queued message arrived once and decrypted", flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        for proc in reversed(PROCS):
            if proc.poll() is None:
                proc.terminate()
        for proc in PROCS:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
