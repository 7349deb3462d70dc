"""The end-to-end stack as test helpers: Synapse and gateway launchers (the gateway suite's own,
from tests/gateway, loaded by path so both suites start them the same way), jeton-sim tokens
driven through their line-oriented shell, a UDP relay that counts the bytes a token puts on the
air, matrix-nio peers with end-to-end encryption (vodozemac), and the encrypted room the
scenarios share.

A module with its own name rather than `conftest`: several suites run in one pytest process and
each has a conftest.py, so `from conftest import ...` would find whichever was loaded last.
"""

import asyncio
import base64
import heapq
import importlib.util
import os
import pathlib
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
SIM_BIN = REPO / "target" / "debug" / "jeton-sim"
CLI_BIN = REPO / "target" / "debug" / "jeton"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_gateway_suite = _load("jeton_gateway_suite_fixtures", REPO / "tests" / "gateway" / "conftest.py")
_users = _load("jeton_gateway_suite_users", REPO / "tests" / "gateway" / "matrix_users.py")
synapse_server = _gateway_suite.synapse_server
start_gateway = _gateway_suite.start_gateway
stop_process = _gateway_suite.stop
free_port = _gateway_suite.free_port
make_user = _users.make_user

_built = []


def build_sim():
    """Builds jeton-sim once per session so no test runs a stale binary."""
    if not _built:
        subprocess.run(["cargo", "build", "-q", "-p", "jeton-sim"], cwd=REPO, check=True)
        _built.append(True)
    return SIM_BIN


def build_cli():
    """Builds the jeton CLI once per session."""
    if not _built_cli:
        subprocess.run(["cargo", "build", "-q", "-p", "jeton"], cwd=REPO, check=True)
        _built_cli.append(True)
    return CLI_BIN


_built_cli = []


# ---------------------------------------------------------------------------------------
# The protected link: pairing tokens with the gateway (EDHOC + OSCORE)


def plain_link():
    """Whether the suite runs with the link unprotected (JETON_E2E_PLAIN_LINK=1), for
    comparing with plain MSC3079 CoAP."""
    return os.environ.get("JETON_E2E_PLAIN_LINK") == "1"


def pair(out, identity, tokens_file, name):
    """`jeton pair`: the token's provisioning file at `out`, the token added to the
    gateway's tokens file (and the gateway's identity made if it does not exist)."""
    subprocess.run([str(build_cli()), "pair", "--token-out", str(out), "--gateway-identity", str(identity),
                    "--gateway-tokens", str(tokens_file), "--name", name],
                   check=True, stdout=subprocess.DEVNULL)
    return out


class LinkPairing:
    """A gateway's link identity and its authorised tokens, with provisioning files paired
    ahead of time for the tokens the tests start: the gateway reads its tokens file once,
    when it starts."""

    def __init__(self, directory, count=64):
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.identity = directory / "gateway-identity.toml"
        self.tokens_file = directory / "gateway-tokens.toml"
        self.free = [pair(directory / f"token-{i}.link", self.identity, self.tokens_file, f"e2e-token-{i}")
                     for i in range(count)]
        self.states = 0

    def gateway_args(self):
        # The gateway suite's launcher turns the plain-MSC3079 compatibility mode on for its
        # aiocoap clients; a linked gateway runs with its default, off.
        # Nor does it vouch for loopback: each token proves its address with an Echo round
        # trip before its first handshake, as it would on the internet.
        # Each call is a gateway of its own, with a state file of its own (two gateways cannot
        # share one); a restarted gateway is given the arguments of the one it replaces.
        self.states += 1
        state = self.directory / f"gateway-state-{self.states}.sqlite3"
        return ["--link-identity", str(self.identity), "--link-tokens", str(self.tokens_file),
                "--compat-plain-msc3079", "false", "--validated-prefixes", "none", "--state", str(state)]

    def take(self):
        """The provisioning file of a paired token nobody uses yet."""
        assert self.free, "all pre-paired tokens are in use: raise LinkPairing's count"
        return self.free.pop(0)


