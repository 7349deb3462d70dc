"""The README's main command, tools/demo/run, driven the way a script would: its shell fed from
a pipe. It must start Synapse, the gateway and a token that logs in, give a person working
credentials and an invite to an encrypted room, and leave nothing running when the input ends."""

import asyncio
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time

from e2e_stack import REPO, NioPeer, free_port

DEMO = REPO / "tools" / "demo" / "run"


class Output:
    def __init__(self, proc):
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, pattern, timeout=240):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    match = re.search(pattern, line)
                    if match:
                        return match
                if time.monotonic() > deadline:
                    raise AssertionError(f"{pattern!r} not printed; output: {self.lines[-40:]}")
                self.cond.wait(0.5)


def processes_mentioning(text):
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append((entry.name, cmdline))
    return found


def nothing_listens_on(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def udp_port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_the_demo_lets_a_person_chat_with_the_token_and_stops_everything_at_end_of_input(tmp_path):
    run_demo_and_end_it(lambda proc: proc.stdin.close(), chat_from=tmp_path)


def test_ctrl_c_in_the_demo_stops_everything():
    # A terminal sends SIGINT to the whole foreground process group.
    run_demo_and_end_it(lambda proc: os.killpg(proc.pid, signal.SIGINT), exit_code=130)


async def chat_with_the_token(homeserver, guest, password, room, proc, out, store):
    """What the demo tells a person to do, with matrix-nio as their client: log in with the
    printed credentials, accept the invite, write to the token, read its answer."""
    token = "@jeton:localhost"
    person = await NioPeer.login(homeserver, (guest, None, password), store, "a person's client")
    try:
        joined = await person.client.join(room)
        assert getattr(joined, "room_id", None) == room, joined
        await person.trust_devices_of(token)
        await person.send_text(room, "hello token, from a person")
        await asyncio.to_thread(out.wait_for, rf"^message {re.escape(room)} {re.escape(guest)} \S+ e2e "
                                "hello token, from a person$", 60)
        proc.stdin.write(f"send {room} hello person, from the token\n")
        proc.stdin.flush()
        [answer] = await person.wait_for_text(room, token, "hello person, from the token")
        assert answer.decrypted
    finally:
        await person.close()


def run_demo_and_end_it(end, exit_code=0, chat_from=None):
    import urllib.request
    import json

    hs_port, gw_port = free_port(), free_port(socket.SOCK_DGRAM)
    env = dict(os.environ, JETON_DEMO_HS_PORT=str(hs_port), JETON_DEMO_GATEWAY_PORT=str(gw_port))
    proc = subprocess.Popen([str(DEMO)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, env=env, start_new_session=True,
                            # as from a shell prompt: SIGINT not ignored, whatever pytest inherited
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = Output(proc)
    try:
        state = out.wait_for(r"starting Synapse on (\S+) \(state in (\S+)\)")
        homeserver, state_dir = state.group(1), state.group(2)
        assert homeserver == f"http://127.0.0.1:{hs_port}"
        guest, password = out.wait_for(r"Your login:\s+(@\S+)\s+password: (\S+)").groups()
        room = out.wait_for(r"Room:\s+(!\S+) \(end-to-end encrypted").group(1)
        out.wait_for(r"^logged-in @jeton:localhost \S+$", timeout=120)
        out.wait_for(rf"^joined {re.escape(room)}$", timeout=120)
        proc.stdin.write("rooms\n")
        proc.stdin.flush()
        out.wait_for(rf"^room {re.escape(room)} encrypted members=1 #1$", timeout=30)

        # The printed credentials log in, and that account is invited to the token's room.
        login = urllib.request.Request(homeserver + "/_matrix/client/v3/login", method="POST", data=json.dumps(
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": guest},
             "password": password}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(login, timeout=30) as r:
            access = json.loads(r.read())["access_token"]
        sync = urllib.request.Request(homeserver + "/_matrix/client/v3/sync?timeout=0",
                                      headers={"Authorization": f"Bearer {access}"})
        with urllib.request.urlopen(sync, timeout=30) as r:
            assert room in json.loads(r.read())["rooms"]["invite"]

        if chat_from:
            asyncio.run(chat_with_the_token(homeserver, guest, password, room, proc, out, chat_from / "nio"))

        running = processes_mentioning(state_dir)
        assert any("synapse.app.homeserver" in c for _, c in running), running
        assert any("jeton-sim" in c for _, c in running), running
        assert processes_mentioning(f"--listen 127.0.0.1:{gw_port}"), "the gateway is not running"

        end(proc)
        assert proc.wait(timeout=90) == exit_code, out.lines[-20:]
        out.wait_for(r"^==> stopped$", timeout=5)
        assert processes_mentioning(state_dir) == []  # Synapse and the token
        assert processes_mentioning(f"--listen 127.0.0.1:{gw_port}") == []  # the gateway
        assert not pathlib.Path(state_dir).exists()
        assert nothing_listens_on(hs_port), "Synapse still listens"
        assert udp_port_is_free(gw_port), "the gateway still holds its port"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
