"""The protected token-gateway link (EDHOC + OSCORE, issue 7) against an independent peer:
aiocoap's own EDHOC (lakers-python) and OSCORE implementation plays the token, a real
Synapse behind the recording proxy counts what reaches the homeserver.

Keys and credentials are made here with aiocoap's key helper and cbor2 (not by jeton code),
so the gateway's parsing of CCS credentials is checked against a third party too.
"""

import asyncio
import os
import re
import socket
import stat
import tempfile
import threading

import aiocoap
import cbor2
import pytest
from aiocoap import Code, Message
from aiocoap.edhoc import CoseKeyForEdhoc
from aiocoap.optiontypes import OpaqueOption

from conftest import start_gateway, stop
from coap_client import OPTION_ACCESS_TOKEN, encode, segments
from matrix_users import make_user

OSCORE_OPTION = 9


def ccs_hex(ccs):
    return cbor2.dumps(ccs, canonical=True).hex()


class Party:
    """A P-256 key and its CCS credential, referenced by kid."""

    def __init__(self, kid, subject):
        self.key = CoseKeyForEdhoc.generate()
        self.kid = kid
        self.ccs = self.key.as_ccs(kid, subject)[14]


@pytest.fixture(scope="module")
def parties():
    return {"gateway": Party(b"\x47", "gateway"), "token": Party(b"\x01", "token-1"),
            "stranger": Party(b"\x02", "stranger")}


@pytest.fixture(scope="module")
def link_gateway(proxy, parties):
    """A gateway with the link on (compat mode off) that knows "token" but not "stranger"."""
    workdir = tempfile.mkdtemp(prefix="jeton-link-")
    identity = os.path.join(workdir, "identity.toml")
    with open(identity, "w") as f:
        f.write(f'private_key = "{parties["gateway"].key.d.hex()}"\n'
                f'credential = "{ccs_hex(parties["gateway"].ccs)}"\n')
    os.chmod(identity, stat.S_IRUSR | stat.S_IWUSR)
    tokens = os.path.join(workdir, "tokens.toml")
    with open(tokens, "w") as f:
        f.write(f'[[token]]\nname = "token-1"\ncredential = "{ccs_hex(parties["token"].ccs)}"\n')
    gw = start_gateway(f"http://127.0.0.1:{proxy.port}", "--link-identity", identity, "--link-tokens", tokens,
                       "--compat-plain-msc3079", "false", "--log", "info")
    yield gw
    stop(gw.proc)


def gateway_log(gw):
    gw.proc.log.seek(0)
    text = gw.proc.log.read().decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class Relay:
    """A UDP relay between the client and the gateway that records every datagram, and can
    inject datagrams from its gateway-side socket (the gateway then sees the same peer)."""

    def __init__(self, gateway_address):
        self.gateway = gateway_address
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.client = None
        self.to_gateway, self.to_client = [], []
        self.running = True
        for target in (self._forward_requests, self._forward_responses):
            threading.Thread(target=target, daemon=True).start()

    def _forward_requests(self):
        self.front.settimeout(0.2)
        while self.running:
            try:
                data, self.client = self.front.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            self.to_gateway.append(data)
            self.back.sendto(data, self.gateway)

    def _forward_responses(self):
        self.back.settimeout(0.2)
        while self.running:
            try:
                data, _ = self.back.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            self.to_client.append(data)
            if self.client is not None:
                self.front.sendto(data, self.client)

    def inject(self, data):
        self.back.sendto(data, self.gateway)

    def close(self):
        self.running = False


def client_credentials(relay_port, own, gateway, combined=True):
    return {f"coap://127.0.0.1:{relay_port}/*": {"edhoc-oscore": {
        "suite": 2, "method": 3, "own_cred_style": "by-key-id",
        "own_cred": {14: own.ccs}, "private_key": own.key.secret_to_map(),
        "peer_cred": {14: gateway.ccs}, "use_combined_edhoc": combined}}}


def keep_context(ctx, relay_port, response):
    """aiocoap 0.4.17 runs EDHOC again for every request: transports/oscore.py stores the
    established context on the transport but checks for it on the credentials object. This
    hands the context of `response` to both, so later requests reuse it, as a token does."""
    from aiocoap.transports.oscore import TransportOSCORE

    credentials = ctx.client_credentials[f"coap://127.0.0.1:{relay_port}/*"]
    done = asyncio.get_running_loop().create_future()
    done.set_result(response.remote.security_context)
    credentials._established_context = done
    for interface in ctx.request_interfaces:
        if isinstance(interface, TransportOSCORE):
            interface._established_context = done


