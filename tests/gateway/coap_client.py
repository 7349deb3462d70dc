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


def expand_keys(value):
    """CBOR from the gateway -> JSON-shaped Python. Integer keys (MSC3079 tables) are expanded by
    the project's own CLI, which shares the tables with the gateway."""
    if not _has_int_keys(value):
        return value
    cli = REPO / "target" / "debug" / "jeton"
    if not cli.exists():
        subprocess.run(["cargo", "build", "-p", "jeton-cli"], cwd=REPO, check=True, capture_output=True)
    out = subprocess.run([str(cli), "cbor", "decode", "--hex"], input=cbor2.dumps(value).hex().encode(),
                         check=True, capture_output=True)
    return json.loads(out.stdout)


def _has_int_keys(value):
    if isinstance(value, dict):
        return any(isinstance(k, int) or _has_int_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_int_keys(v) for v in value)
    return False


def decode(response):
    """(code as "c.dd", body) of an aiocoap response."""
    code = response.code.dotted
    if not response.payload:
        return code, None
    if response.opt.content_format == CBOR:
        return code, expand_keys(cbor2.loads(response.payload))
    return code, json.loads(response.payload)


def message(method, path, body=None, token=None, version=None, cbor=True, query=(), mtype=None, **kw):
    msg = Message(code=method, **kw)
    if mtype is not None:
        msg.mtype = mtype
    msg.opt.uri_path = segments(path)
    if query:
        msg.opt.uri_query = tuple(query)
    if body is not None:
        if cbor:
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
        return decode(response)


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
