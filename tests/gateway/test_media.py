"""Media over CoAP (PROFILE.md section 7) with aiocoap against the real Synapse: Block1 uploads of
raw bytes, Block2 downloads fetched once, the media config, expiry of abandoned transfers, and a
256 KiB file both ways through the seeded lossy relay of test_loss.py."""

import asyncio
import os
import random
import time
import urllib.request

import aiocoap
from aiocoap import Message
from aiocoap.numbers.constants import TransportTuning
from aiocoap.optiontypes import BlockOption, OpaqueOption, UintOption

from coap_client import (CBOR, GET, OPTION_ACCESS_TOKEN, OPTION_TABLE_VERSION, POST, Client,
                         RawSocket, decode, encode)
from conftest import start_gateway, stop
from matrix_users import make_user
from test_loss import LossyRelay

OCTET_STREAM = 42


class LossTuning(TransportTuning):
    """Loopback timers: short, and few retransmissions, because a block whose every transmission
    is lost is sent again by the test's own loop (as a token does), which is faster at 30% loss
    each way than aiocoap's exponential backoff."""

    ACK_TIMEOUT = 0.03
    MAX_RETRANSMIT = 3


def media_message(method, path, token, payload=b"", content_format=None, query=()):
    """A confirmable v2 request for a media path, with the file as raw bytes (never CBOR) and
    Accept CBOR for the Matrix body of the answer."""
    msg = Message(code=method, payload=payload)
    msg.mtype = aiocoap.CON
    msg.opt.uri_path = tuple(s for s in path.split("/") if s)
    if query:
        msg.opt.uri_query = tuple(query)
    if content_format is not None:
        msg.opt.content_format = content_format
    msg.opt.accept = CBOR
    msg.opt.add_option(OpaqueOption(OPTION_ACCESS_TOKEN, token.encode()))
    msg.opt.add_option(UintOption(OPTION_TABLE_VERSION, 2))
    return msg


async def upload(c, token, data, content_format=OCTET_STREAM, query=(), remote=None):
    msg = c.prepare(media_message(POST, "/Mu", token, data, content_format, query), remote)
    return decode(await c.ctx.request(msg).response, 2)


async def download(c, token, mxc, remote=None):
    server, media_id = mxc.removeprefix("mxc://").split("/")
    msg = c.prepare(media_message(GET, f"/Md/{server}/{media_id}", token), remote)
    response = await c.ctx.request(msg).response
    return response.code.dotted, response.opt.content_format, response.payload


def http_download(synapse, token, mxc):
    """The file as Synapse serves it over plain HTTP: the source of truth."""
    server, media_id = mxc.removeprefix("mxc://").split("/")
    req = urllib.request.Request(f"{synapse.base}/_matrix/client/v1/media/download/{server}/{media_id}")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers.get("Content-Type"), r.read()


def file_bytes(size, seed):
    return random.Random(seed).randbytes(size)


def test_upload_download_and_config_are_byte_identical_with_synapse(gateway, synapse, proxy):
    token = make_user(synapse)["access_token"]
    data = file_bytes(100 * 1024, 8)
    # A file that is valid JSON must not be transcoded on the way.
    json_file = b'{"not": "transcoded", "n": 1.5}'

    async def go():
        async with Client(gateway) as c:
            up = await upload(c, token, data, query=["filename=report 1.bin"])
            up_json = await upload(c, token, json_file, content_format=50)
            up_ogg = await upload(c, token, b"OggS", query=["content_type=audio/ogg"])
            down = await download(c, token, up[1]["content_uri"])
            down_json = await download(c, token, up_json[1]["content_uri"])
            msg = c.prepare(media_message(GET, "/Mc", token))
            config = decode(await c.ctx.request(msg).response, 2)
            missing = await download(c, token, "mxc://localhost/NoSuchMedia")
            return up, up_json, up_ogg, down, down_json, config, missing

    proxy.clear()
    up, up_json, up_ogg, down, down_json, config, missing = asyncio.run(go())
    assert up[0] == "2.04" and up[1]["content_uri"].startswith("mxc://localhost/"), up
    content_type, stored = http_download(synapse, token, up[1]["content_uri"])
    assert stored == data and content_type == "application/octet-stream"
    content_type, stored = http_download(synapse, token, up_json[1]["content_uri"])
    assert stored == json_file and content_type.startswith("application/json")  # Synapse adds a charset
    assert http_download(synapse, token, up_ogg[1]["content_uri"])[0] == "audio/ogg"
    uploads = proxy.seen("POST", "/_matrix/media/v3/upload")
    assert [path for _, path, _ in uploads] == [
        "/_matrix/media/v3/upload?filename=report%201.bin", "/_matrix/media/v3/upload",
        "/_matrix/media/v3/upload"], "the content_type query is the gateway's, filename passes"
    assert uploads[0][2] == data, "one upload of the whole file"
    assert down == ("2.05", OCTET_STREAM, data)
    assert down_json == ("2.05", 50, json_file)
    downloads = proxy.seen("GET", "/_matrix/client/v1/media/download/")
    assert len(downloads) == 3, "each download fetched once, served in blocks"
    # Synapse allows 50M by default; the gateway's media limit (16 MiB by default) is lower.
    assert config == ("2.05", {"m.upload.size": 16 * 1024 * 1024})
    assert missing[0] == "4.04"