async def protected_session(relay, own, gateway, requests, combined=True, keep=True):
    """Runs `requests` (method, path, access token or None) through one aiocoap context and
    (with `keep`) one EDHOC session; returns the responses."""
    ctx = await aiocoap.Context.create_client_context()
    try:
        ctx.client_credentials.load_from_dict(client_credentials(relay.port, own, gateway, combined))
        responses = []
        for method, path, token in requests:
            msg = Message(code=method, uri=f"coap://127.0.0.1:{relay.port}")
            msg.opt.uri_path = segments(path)
            if token is not None:
                msg.opt.add_option(OpaqueOption(OPTION_ACCESS_TOKEN, token.encode()))
            responses.append(await asyncio.wait_for(ctx.request(msg).response, 15))
            if keep and len(responses) == 1:
                keep_context(ctx, relay.port, responses[0])
        return responses
    finally:
        await ctx.shutdown()


def decode(datagram):
    return Message.decode(datagram)


def test_edhoc_then_protected_requests_reach_synapse_and_bind_the_access_token(link_gateway, parties, synapse, proxy):
    user = make_user(synapse, "link")
    relay = Relay(link_gateway.address)
    proxy.clear()
    try:
        whoami = "/_matrix/client/v3/account/whoami"
        responses = asyncio.run(protected_session(relay, parties["token"], parties["gateway"], [
            (Code.GET, "/_matrix/client/versions", None),
            (Code.GET, whoami, user["access_token"]),
            (Code.GET, whoami, None),  # the token bound to the context stands in
            (Code.GET, "/_matrix/client/v3/sync", None),  # a large body: Block2 inside OSCORE
        ]))
    finally:
        relay.close()
    codes = [r.code.dotted for r in responses]
    assert codes == ["2.05"] * 4, (codes, [r.payload[:200] for r in responses])
    assert b"versions" in responses[0].payload
    assert user["user_id"].encode() in responses[1].payload
    assert user["user_id"].encode() in responses[2].payload
    assert b"next_batch" in responses[3].payload
    assert len(proxy.seen("GET", "/account/whoami")) == 2

    # On the air: every request after message_1 carries OSCORE, and the access token and
    # paths never appear in clear.
    wire = b"".join(relay.to_gateway + relay.to_client)
    assert user["access_token"].encode() not in wire
    assert b"whoami" not in wire and b"next_batch" not in wire
    requests = [decode(d) for d in relay.to_gateway if decode(d).code.is_request()]
    assert requests[0].opt.uri_path == (".well-known", "edhoc")
    assert all(r.opt.get_option(OSCORE_OPTION) for r in requests[1:])
    edhoc_option = [r for r in requests if r.opt.get_option(21)]
    assert len(edhoc_option) == 1, "one EDHOC: message_3 rides in the first protected request"
    assert len(requests) > 5, "the sync body came in several Block2 requests"
    assert "EDHOC complete" in gateway_log(link_gateway)


def test_stand_alone_message_3_gets_message_4(link_gateway, parties):
    """aiocoap's non-combined flow: message_3 in its own POST, waiting for message_4."""
    relay = Relay(link_gateway.address)
    try:
        (response,) = asyncio.run(protected_session(
            relay, parties["token"], parties["gateway"], [(Code.GET, "/_matrix/client/versions", None)],
            combined=False))
    finally:
        relay.close()
    assert response.code.dotted == "2.05"
    edhoc_posts = [d for d in relay.to_gateway if decode(d).opt.uri_path == (".well-known", "edhoc")]
    assert len(edhoc_posts) == 2


def captured_whoami(link_gateway, parties, synapse):
    """A fresh context (EDHOC rides on the versions request), then one protected whoami;
    returns (relay, the whoami datagram)."""
    user = make_user(synapse, "replay")
    relay = Relay(link_gateway.address)
    asyncio.run(protected_session(relay, parties["token"], parties["gateway"], [
        (Code.GET, "/_matrix/client/versions", None),
        (Code.GET, "/_matrix/client/v3/account/whoami", user["access_token"])]))
    protected = [d for d in relay.to_gateway if decode(d).opt.get_option(OSCORE_OPTION)]
    return relay, protected[-1]


