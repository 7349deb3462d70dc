"""The project's own token (jeton-sim: jeton-core on the host) through the gateway to Synapse:
log in, publish keys (Block1), join on invite, receive a message by Observe, send one."""

import pathlib
import queue
import subprocess
import tempfile
import threading
import time
import uuid

from conftest import REPO, stop
from matrix_users import make_room, make_user

SIM = REPO / "target" / "debug" / "jeton-sim"


class Sim:
    def __init__(self, gateway, user, password, invited_by):
        subprocess.run(["cargo", "build", "-q", "-p", "jeton-sim"], cwd=REPO, check=True)
        self.dir = tempfile.TemporaryDirectory(prefix="jeton-sim-")
        pw = pathlib.Path(self.dir.name) / "password"
        pw.write_text(password)
        self.proc = subprocess.Popen(
            [str(SIM), "--gateway", f"127.0.0.1:{gateway.port}", "--user", user, "--password-file", str(pw),
             "--state-dir", str(pathlib.Path(self.dir.name) / "state"), "--login", "--auto-join-from", invited_by,
             "--plain-coap-in-clear"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, *words, timeout=45):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(line)
            if all(w in line for w in words):
                return line
        raise AssertionError(f"no line with {words} in {self.seen[-20:]}")

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.proc)
        self.dir.cleanup()


def test_jeton_sim_logs_in_joins_receives_and_sends_through_the_gateway(gateway, synapse):
    token_user = make_user(synapse, "tok")
    name = token_user["user_id"][1:].split(":")[0]
    peer = make_user(synapse, "peer")
    sim = Sim(gateway, name, "pw-" + name, peer["user_id"])
    try:
        sim.wait_for("logged-in", token_user["user_id"])
        sim.wait_for("keys-published")
        room = make_room(synapse, peer["access_token"])
        status, _ = synapse.request("POST", f"/_matrix/client/v3/rooms/{room}/invite", {"user_id": token_user["user_id"]},
                                    token=peer["access_token"])
        assert status == 200
        sim.wait_for("joined", room)

        text = f"from peer {uuid.uuid4().hex[:6]}"
        synapse.request("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{uuid.uuid4()}",
                        {"msgtype": "m.text", "body": text}, token=peer["access_token"])
        sim.wait_for("message", room, peer["user_id"], text)

        reply = f"hello from the token {uuid.uuid4().hex[:6]}"
        sim.command(f"send {room} {reply}")
        sim.wait_for("delivered", room)
    finally:
        sim.close()
    status, page = synapse.request("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50", token=peer["access_token"])
    bodies = [(e["sender"], e["content"].get("body")) for e in page["chunk"] if e["type"] == "m.room.message"]
    assert bodies.count((token_user["user_id"], reply)) == 1
    status, devices = synapse.request("POST", "/_matrix/client/v3/keys/query", {"device_keys": {token_user["user_id"]: []}},
                                      token=peer["access_token"])
    assert devices["device_keys"][token_user["user_id"]], "the token's device keys reached Synapse"
