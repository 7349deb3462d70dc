"""Wire bytes, side by side: UDP payload for CoAP through the gateway versus TCP payload
(headers included) for HTTP/1.1+JSON straight to Synapse, for login, an encrypted send of an
11-character text, an incremental sync delivering that event, and idle traffic per hour with
Observe. Starts its own Synapse and gateway on loopback and stops them.

Run: tests/.venv/bin/python tests/gateway/bench_wire_bytes.py   (VERSION=1 for MSC3079 v1 tables)

What is sent (the same Matrix content on both sides unless a row says otherwise):
- HTTP: what an aiohttp-based client such as matrix-nio sends (Host, Accept, Accept-Encoding,
  User-Agent, Content-Length, Content-Type, Authorization), on a kept-alive connection.
- CoAP: a token's requests as jeton-core makes them: 4-byte CoAP token, no Content-Format or
  Accept with a body (v2's default), option 257 = 2 (jeton v2: integer keys, binary fields
  as byte strings, well-known values as simple values, sync responses without empty members) and the
  paths jeton-core uses (`v` for sync, `we` for an encrypted send, the event type implied); with
  VERSION=1 the MSC3079 v1 tables and paths (`7`, `9`). Access token sticky (sent once, at login).
- The Megolm send as jeton-core makes it: {algorithm, ciphertext, session_id} plus the deprecated
  sender_key and device_id (matrix-nio rejects Megolm events without them), txn ids as jeton-core
  makes them: 6 radix-64 digits of a random prefix and a radix-64 counter, here 2 digits (a
  token's transactions 64 to 4095; key shares to other devices use them up too). Under v2 the gateway keeps the room id and the sender fields with the
  access token, and the Megolm session id per room (PROFILE.md section 1.1): jeton-core's first send
  to a room (and the first of each new Megolm session) after the access token went out names them
  in full, every later one names the room by its handle ("~" + 11 characters) and leaves the sender
  fields and the session id out; the homeserver receives the same event either way. Both rows
  are printed; HTTP has no such state, so its row is the full request each time. The
  ciphertext has the exact length a Megolm message of the lean plaintext
  {"type":"m.room.message","content":{"msgtype":"m.text","body":"hello world"},"room_id":...}
  has (version, index, AES-CBC ciphertext, 8-byte MAC, 64-byte signature); random bytes.
- Sync via Observe: the CON notification carrying the event plus the client's empty ACK. The
  sync uses jeton-core's filter (uploaded once): the event types and fields a token reads, inside
  `content` too, so the deprecated Megolm sender fields stay on the homeserver.
- Idle: the gateway's keepalive notification + ACK (nothing else crosses the air), measured at a
  short keepalive and scaled to the default of one per 1200 s.
"""

import base64
import json
import os
import pathlib
import select
import socket
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import aiocoap  # noqa: E402
import cbor2  # noqa: E402
from aiocoap import Code, Message  # noqa: E402
from aiocoap.optiontypes import OpaqueOption, UintOption  # noqa: E402

from coap_client import decode_cbor, encode_cbor  # noqa: E402
from conftest import start_gateway, stop, synapse_server  # noqa: E402
from matrix_users import make_room, make_user  # noqa: E402

# Option 257: 2 (jeton v2, the default) or 1 (MSC3079 v1: base64 stays text) with VERSION=1.
VERSION = int(os.environ.get("VERSION", "2"))
# The short paths: what jeton-core sends under v2 (`v` = /v3/sync, `we` = /v3/rooms/{roomId}/send/
# m.room.encrypted/{txnId}); MSC3079 v1's `7` (/r0/sync) and `9` (/r0/rooms/{roomId}/send/{type}/{txnId}).
SYNC, SEND_ENCRYPTED = ("/v", "/we/{room}/{txn}") if VERSION == 2 else ("/7", "/9/{room}/m.room.encrypted/{txn}")
NIO_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "User-Agent": "Python/3.11 aiohttp/3.12.15"}