def test_an_upload_beyond_the_media_limit_is_refused_with_size1(synapse):
    token = make_user(synapse)["access_token"]
    gw = start_gateway(synapse.base, "--max-media-body", "4096")
    try:
        async def go():
            async with Client(gw) as c:
                small = await upload(c, token, b"x" * 4096)
                msg = c.prepare(media_message(POST, "/Mu", token, b"x" * 5000, OCTET_STREAM))
                response = await c.ctx.request(msg).response
                return small, response
        small, big = asyncio.run(go())
    finally:
        stop(gw.proc)
    assert small[0] == "2.04"
    assert big.code.dotted == "4.13" and big.opt.size1 == 4096


def test_abandoned_transfers_expire_on_the_gateway(synapse, proxy):
    token = make_user(synapse)["access_token"]
    gw = start_gateway(f"http://127.0.0.1:{proxy.port}", "--blockwise-timeout-secs", "1")
    data = file_bytes(3000, 9)
    sock = RawSocket(gw)
    try:
        async def put():
            async with Client(gw) as c:
                return await upload(c, token, data)
        mxc = asyncio.run(put())[1]["content_uri"]
        server, media_id = mxc.removeprefix("mxc://").split("/")
        proxy.clear()
        # Block 0 of an upload and block 0 of a download, then silence.
        first = media_message(POST, "/Mu", token, data[:1024], OCTET_STREAM)
        first.opt.block1 = BlockOption.BlockwiseTuple(0, True, 6)
        assert sock.exchange(encode(first, 1)).code.dotted == "2.31"
        get = media_message(GET, f"/Md/{server}/{media_id}", token)
        reply = sock.exchange(encode(get, 2, token=b"\x02"))
        assert reply.payload == data[:1024] and reply.opt.block2.more
        # The gateway sweeps every 5 s; the transfers are older than their 1 s timeout by then.
        time.sleep(6.5)
        second = media_message(POST, "/Mu", token, data[1024:2048], OCTET_STREAM)
        second.opt.block1 = BlockOption.BlockwiseTuple(1, True, 6)
        assert sock.exchange(encode(second, 3)).code.dotted == "4.08", "the upload was abandoned"
        later = media_message(GET, f"/Md/{server}/{media_id}", token)
        later.opt.block2 = BlockOption.BlockwiseTuple(1, False, 6)
        reply = sock.exchange(encode(later, 4, token=b"\x03"))
        assert reply.payload == data[1024:2048]
        assert len(proxy.seen("GET", media_id)) == 2, "the expired download was fetched again"
        assert proxy.seen("POST", "/upload") == [], "the abandoned upload never reached Synapse"
    finally:
        sock.close()
        stop(gw.proc)


async def blockwise(c, build, remote, retries):
    """One blockwise transfer driven block by block: `build(num)` makes the request for block
    `num`; a block whose exchange failed, or that was answered 5.03, is sent again (a new message
    id), as a token does. Returns the answers."""
    answers, num = [], 0
    while True:
        msg = c.prepare(build(num), remote)
        try:
            # aiocoap never times out a separate response (a FIXME in its protocol.py).
            response = await asyncio.wait_for(c.ctx.request(msg, handle_blockwise=False).response, 10)
        except (aiocoap.error.Error, asyncio.TimeoutError):
            retries[0] += 1
            continue
        if response.code.dotted == "5.03":
            # Busy for now (the homeserver still has the upload): again after Max-Age.
            retries[0] += 1
            await asyncio.sleep(response.opt.max_age or 1)
            continue
        answers.append(response)
        more = response.opt.block2.more if response.opt.block2 else response.code.dotted == "2.31"
        if not more:
            return answers
        num += 1


def test_256_kib_both_ways_through_a_lossy_link_arrive_intact(gateway, synapse):
    token = make_user(synapse)["access_token"]
    data = file_bytes(256 * 1024, 3079)
    relay = LossyRelay(gateway.address)
    retries = [0]

    def upload_block(num):
        msg = media_message(POST, "/Mu", token, data[num * 1024:(num + 1) * 1024], OCTET_STREAM)
        msg.opt.block1 = BlockOption.BlockwiseTuple(num, (num + 1) * 1024 < len(data), 6)
        return msg

    async def go():
        async with Client(gateway, tuning=LossTuning()) as c:
            up = await blockwise(c, upload_block, relay.address, retries)
            code, body = decode(up[-1], 2)
            assert code == "2.04", body
            server, media_id = body["content_uri"].removeprefix("mxc://").split("/")

            def download_block(num):
                msg = media_message(GET, f"/Md/{server}/{media_id}", token)
                msg.opt.block2 = BlockOption.BlockwiseTuple(num, False, 6)
                return msg
            down = await blockwise(c, download_block, relay.address, retries)
            return body["content_uri"], up, down

    started = time.monotonic()
    try:
        mxc, up, down = asyncio.run(asyncio.wait_for(go(), timeout=300))
    finally:
        relay.close()
    elapsed = time.monotonic() - started
    assert relay.stats["dropped"] > 0 and relay.stats["duplicated"] > 0
    assert [r.code.dotted for r in up] == ["2.31"] * 255 + ["2.04"]
    assert http_download(synapse, token, mxc)[1] == data, "the upload arrived intact"
    assert all(r.code.dotted == "2.05" for r in down)
    assert b"".join(r.payload for r in down) == data, "the download arrived intact"
    print(f"relay {relay.stats}, {retries[0]} blocks sent again, {elapsed:.1f} s for 256 KiB up and down")
