"""Media bytes on the air, side by side: UDP payload for a file uploaded and downloaded over CoAP
through the gateway (PROFILE.md section 7) versus TCP payload (headers included) for the same
file over HTTP/1.1 straight to Synapse; and the throughput of a transfer through the gateway on
loopback. Starts its own Synapse and gateway on loopback and stops them.

Run: tests/.venv/bin/python tests/gateway/bench_media_bytes.py   (SIZES=16,256 in KiB by default)

What is sent:
- HTTP: what an aiohttp-based client such as matrix-nio sends (Host, Accept, Accept-Encoding,
  User-Agent, Authorization, Content-Type, Content-Length) on a kept-alive connection:
  `POST /_matrix/media/v3/upload` with the file as the body, and the authenticated
  `GET /_matrix/client/v1/media/download/{server}/{id}`.
- CoAP: what jeton-core sends: confirmable requests, a 4-byte CoAP token, option 257 = 2, the
  access token once (option 256 is sticky per peer), `POST /Mu` with Content-Format 42 and Block1
  of 1024 bytes, then `GET /Md/{server}/{id}` block by block with Block2 of 1024 bytes; every
  response piggybacked. The file is random bytes, as an encrypted attachment's ciphertext is.
- Throughput: one transfer at a time, stop-and-wait (NSTART 1, as the token does), on loopback.
  It measures the gateway's per-block cost, not a radio link.
"""

import os
import pathlib
import socket
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import aiocoap  # noqa: E402
from aiocoap import Code, Message  # noqa: E402
from aiocoap.optiontypes import BlockOption, OpaqueOption, UintOption  # noqa: E402

from bench_wire_bytes import NIO_HEADERS, HttpClient, TcpCounter  # noqa: E402
from coap_client import decode_cbor  # noqa: E402
from conftest import start_gateway, stop, synapse_server  # noqa: E402
from matrix_users import make_user  # noqa: E402

SIZES_KIB = [int(s) for s in os.environ.get("SIZES", "16,256").split(",")]
BLOCK = 1024


class RawHttp(HttpClient):
    """HTTP/1.1 with a raw body, counting TCP payload both ways."""

    def raw(self, method, path, data=b"", token=None, content_type=None):
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.counter.target}"]
        lines += [f"{k}: {v}" for k, v in NIO_HEADERS.items()]
        lines.append(f"Authorization: Bearer {token}")
        if content_type:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
        self.counter.reset()
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        _, body = self._read_response()
        time.sleep(0.05)  # the counter's relay thread catches up
        return body, (self.counter.up, self.counter.down)


class CoapMedia:
    """A token-like CoAP client on a counting UDP socket."""

    def __init__(self, gateway, access_token):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(10)
        self.gateway = gateway.address
        self.access_token = access_token
        self.token_sent = False
        self.mid = 0x200
        self.up = self.down = 0

    def exchange(self, code, path, payload=b"", content_format=None, block1=None, block2=None):
        self.mid += 1
        m = Message(code=code, payload=payload)
        m.mtype, m.mid, m.token = aiocoap.CON, self.mid, b"\x4a\x01\x02\x03"
        m.opt.uri_path = tuple(s for s in path.split("/") if s)
        if content_format is not None:
            m.opt.content_format = content_format
        m.opt.accept = 60
        if block1:
            m.opt.block1 = BlockOption.BlockwiseTuple(*block1, 6)
        if block2:
            m.opt.block2 = BlockOption.BlockwiseTuple(block2, False, 6)
        m.opt.add_option(UintOption(257, 2))
        if not self.token_sent:
            m.opt.add_option(OpaqueOption(256, self.access_token.encode()))
            self.token_sent = True
        data = m.encode()
        self.up += len(data)
        self.sock.sendto(data, self.gateway)
        reply, _ = self.sock.recvfrom(65535)
        self.down += len(reply)
        return Message.decode(reply)

    def upload(self, data):
        blocks = [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]
        for num, block in enumerate(blocks):
            more = num + 1 < len(blocks)
            reply = self.exchange(Code.POST, "/Mu", block, content_format=42, block1=(num, more))
            assert reply.code.dotted == ("2.31" if more else "2.04"), (num, reply.code, reply.payload)
        return decode_cbor(reply.payload, 2)["content_uri"]

    def download(self, mxc):
        server, media_id = mxc.removeprefix("mxc://").split("/")
        body, num = b"", 0
        while True:
            reply = self.exchange(Code.GET, f"/Md/{server}/{media_id}", block2=num)
            assert reply.code.dotted == "2.05", reply
            body += reply.payload
            if not (reply.opt.block2 and reply.opt.block2.more):
                return body
            num += 1


def main():
    with synapse_server() as synapse:
        gw = start_gateway(synapse.base)
        try:
            rows = run(synapse, gw)
        finally:
            stop(gw.proc)
    print()
    print("bytes on the air per KiB of file        HTTP/1.1 straight to Synapse     CoAP through the gateway")
    for size, (http_up, http_down), (coap_up, coap_down), _ in rows:
        print(f"{size:>4} KiB upload    (up + down per KiB) {http_up[0] / size:>8.1f} + {http_up[1] / size:>6.1f}"
              f"           {coap_up[0] / size:>8.1f} + {coap_up[1] / size:>6.1f}")
        print(f"{size:>4} KiB download  (up + down per KiB) {http_down[0] / size:>8.1f} + {http_down[1] / size:>6.1f}"
              f"           {coap_down[0] / size:>8.1f} + {coap_down[1] / size:>6.1f}")
    print()
    print("throughput through the gateway on loopback (stop-and-wait, 1 KiB blocks)")
    for size, _, _, (up_s, down_s) in rows:
        print(f"{size:>4} KiB: upload {size / up_s:,.0f} KiB/s ({up_s * 1000:.0f} ms), "
              f"download {size / down_s:,.0f} KiB/s ({down_s * 1000:.0f} ms)")


def run(synapse, gw):
    user = make_user(synapse, "media")
    token = user["access_token"]
    counter = TcpCounter(int(synapse.base.rsplit(":", 1)[1]))
    http = RawHttp(counter)
    rows = []
    for size in SIZES_KIB:
        data = os.urandom(size * 1024)
        body, http_up = http.raw("POST", "/_matrix/media/v3/upload", data, token, "application/octet-stream")
        mxc = __import__("json").loads(body)["content_uri"]
        server, media_id = mxc.removeprefix("mxc://").split("/")
        fetched, http_down = http.raw("GET", f"/_matrix/client/v1/media/download/{server}/{media_id}", token=token)
        assert fetched == data

        coap = CoapMedia(gw, token)
        started = time.perf_counter()
        mxc = coap.upload(data)
        up_s = time.perf_counter() - started
        coap_up = (coap.up, coap.down)
        coap.up = coap.down = 0
        started = time.perf_counter()
        assert coap.download(mxc) == data, "the download is byte-identical"
        down_s = time.perf_counter() - started
        coap_down = (coap.up, coap.down)
        rows.append((size, (http_up, http_down), (coap_up, coap_down), (up_s, down_s)))
    return rows


if __name__ == "__main__":
    main()