class TcpCounter:
    """A byte-counting TCP relay in front of Synapse."""

    def __init__(self, target_port):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.up = self.down = 0
        self.target = target_port
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.target))
        while True:
            readable, _, _ = select.select([client, server], [], [])
            for s in readable:
                data = s.recv(65536)
                if not data:
                    return
                if s is client:
                    self.up += len(data)
                    server.sendall(data)
                else:
                    self.down += len(data)
                    client.sendall(data)

    def reset(self):
        self.up = self.down = 0


class HttpClient:
    def __init__(self, counter):
        self.counter = counter
        self.sock = socket.create_connection(("127.0.0.1", counter.port))
        self.buf = b""

    def request(self, method, path, body=None, token=None):
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.counter.target}"]
        lines += [f"{k}: {v}" for k, v in NIO_HEADERS.items()]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        self.counter.reset()
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        head, body_bytes = self._read_response()
        time.sleep(0.05)
        return json.loads(body_bytes), (self.counter.up, self.counter.down)

    def _read_response(self):
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        headers = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")[1:]}
        if b"content-length" in headers:
            return head, self._take(int(headers[b"content-length"]))
        body = b""
        while True:  # chunked
            line = self._line()
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self._line()
                return head, body
            body += self._take(size)
            self._line()

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self.buf += self.sock.recv(65536)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class CoapClient:
    """A token-like CoAP client over a counting socket (UDP payload bytes both ways)."""

    def __init__(self, gateway):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(10)
        self.gateway = gateway.address
        self.mid = 0x100
        self.up = self.down = 0
        self.early = []

    def reset(self):
        self.up = self.down = 0

    def send(self, data):
        self.up += len(data)
        self.sock.sendto(data, self.gateway)

    def recv(self):
        """The next datagram; a notification that came in during a request is handed out here
        (and counted here, not in the request's bytes)."""
        if self.early:
            size, message = self.early.pop(0)
            self.down += size
            return message
        data, _ = self.sock.recvfrom(65535)
        self.down += len(data)
        return Message.decode(data)

    def _response(self):
        """The response to the request just sent: a notification that overtakes it (the
        observer's next batch can be faster than the send's answer) is kept for recv()."""
        while True:
            data, _ = self.sock.recvfrom(65535)
            message = Message.decode(data)
            if message.mtype == aiocoap.CON and message.opt.observe is not None:
                self.early.append((len(data), message))
                continue
            self.down += len(data)
            return message

    def request(self, code, path, payload=b"", token=None, query=(), observe=None):
        self.mid += 1
        m = Message(code=code, payload=payload)
        # jeton-core's CoAP tokens are 4 random bytes (firmware/core/src/coap/client/mod.rs TOKEN_LEN).
        m.mtype, m.mid, m.token = aiocoap.CON, self.mid, b"\x4a\x01\x02\x03"
        m.opt.uri_path = tuple(s for s in path.split("/") if s)
        m.opt.uri_query = tuple(query)
        if payload:
            # As jeton-core: under v2 a body without Content-Format is CBOR (PROFILE.md section 1).
            if VERSION == 1:
                m.opt.content_format = 60
        else:
            # As jeton-core: a CBOR body already gets a CBOR response (PROFILE.md section 1).
            m.opt.accept = 60
        if observe is not None:
            m.opt.observe = observe
        m.opt.add_option(UintOption(257, VERSION))
        if token:
            m.opt.add_option(OpaqueOption(256, token.encode()))
        self.reset()
        self.send(m.encode())
        response = self._response()
        if response.code == Code.EMPTY:
            # The homeserver was slow (login hashes the password): an empty ACK, then the
            # response as a CON of its own, which the client acknowledges. All of it counts.
            response = self._response()
            if response.mtype == aiocoap.CON:
                self.ack(response)
        complete = response.opt.block2 is None or not response.opt.block2.more
        body = decode_cbor(response.payload, VERSION) if response.payload and complete else None
        return response, body, (self.up, self.down)

    def ack(self, notification):
        self.send(bytes([0x60, 0x00]) + notification.mid.to_bytes(2, "big"))