def new_user(synapse, prefix):
    """A registered account: (user_id, localpart, password)."""
    body = make_user(synapse, prefix)
    user_id = body["user_id"]
    localpart = user_id[1:].split(":", 1)[0]
    return user_id, localpart, "pw-" + localpart


# ---------------------------------------------------------------------------------------
# A throwaway PostgreSQL cluster for a gateway's --database.


def postgres_binaries():
    """Debian's PostgreSQL binaries (the newest /usr/lib/postgresql/VERSION/bin), or None."""
    found = sorted((int(p.parent.parent.name), p.parent) for p in
                   pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit())
    return found[-1][1] if found else None


class PostgresCluster:
    """A cluster in a temporary directory, listening only on a unix socket there, run as the
    `postgres` user when the tests run as root (PostgreSQL refuses root), with one database
    whose gateway tables `jeton-gateway migrate` made. `close()` stops it and removes it."""

    def __init__(self, bin_dir):
        self.bin = bin_dir
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="jeton-e2e-pg-"))
        self.as_user = []
        if os.getuid() == 0:
            import pwd
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "jeton", "--no-sync", "-E", "UTF8")
        self._run("pg_ctl", "-D", self.data, "-l", self.dir / "server.log", "-w", "start",
                  "-o", f"-k {self.dir} -c listen_addresses=''")
        self._run("createdb", "-h", self.dir, "-U", "jeton", "gateway")
        self.url = f"postgresql:///gateway?host={self.dir}&user=jeton"
        subprocess.run([str(_gateway_suite.build_gateway()), "migrate", "--database", self.url],
                       check=True, stdout=subprocess.DEVNULL)

    def _run(self, binary, *args):
        subprocess.run(self.as_user + [str(self.bin / binary), *map(str, args)], check=True,
                       cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def close(self):
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", str(self.dir)])


# ---------------------------------------------------------------------------------------
# A UDP relay between a token and the gateway: counts what the token sends and receives.


class UdpRelay:
    """Listens on a loopback port for tokens and forwards each token's datagrams to the
    gateway from a socket of its own, and the answers back. Counts datagrams and payload
    bytes both ways. The target can change (a restarted gateway on another port). With
    `delay` (seconds), every datagram is held that long each way, as on a slow radio link."""

    def __init__(self, target, record=False, delay=0.0):
        self.target = target
        # (True for token -> gateway, datagram, the token's address) of everything relayed,
        # when recording.
        self.record = record
        self.delay = delay
        self.held = []  # (due, sequence, socket, datagram, address), a heap
        self.sequence = 0
        self.datagrams = []
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listen.getsockname()[1]
        self.upstream = {}  # token address -> socket towards the gateway
        self.token_of = {}  # socket towards the gateway -> token address
        self.lock = threading.Lock()
        self.up_bytes = self.down_bytes = self.up_datagrams = self.down_datagrams = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def counters(self):
        with self.lock:
            return self.up_bytes, self.down_bytes, self.up_datagrams, self.down_datagrams

    def _send(self, sock, data, address):
        if not self.delay:
            sock.sendto(data, address)
            return
        self.sequence += 1
        heapq.heappush(self.held, (time.monotonic() + self.delay, self.sequence, sock, data, address))

    def _release(self):
        """Sends the held datagrams that are due; returns how long until the next one."""
        while self.held and self.held[0][0] <= time.monotonic():
            _, _, sock, data, address = heapq.heappop(self.held)
            sock.sendto(data, address)
        return min(0.1, max(0.0, self.held[0][0] - time.monotonic())) if self.held else 0.1

    def _run(self):
        while self.running:
            sockets = [self.listen, *self.upstream.values()]
            ready, _, _ = select.select(sockets, [], [], self._release())
            for s in ready:
                try:
                    data, sender = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self.listen:
                    up = self.upstream.get(sender)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        self.upstream[sender] = up
                        self.token_of[up] = sender
                    with self.lock:
                        self.up_bytes += len(data)
                        self.up_datagrams += 1
                        if self.record:
                            self.datagrams.append((True, data, sender))
                    self._send(up, data, self.target)
                else:
                    with self.lock:
                        self.down_bytes += len(data)
                        self.down_datagrams += 1
                        if self.record:
                            self.datagrams.append((False, data, self.token_of[s]))
                    self._send(self.listen, data, self.token_of[s])

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        for s in [self.listen, *self.upstream.values()]:
            s.close()


# ---------------------------------------------------------------------------------------
# CoAP and OSCORE as a relay sees them.

OSCORE = 9


def coap(datagram):
    """A CoAP message (RFC 7252 §3) as (type, code, message id, token, [(option, value)], payload)."""
    first, code = datagram[0], datagram[1]
    mid = int.from_bytes(datagram[2:4], "big")
    tkl = first & 0x0F
    token, pos, number, options = datagram[4:4 + tkl], 4 + tkl, 0, []
    while pos < len(datagram) and datagram[pos] != 0xFF:
        delta, length = datagram[pos] >> 4, datagram[pos] & 0x0F
        pos += 1
        values = []
        for nibble in (delta, length):
            if nibble == 13:
                values.append(datagram[pos] + 13)
                pos += 1
            elif nibble == 14:
                values.append(int.from_bytes(datagram[pos:pos + 2], "big") + 269)
                pos += 2
            else:
                values.append(nibble)
        number += values[0]
        options.append((number, datagram[pos:pos + values[1]]))
        pos += values[1]
    payload = datagram[pos + 1:] if pos < len(datagram) else b""
    return (first >> 4) & 0x3, code, mid, token, options, payload


def option(message, number):
    return [value for n, value in message[4] if n == number]


def is_request(message):
    return 1 <= message[1] <= 31


def oscore_kid_and_piv(value):
    """(kid, Partial IV) of an OSCORE option value (RFC 8613 §6.1)."""
    flags = value[0]
    n = flags & 0x07
    piv = int.from_bytes(value[1:1 + n], "big")
    rest = value[1 + n:]
    if flags & 0x10:
        rest = rest[1 + rest[0]:]
    kid = bytes(rest) if flags & 0x08 else None
    return kid, piv


def wire(relay):
    """What the relay carried: (up, datagram, parsed message), in order."""
    with relay.lock:
        datagrams = list(relay.datagrams)
    return [(up, data, coap(data)) for up, data, _ in datagrams]


def gateway_partial_ivs(relay, start=0, end=None):
    """{(token address, Partial IV): the different datagrams with it} of the gateway's messages
    that carry a Partial IV of their own (notifications, and responses that cannot reuse the
    request's nonce), among the relay's recorded datagrams[start:end]; a retransmission is the
    same datagram again."""
    with relay.lock:
        datagrams = relay.datagrams[start:end]
    seen = {}
    for up, data, token in datagrams:
        message = coap(data)
        if up or not option(message, OSCORE):
            continue
        value = option(message, OSCORE)[0]
        if value and value[0] & 0x07:
            seen.setdefault((token, oscore_kid_and_piv(value)[1]), set()).add(data)
    return seen


# ---------------------------------------------------------------------------------------
# jeton-sim tokens


class SimToken:
    """A jeton-sim process driven through its shell: one command per line in, one event per
    line out. `lines` keeps every line printed since the first start, across restarts."""

    def __init__(self, gateway_address, user_id, password, state_dir, name, auto_join_from=(), extra_args=(),
                 link=None):
        self.gateway_address = gateway_address
        # The provisioning file of the protected link; None speaks plain CoAP.
        self.link = link
        self.user_id = user_id
        self.password = password
        self.state_dir = pathlib.Path(state_dir)
        self.name = name
        self.auto_join_from = list(auto_join_from)
        self.extra_args = list(extra_args)
        self.lines = []
        self.cond = threading.Condition()
        self.proc = None
        self.stderr = tempfile.TemporaryFile()

    def start(self):
        args = [str(build_sim()), "--gateway", self.gateway_address, "--user", self.user_id,
                "--password", self.password, "--state-dir", str(self.state_dir),
                "--device-name", self.name, "--login"]
        for user in self.auto_join_from:
            args += ["--auto-join-from", user]
        args += ["--link", str(self.link)] if self.link else ["--plain-coap-in-clear"]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc):
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def mark(self):
        with self.cond:
            return len(self.lines)

    def find(self, prefix, since=0):
        with self.cond:
            return [line for line in self.lines[since:] if line.startswith(prefix)]

    def wait_for(self, prefix, since=0, timeout=60.0, count=1):
        """Blocks until `count` lines starting with `prefix` were printed after index
        `since`; returns them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [line for line in self.lines[since:] if line.startswith(prefix)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not found):
                    raise AssertionError(
                        f"{self.name}: {count} line(s) starting with {prefix!r} not seen in "
                        f"{timeout}s (exit code {self.proc.poll()}); last lines: {self.lines[-25:]}"
                        f"; stderr: {self.stderr_tail()}")
                self.cond.wait(min(remaining, 0.2))

    async def expect(self, prefix, since=0, timeout=60.0, count=1):
        return await asyncio.to_thread(self.wait_for, prefix, since, timeout, count)

    def stderr_tail(self):
        self.stderr.seek(0)
        return self.stderr.read()[-2000:].decode(errors="replace")

    def kill(self):
        """A power cut: SIGKILL, no chance to flush anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.kill()
        if self.proc:
            self.proc.stdout.close()
            self.proc.stdin.close()


