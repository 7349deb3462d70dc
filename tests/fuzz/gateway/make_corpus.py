"""Writes the seed corpus of the request_path fuzz target (corpus/request_path/*): CoAP
datagrams encoded by aiocoap (a CoAP stack nobody here wrote) covering the gateway's request
path: plain requests, short paths, CBOR bodies, Block1/Block2, Observe, options 256/257, ACK and
RST, and malformed bytes. Several datagrams in one input are separated by 0xfe 0xfe.

Run: tests/.venv/bin/python tests/fuzz/gateway/make_corpus.py
"""

import pathlib

import aiocoap
import cbor2
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption, OpaqueOption, UintOption

OUT = pathlib.Path(__file__).parent / "corpus" / "request_path"
SEP = b"\xfe\xfe"


def msg(code, path, mid, token=b"\x01", payload=b"", **opts):
    m = Message(code=code, payload=payload)
    m.mtype = opts.pop("mtype", aiocoap.CON)
    m.mid, m.token = mid, token
    m.opt.uri_path = tuple(s for s in path.split("/") if s)
    for name, value in opts.items():
        setattr(m.opt, name, value)
    return m


def enc(m, *extra):
    for o in extra:
        m.opt.add_option(o)
    return m.encode()


seeds = {
    "get_versions": enc(msg(Code.GET, "/_matrix/client/versions", 1)),
    "short_path_versions": enc(msg(Code.GET, "/0", 2, accept=60)),
    "login_cbor": enc(msg(Code.POST, "/1", 3, payload=cbor2.dumps({"type": "m.login.password", "user": "a", "password": "b"}),
                          content_format=60), UintOption(257, 1)),
    "send_v2_token": enc(msg(Code.PUT, "/9/!r:s/m.room.encrypted/t1", 4, payload=cbor2.dumps({1: b"\x00" * 40}),
                             content_format=60), OpaqueOption(256, b"Bearer syt_x"), UintOption(257, 2)),
    "observe_sync": enc(msg(Code.GET, "/_matrix/client/v3/sync", 5, token=b"ob", observe=0, uri_query=("since=s1",))),
    "block1_two": enc(msg(Code.POST, "/_matrix/client/v3/keys/upload", 6, payload=b"{" * 64,
                          block1=BlockOption.BlockwiseTuple(0, True, 2))) + SEP
                  + enc(msg(Code.POST, "/_matrix/client/v3/keys/upload", 7, payload=b"}",
                            block1=BlockOption.BlockwiseTuple(1, False, 2))),
    "block2_fetch": enc(msg(Code.GET, "/_matrix/client/v3/sync", 8)) + SEP
                    + enc(msg(Code.GET, "/_matrix/client/v3/sync", 9, block2=BlockOption.BlockwiseTuple(1, False, 2))),
    "bad_cbor": enc(msg(Code.POST, "/1", 10, payload=b"\xbf\x61", content_format=60)),
    "critical_unknown": enc(msg(Code.GET, "/0", 11), OpaqueOption(2049, b"x")),
    "non_request": enc(msg(Code.GET, "/0", 12, mtype=aiocoap.NON)),
    "ping_ack_rst": bytes([0x40, 0, 0, 13]) + SEP + bytes([0x60, 0, 0, 14]) + SEP + bytes([0x70, 0, 0, 15]),
    "malformed": bytes([0x40, 0x01, 0x12, 0x34, 0xF1]) + SEP + bytes([0x40, 0x01, 0, 1, 0xFF]) + SEP + b"\x01",
    "size1_too_large": enc(msg(Code.POST, "/_matrix/client/v3/keys/upload", 16, payload=b"{" * 64, size1=1 << 20,
                               block1=BlockOption.BlockwiseTuple(0, True, 2))),
}

OUT.mkdir(parents=True, exist_ok=True)
for name, data in seeds.items():
    (OUT / name).write_bytes(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