def megolm_ciphertext(room_id):
    plaintext = json.dumps({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "hello world"},
                            "room_id": room_id}, separators=(",", ":")).encode()
    aes = (len(plaintext) // 16 + 1) * 16
    varint = lambda n: 1 if n < 128 else 2  # noqa: E731
    length = 1 + (1 + 1) + (1 + varint(aes) + aes) + 8 + 64
    return base64.b64encode(os.urandom(length)).decode().rstrip("="), length


def main():
    with synapse_server() as synapse:
        gw = start_gateway(synapse.base, "--observe-keepalive-secs", "3", "--observe-poll-timeout-ms", "1000")
        try:
            rows = run(synapse, gw)
        finally:
            stop(gw.proc)
    print()
    print(f"wire bytes per exchange (request + response)     HTTP/1.1+JSON      CoAP+CBOR (table v{VERSION})")
    for name, http, coap in rows:
        if coap is None:
            print(name)
            continue
        h = f"{sum(http):>6,} ({http[0]:,} + {http[1]:,})" if http else "     -"
        print(f"{name:<48} {h:<18} {sum(coap):>6,} ({coap[0]:,} + {coap[1]:,})")


def run(synapse, gw):
    rows = []
    alice = make_user(synapse, "alice")
    name, password = alice["user_id"][1:].split(":")[0], None
    # make_user's password convention
    password = "pw-" + name
    http = HttpClient(TcpCounter(int(synapse.base.rsplit(":", 1)[1])))
    coap = CoapClient(gw)

    login_body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password}
    http_login, http_bytes = http.request("POST", "/_matrix/client/v3/login", login_body)
    # v1 enum 1 is /_matrix/client/r0/login.
    _, coap_login, coap_bytes = coap.request(Code.POST, "/1", encode_cbor(login_body, VERSION))
    rows.append(("login", http_bytes, coap_bytes))
    token = coap_login["access_token"]
    http_token = http_login["access_token"]

    room = make_room(synapse, alice["access_token"])
    ciphertext, raw_len = megolm_ciphertext(room)
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": ciphertext,
               "session_id": base64.b64encode(os.urandom(32)).decode().rstrip("=")}

    # Observe the room's sync with jeton-core's own filter (firmware/core/src/matrix/login.rs
    # filter_body), so the next event arrives as a notification shaped as the token gets it.
    room_types = ["m.room.encrypted", "m.room.encryption", "m.room.member", "m.room.message"]
    call_types = ["m.call.invite", "m.call.hangup", "m.call.answer", "m.call.select_answer", "m.call.reject",
                  "m.call.notify", "org.matrix.msc4075.rtc.notification", "m.rtc.notification"]
    lean_filter = {"event_fields": ["type", "sender", "state_key", "event_id", "room_id", "content.membership",
                                    "content.algorithm", "content.rotation_period_ms", "content.rotation_period_msgs",
                                    "content.ciphertext", "content.session_id", "content.msgtype", "content.body",
                                    "content.call_id", "content.version", "content.lifetime", "content.invitee",
                                    "content.notify_type", "content.notification_type", "unsigned.age"],
                   "presence": {"types": []}, "account_data": {"types": []},
                   "room": {"ephemeral": {"types": []}, "account_data": {"types": []},
                            "state": {"types": room_types},
                            "timeline": {"limit": 10, "types": room_types + call_types}}}
    _, f = synapse.request("POST", f"/_matrix/client/v3/user/{alice['user_id']}/filter", lean_filter, token=token)
    _, first = synapse.request("GET", f"/_matrix/client/v3/sync?timeout=0&filter={f['filter_id']}", token=token)
    # The access token travels once (it is sticky); the rows below do not carry it.
    coap.request(Code.GET, "/_matrix/client/v3/account/whoami", token=token)
    registration, _, _ = coap.request(Code.GET, SYNC, query=(f"since={first['next_batch']}", f"filter={f['filter_id']}"), observe=0)
    assert registration.opt.observe is not None

    # The send as jeton-core makes it (see the docstring): the first one to the room names the
    # room and the sender fields in full.
    token_content = dict(content, sender_key=base64.b64encode(os.urandom(32)).decode().rstrip("="),
                         device_id="JETONDEV01")
    txn_prefix = base64.urlsafe_b64encode(os.urandom(6)).decode()[:6]
    _, first_sent, first_bytes = coap.request(Code.PUT, SEND_ENCRYPTED.format(room=room, txn=txn_prefix + "10"),
                                              encode_cbor(token_content, VERSION))
    # Drain the notification this first event caused before measuring the next send.
    n = coap.recv()
    while first_sent["event_id"] not in json.dumps(decode_cbor(n.payload, VERSION)):
        coap.ack(n)
        n = coap.recv()
    coap.ack(n)
    # The sync position after the first event: the one-event syncs below start here.
    since = decode_cbor(n.payload, VERSION)["next_batch"]
    # Every later send in the same Megolm session: by handle, without the sender fields and the
    # session id the gateway holds (v2 only).
    lean_content = {"algorithm": content["algorithm"], "ciphertext": content["ciphertext"]}
    steady_room, steady_content = (f"~{room[1:12]}", lean_content) if VERSION == 2 else (room, token_content)
    _, sent, coap_bytes = coap.request(Code.PUT, SEND_ENCRYPTED.format(room=steady_room, txn=txn_prefix + "11"),
                                       encode_cbor(steady_content, VERSION))
    assert "event_id" in sent, sent

    # The notification for the CoAP-sent event: what a one-event incremental sync costs the token.
    coap.reset()
    notification = coap.recv()
    while sent["event_id"] not in json.dumps(decode_cbor(notification.payload, VERSION)):
        coap.ack(notification)
        coap.reset()
        notification = coap.recv()
    coap.ack(notification)
    observe_bytes = (coap.up, coap.down)
    if os.environ.get("SHOW_SYNC"):
        print(json.dumps(decode_cbor(notification.payload, VERSION), indent=1))

    # The same incremental sync over HTTP (straight, with the same filter).
    _, http_sync_bytes = http.request("GET", f"/_matrix/client/v3/sync?since={since}&timeout=0&filter={f['filter_id']}", token=http_token)
    # From a second client: a GET without Observe from the observer's own address would end
    # its observation (RFC 7641).
    other = CoapClient(gw)
    other.request(Code.GET, "/_matrix/client/v3/account/whoami", token=token)
    _, _, poll_bytes = other.request(Code.GET, SYNC, query=(f"since={since}", "timeout=0", f"filter={f['filter_id']}"))
    rows.append(("incremental sync, one event (HTTP vs CoAP GET)", http_sync_bytes, poll_bytes))
    rows.append(("incremental sync, one event (Observe push + ACK)", None, observe_bytes))

    # Idle: keepalive notifications only (every 3 s here, every 1200 s by default).
    coap.reset()
    start = time.monotonic()
    count = 0
    while count < 3:
        n = coap.recv()
        coap.ack(n)
        count += 1
    per_keepalive = (coap.up / count, coap.down / count)
    per_hour = (round(per_keepalive[0] * 3), round(per_keepalive[1] * 3))
    rows.append(("idle per hour with Observe (3 keepalives)", None, per_hour))

    # The first send of a new Megolm session to a room the gateway knows: its session id in full.
    new_session = dict(lean_content, session_id=base64.b64encode(os.urandom(32)).decode().rstrip("="))
    new_session_room, new_session_content = (steady_room, new_session) if VERSION == 2 else (room, token_content)
    _, _, rotated_bytes = coap.request(Code.PUT, SEND_ENCRYPTED.format(room=new_session_room, txn=txn_prefix + "13"),
                                       encode_cbor(new_session_content, VERSION))

    # The HTTP send of the same event (its own txn id, a token-shaped one), after the idle rows
    # (its notification would count as a keepalive).
    _, http_bytes = http.request("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/{txn_prefix}12",
                                 token_content, token=http_token)
    rows.insert(1, (f"send m.room.encrypted (ciphertext {raw_len} B raw),", None, None))
    rows.insert(2, ("  every later send of a Megolm session", http_bytes, coap_bytes))
    rows.insert(3, ("  the first of a new session (session id)", http_bytes, rotated_bytes))
    rows.insert(4, ("  the first send to a room (all in full)", http_bytes, first_bytes))
    return rows


if __name__ == "__main__":
    main()