# ---------------------------------------------------------------------------------------
# matrix-nio peers


class NioPeer:
    """A matrix-nio client with end-to-end encryption, syncing in a background task and
    keeping every timeline event it saw (decrypted ones as RoomMessageText, ones it could not
    decrypt as MegolmEvent)."""

    def __init__(self, client, user_id):
        self.client = client
        self.user_id = user_id
        self.events = []  # (room_id, event)
        self.task = None

    @classmethod
    async def login(cls, homeserver, user, store_dir, name):
        from nio import AsyncClient, AsyncClientConfig, MegolmEvent, RoomMessageText

        user_id, _, password = user
        os.makedirs(store_dir, exist_ok=True)
        client = AsyncClient(homeserver, user_id, store_path=str(store_dir),
                             config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True))
        response = await client.login(password, device_name=name)
        assert getattr(response, "access_token", None), response
        peer = cls(client, user_id)
        client.add_event_callback(peer._on_event, (RoomMessageText, MegolmEvent))
        peer.task = asyncio.create_task(client.sync_forever(timeout=1000, full_state=True))
        return peer

    async def _on_event(self, room, event):
        self.events.append((room.room_id, event))

    async def create_encrypted_room(self, invite=()):
        response = await self.client.room_create(
            invite=list(invite),
            initial_state=[{"type": "m.room.encryption", "state_key": "",
                            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        assert getattr(response, "room_id", None), response
        return response.room_id

    async def wait(self, predicate, what, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.user_id}: timed out waiting for {what}")

    async def trust_devices_of(self, *user_ids):
        """Waits until nio has queried a device for each user, then verifies them all (the
        test checked nothing by hand: it trusts what the homeserver lists)."""
        for user_id in user_ids:
            await self.wait(lambda u=user_id: list(self.client.device_store.active_user_devices(u)),
                            f"a device of {user_id}")
        for user_id in user_ids:
            for device in self.client.device_store.active_user_devices(user_id):
                if not device.verified:
                    self.client.verify_device(device)

    async def send_text(self, room_id, body):
        from nio import RoomSendResponse

        response = await self.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                               ignore_unverified_devices=True)
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    def texts_from(self, room_id, sender):
        from nio import RoomMessageText
        return [e for r, e in self.events if r == room_id and e.sender == sender and isinstance(e, RoomMessageText)]

    def undecrypted_from(self, room_id, sender):
        from nio import MegolmEvent
        return [e for r, e in self.events if r == room_id and e.sender == sender and isinstance(e, MegolmEvent)]

    async def wait_for_text(self, room_id, sender, body, timeout=60.0):
        return await self.wait(lambda: [e for e in self.texts_from(room_id, sender) if e.body == body],
                               f"{body!r} from {sender}", timeout)

    async def close(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.close()


def room_events(synapse, access_token, room_id, keep=lambda event: True):
    """Every event of the room that `keep` accepts, as the homeserver stores it, oldest first."""
    events, start = [], None
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=f&limit=100"
    while True:
        status, body = synapse.request("GET", path + (f"&from={urllib.parse.quote(start)}" if start else ""),
                                       token=access_token)
        assert status == 200, body
        events += [e for e in body.get("chunk", []) if keep(e)]
        if not body.get("chunk") or "end" not in body:
            return events
        start = body["end"]


def raw_encrypted_events(synapse, access_token, room_id, sender):
    """Every m.room.encrypted event `sender` put into the room, as the homeserver stores it
    (the ciphertext nio was given), oldest first."""
    return room_events(synapse, access_token, room_id,
                       lambda e: e["type"] == "m.room.encrypted" and e["sender"] == sender)


def megolm_message_index(ciphertext_b64):
    """The message index of a Megolm message (version byte, then protobuf field 1 as a varint;
    Megolm's message format in the Matrix spec)."""
    data = base64.b64decode(ciphertext_b64 + "=" * (-len(ciphertext_b64) % 4))
    assert data[0] == 3 and data[1] == 0x08, data[:2].hex()
    index, shift, pos = 0, 0, 2
    while True:
        byte = data[pos]
        index |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return index


# ---------------------------------------------------------------------------------------
# The scenarios' starting point


def gateway_address(gateway):
    return f"127.0.0.1:{gateway.port}"


async def setup_room(synapse, gateway, tokens, tmp_path, relay=None, sim_args=()):
    """alice (nio) creates an encrypted room and invites two tokens, which join by themselves
    (--auto-join-from alice); alice trusts their devices. Token one talks through `relay` when
    given; `sim_args` go to both tokens."""
    alice = new_user(synapse, "alice")
    one, two = new_user(synapse, "tokone"), new_user(synapse, "toktwo")
    tok1 = tokens(relay.address if relay else gateway_address(gateway), one, "tok1", [alice[0]], sim_args)
    tok2 = tokens(gateway_address(gateway), two, "tok2", [alice[0]], sim_args)
    await tok1.expect("keys-published")
    await tok2.expect("keys-published")
    nio = await NioPeer.login(synapse.base, alice, tmp_path / "nio-alice", "nio-alice")
    room = await nio.create_encrypted_room(invite=[one[0], two[0]])
    await tok1.expect(f"joined {room}")
    await tok2.expect(f"joined {room}")
    await nio.trust_devices_of(one[0], two[0])
    return alice, one, two, tok1, tok2, nio, room


def http_media(synapse, token, mxc):
    """The bytes Synapse serves for `mxc` (authenticated media, as current clients fetch it)."""
    server, media_id = mxc.removeprefix("mxc://").split("/")
    request = urllib.request.Request(f"{synapse.base}/_matrix/client/v1/media/download/{server}/{media_id}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


async def nio_sends_file(nio, room, data, name, tamper_with=None):
    """nio uploads `data` encrypted and sends its m.file event; `tamper_with(mxc)` runs between
    the two."""
    from nio import RoomSendResponse, UploadResponse

    upload, keys = await nio.client.upload(lambda *_: data, content_type="application/pdf", filename=name,
                                           encrypt=True, filesize=len(data))
    assert isinstance(upload, UploadResponse), upload
    if tamper_with:
        tamper_with(upload.content_uri)
    content = {"msgtype": "m.file", "body": name, "file": {"url": upload.content_uri, **keys},
               "info": {"mimetype": "application/pdf", "size": len(data)}}
    sent = await nio.client.room_send(room, "m.room.message", content, ignore_unverified_devices=True)
    assert isinstance(sent, RoomSendResponse), sent