def exchange(sock, address, data, timeout=3.0):
    sock.settimeout(timeout)
    sock.sendto(data, address)
    reply, _ = sock.recvfrom(65535)
    return decode(reply)


def test_a_replayed_request_reaches_the_homeserver_zero_times(link_gateway, parties, synapse, proxy):
    proxy.clear()
    relay, request = captured_whoami(link_gateway, parties, synapse)
    try:
        assert len(proxy.seen("GET", "/account/whoami")) == 1
        # The same bytes from the same address: the link's deduplication answers (or drops).
        before = len(relay.to_client)
        relay.inject(request)
        # The same bytes from another address, and with another message id: replay window.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            refused = exchange(sock, link_gateway.address, request)
            assert refused.code.dotted == "4.01" and refused.payload == b"Replay detected", (refused.code, refused.payload, decode(request).opt)
            moved = bytearray(request)
            moved[2] ^= 0x5A
            refused = exchange(sock, link_gateway.address, bytes(moved))
            assert refused.code.dotted == "4.01"
        asyncio.run(asyncio.sleep(0.5))
        assert len(relay.to_client) - before <= 1
        assert len(proxy.seen("GET", "/account/whoami")) == 1, "a replay reached the homeserver"
    finally:
        relay.close()


def test_every_flipped_bit_of_a_protected_request_is_refused(link_gateway, parties, synapse, proxy):
    relay, request = captured_whoami(link_gateway, parties, synapse)
    relay.close()
    proxy.clear()
    msg = decode(request)
    option = msg.opt.get_option(OSCORE_OPTION)[0].value
    # The OSCORE option value and the ciphertext are where they are in the datagram.
    value_at = request.index(option, 4 + len(msg.token))
    payload_at = len(request) - len(msg.payload)
    bits = [b for b in range(value_at * 8, (value_at + len(option)) * 8)] + \
           [b for b in range(payload_at * 8, len(request) * 8)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n, bit in enumerate(bits):
            bad = bytearray(request)
            bad[bit // 8] ^= 1 << (bit % 8)
            bad[2:4] = (0x4000 + n).to_bytes(2, "big")  # fresh message ids: no deduplication
            reply = exchange(sock, link_gateway.address, bytes(bad))
            assert reply.code.dotted in ("4.00", "4.01"), (bit, reply.code.dotted)
            assert not reply.opt.get_option(OSCORE_OPTION), "an error about a bad request is not protected"
    assert proxy.seen() == [], "a tampered request reached the homeserver"
    assert len(bits) > 100


def test_an_unknown_credential_is_refused_with_a_clear_error(link_gateway, parties):
    relay = Relay(link_gateway.address)
    try:
        with pytest.raises(Exception):
            asyncio.run(protected_session(relay, parties["stranger"], parties["gateway"],
                                          [(Code.GET, "/_matrix/client/versions", None)]))
    finally:
        relay.close()
    replies = [decode(d) for d in relay.to_client]
    refusal = [r for r in replies if r.code.dotted == "4.01"]
    assert refusal, [r.code.dotted for r in replies]
    # An EDHOC error message: ERR_CODE 1, ERR_INFO text.
    err_code, err_info = cbor2.loads(refusal[0].payload[:1]), cbor2.loads(refusal[0].payload[1:])
    assert err_code == 1 and "not authorised" in err_info
    assert "unknown token credential" in gateway_log(link_gateway)
    assert "kid=02" in gateway_log(link_gateway)


def test_an_unprotected_request_with_an_access_token_is_refused_by_default(link_gateway, proxy):
    proxy.clear()
    msg = Message(code=Code.GET)
    msg.mtype = aiocoap.CON
    msg.opt.uri_path = segments("/_matrix/client/v3/account/whoami")
    msg.opt.add_option(OpaqueOption(OPTION_ACCESS_TOKEN, b"syt_anything"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        reply = exchange(sock, link_gateway.address, encode(msg, 0x1234, b"\x05"))
    assert reply.code.dotted == "4.01"
    assert b"OSCORE" in reply.payload
    assert proxy.seen() == []
    # Without an access token a plain request is still served (versions, login discovery).
    msg = Message(code=Code.GET)
    msg.mtype = aiocoap.CON
    msg.opt.uri_path = segments("/_matrix/client/versions")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert exchange(sock, link_gateway.address, encode(msg, 0x1235, b"\x06")).code.dotted == "2.05"


def test_link_figures_are_printed(link_gateway, parties):
    """EDHOC bytes on the air as aiocoap's combined flow sends them, CoAP headers included,
    and the OSCORE overhead of a request. A printout, with the targets of issue 7 as bounds."""
    relay = Relay(link_gateway.address)
    try:
        asyncio.run(protected_session(relay, parties["token"], parties["gateway"], [
            (Code.GET, "/_matrix/client/versions", None), (Code.GET, "/_matrix/client/versions", None)]))
    finally:
        relay.close()
    sent = [decode(d) for d in relay.to_gateway]
    got = [decode(d) for d in relay.to_client]
    assert sent[0].opt.uri_path == (".well-known", "edhoc") and got[0].code.dotted == "2.04"
    m1, m2 = relay.to_gateway[0], relay.to_client[0]
    # message_3 rides in the first protected request (RFC 9668): its share is the EDHOC
    # option (one byte) plus the message_3 byte string at the head of the payload.
    message_3 = cbor2.loads(sent[1].payload)  # the first CBOR item of the payload
    message_3_share = len(cbor2.dumps(message_3)) + 1
    total = len(m1) + len(m2) + message_3_share
    # The second request is plain OSCORE: its size against the same request unprotected.
    plain = Message(code=Code.GET)
    plain.mtype = aiocoap.CON
    plain.opt.uri_path = segments("/_matrix/client/versions")
    overhead = len(relay.to_gateway[2]) - len(encode(plain, sent[2].mid, sent[2].token))
    print(f"\nEDHOC on the air (aiocoap combined flow): request 1 {len(m1)} B, response 2 {len(m2)} B, "
          f"message_3 inside the first OSCORE request {message_3_share} B; total {total} B; "
          f"OSCORE overhead of a request {overhead} B")
    assert total <= 250
    assert overhead <= 16


def test_observe_notifications_come_protected(link_gateway, parties, synapse):
    """Observe on /sync inside OSCORE: each notification (the first reusing the request's
    nonce, the later ones with the gateway's own Partial IV, a large one as Block2) verifies
    in aiocoap and carries the event sent meanwhile."""
    import uuid

    from matrix_users import make_room

    user = make_user(synapse, "observe")
    token = user["access_token"]
    room = make_room(synapse, token)
    _, initial = synapse.request("GET", "/_matrix/client/v3/sync?timeout=0", token=token)
    relay = Relay(link_gateway.address)

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            ctx.client_credentials.load_from_dict(
                client_credentials(relay.port, parties["token"], parties["gateway"]))
            msg = Message(code=Code.GET, uri=f"coap://127.0.0.1:{relay.port}", observe=0)
            msg.opt.uri_path = segments("/_matrix/client/v3/sync")
            msg.opt.uri_query = (f"since={initial['next_batch']}",)
            msg.opt.add_option(OpaqueOption(OPTION_ACCESS_TOKEN, token.encode()))
            request = ctx.request(msg)
            first = await asyncio.wait_for(request.response, 15)
            assert first.code.dotted == "2.05", first.payload
            notifications = request.observation.__aiter__()
            seen = []
            for i, body in enumerate(["small", "large " + "y" * 2500]):
                status, r = synapse.request(
                    "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/link{i}-{uuid.uuid4()}",
                    {"msgtype": "m.text", "body": body}, token=token)
                assert status == 200, r
                while True:
                    notification = await asyncio.wait_for(notifications.__anext__(), 20)
                    if r["event_id"].encode() in notification.payload:
                        seen.append(len(notification.payload))
                        break
            request.observation.cancel()
            return seen
        finally:
            await ctx.shutdown()

    try:
        sizes = asyncio.run(go())
    except BaseException:
        for d in relay.to_client:
            m = decode(d)
            print("<-", m.mtype, m.code, m.mid, m.token.hex(), m.opt, len(m.payload))
        for d in relay.to_gateway:
            m = decode(d)
            print("->", m.mtype, m.code, m.mid, m.token.hex(), m.opt, len(m.payload))
        print(gateway_log(link_gateway)[-3000:])
        raise
    finally:
        relay.close()
    assert len(sizes) == 2 and sizes[1] > 2500, sizes
    protected = [decode(d) for d in relay.to_client if decode(d).opt.get_option(OSCORE_OPTION)]
    assert len(protected) >= 3
    assert b"yyyyyyyy" not in b"".join(relay.to_client), "a notification went out in clear"
