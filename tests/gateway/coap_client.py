"""Helpers for talking to the gateway: aiocoap (a CoAP stack nobody here wrote) for requests,
raw UDP with aiocoap's encoder for the byte-exact cases, and CBOR decoding with the profile's
integer keys expanded."""

import asyncio
import json
import pathlib
import socket
import subprocess

import aiocoap
import cbor2
from aiocoap import Code, Message
from aiocoap.numbers.constants import TransportTuning
from aiocoap.optiontypes import OpaqueOption, UintOption

REPO = pathlib.Path(__file__).resolve().parents[2]
OPTION_ACCESS_TOKEN = 256
OPTION_TABLE_VERSION = 257
CBOR = 60
JSON = 50


class FastTuning(TransportTuning):
    """Shorter timers than RFC 7252's defaults so lossy tests finish in seconds."""

    ACK_TIMEOUT = 0.5
    NSTART = 32


def segments(path):
    return tuple(s for s in path.split("/") if s)


def cli(*args, data):
    """The project's `jeton` CLI (built by the gateway fixture), which shares the profile's
    tables with the gateway."""
    out = subprocess.run([str(REPO / "target" / "debug" / "jeton"), *args], input=data,
                         check=True, capture_output=True)
    return out.stdout


def encode_cbor(value, version):
    """JSON -> profile CBOR with integer keys (and v2 byte strings), as a token would send it."""
    return cli("cbor", "encode", "--profile", f"v{version}", data=json.dumps(value).encode())


def decode_cbor(payload, version=1):
    """Profile CBOR -> JSON-shaped Python, integer keys expanded (v2: byte strings back to base64,
    well-known values back to their text)."""
    value = cbor2.loads(payload)
    if not _needs_profile(value):
        return value
    return json.loads(cli("cbor", "decode", "--profile", f"v{version}", data=payload))


def _needs_profile(value):
    # Byte strings (v2 binary fields) and simple values (v2 well-known values) need the tables.
    if isinstance(value, (bytes, cbor2.CBORSimpleValue)):
        return True
    if isinstance(value, dict):
        return any(isinstance(k, int) or _needs_profile(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_needs_profile(v) for v in value)
    return False


def decode(response, version=1):
    """(code as "c.dd", body) of an aiocoap response."""
    code = response.code.dotted
    if not response.payload:
        return code, None
    if response.opt.content_format == CBOR:
        return code, decode_cbor(response.payload, version)
    return code, json.loads(response.payload)


def message(method, path, body=None, token=None, version=None, cbor=True, query=(), mtype=None, **kw):
    msg = Message(code=method, **kw)
    if mtype is not None:
        msg.mtype = mtype
    msg.opt.uri_path = segments(path)
    if query:
        msg.opt.uri_query = tuple(query)
    if body is not None:
        if isinstance(body, bytes):
            msg.payload = body
            msg.opt.content_format = CBOR
        elif cbor:
            msg.payload = cbor2.dumps(body)
            msg.opt.content_format = CBOR
        else:
            msg.payload = json.dumps(body).encode()
            msg.opt.content_format = JSON
    if cbor:
        msg.opt.accept = CBOR
    if token is not None:
        msg.opt.add_option(OpaqueOption(OPTION_ACCESS_TOKEN, token.encode()))
    if version is not None:
        msg.opt.add_option(UintOption(OPTION_TABLE_VERSION, version))
    return msg


class Client:
    """An aiocoap client context bound to one gateway."""

    def __init__(self, gateway, tuning=None):
        self.gateway = gateway
        self.tuning = tuning

    async def __aenter__(self):
        self.ctx = await aiocoap.Context.create_client_context()
        return self

    async def __aexit__(self, *exc):
        await self.ctx.shutdown()

    def prepare(self, msg, remote=None):
        host, port = remote or self.gateway.address
        msg.remote = aiocoap.message.UndecidedRemote("coap", f"{host}:{port}")
        if self.tuning is not None:
            msg.transport_tuning = self.tuning
        return msg

    async def request(self, method, path, body=None, remote=None, **kw):
        msg = self.prepare(message(method, path, body, **kw), remote)
        response = await self.ctx.request(msg).response
        return decode(response, kw.get("version") or 1)


def run(coro):
    return asyncio.run(coro)


class RawSocket:
    """A plain UDP socket for byte-exact exchanges."""

    def __init__(self, gateway, timeout=3.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.address = gateway.address

    def send(self, data):
        self.sock.sendto(data, self.address)

    def recv(self):
        data, _ = self.sock.recvfrom(65535)
        return data

    def recv_or_none(self, timeout=0.7):
        self.sock.settimeout(timeout)
        try:
            return self.recv()
        except socket.timeout:
            return None

    def exchange(self, data):
        self.send(data)
        return Message.decode(self.recv())

    def close(self):
        self.sock.close()


def encode(msg, mid, token=b"\x01"):
    msg.mid = mid
    msg.token = token
    return msg.encode()


def code_of(msg):
    return msg.code.dotted


GET, POST, PUT, DELETE = Code.GET, Code.POST, Code.PUT, Code.DELETE
