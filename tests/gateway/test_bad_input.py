"""Bad input and upstream failures: each case asserts the CoAP answer and that nothing (or
nothing more) reached the homeserver."""

import socket
import threading

import aiocoap
import pytest
from aiocoap import Message

from coap_client import GET, POST, RawSocket, code_of, decode, encode, message
from conftest import start_gateway, stop
from fake_homeserver import FakeHomeserver


@pytest.fixture
def quiet(proxy):
    """Asserts that the test sent nothing to the homeserver."""
    before = len(proxy.requests)
    yield
    assert len(proxy.requests) == before, proxy.requests[before:]


def exchange(gateway, datagram):
    raw = RawSocket(gateway)
    try:
        return raw.exchange(datagram)
    finally:
        raw.close()


def test_malformed_con_gets_reset_and_malformed_non_is_dropped(gateway, quiet):
    before = gateway.metric("jeton_gateway_malformed_datagrams_total")
    raw = RawSocket(gateway)
    try:
        # Option delta 15 without a payload marker: a message format error.
        raw.send(bytes([0x40, 0x01, 0x12, 0x34, 0xF1, 0x00]))
        reset = Message.decode(raw.recv())
        assert reset.mtype == aiocoap.RST and reset.mid == 0x1234
        raw.send(bytes([0x50, 0x01, 0x12, 0x35, 0xF1, 0x00]))
        assert raw.recv_or_none() is None
        # Payload marker with no payload.
        raw.send(bytes([0x40, 0x02, 0x12, 0x36, 0xFF]))
        assert Message.decode(raw.recv()).mtype == aiocoap.RST
    finally:
        raw.close()
    assert gateway.metric("jeton_gateway_malformed_datagrams_total") == before + 3


def test_undecodable_cbor_is_4_00_with_a_matrix_error(gateway, quiet):
    msg = message(POST, "/_matrix/client/v3/login", mtype=aiocoap.CON)
    msg.payload = bytes([0xBF, 0x61, 0x61])  # indefinite map, truncated
    msg.opt.content_format = 60
    response = exchange(gateway, encode(msg, mid=0x0101))
    assert code_of(response) == "4.00"
    body = decode(response)[1]
    assert body["errcode"] == "M_BAD_JSON"
    assert "CBOR" in body["error"]


def test_unknown_critical_option_is_4_02(gateway, quiet):
    msg = message(GET, "/_matrix/client/versions", mtype=aiocoap.CON)
    msg.opt.add_option(aiocoap.optiontypes.OpaqueOption(2049, b"\x01"))
    assert code_of(exchange(gateway, encode(msg, mid=0x0202))) == "4.02"


def test_unknown_table_version_is_4_00(gateway, quiet):
    msg = message(GET, "/_matrix/client/versions", version=9, mtype=aiocoap.CON)
    response = exchange(gateway, encode(msg, mid=0x0203))
    assert code_of(response) == "4.00"
    assert "version" in decode(response)[1]["error"]


def test_announced_oversized_upload_is_4_13_with_size1(gateway, quiet):
    msg = message(POST, "/_matrix/client/v3/keys/upload", mtype=aiocoap.CON)
    msg.opt.block1 = aiocoap.optiontypes.BlockOption.BlockwiseTuple(0, True, 6)
    msg.opt.size1 = 10 * 1024 * 1024
    msg.opt.content_format = 60
    msg.payload = b"\xa0" * 1024
    response = exchange(gateway, encode(msg, mid=0x0303))
    assert code_of(response) == "4.13"
    assert response.opt.size1 == 256 * 1024


def test_oversized_single_datagram_is_4_13(proxy):
    gw = start_gateway(f"http://127.0.0.1:{proxy.port}", "--max-body", "2000")
    try:
        before = len(proxy.requests)
        msg = message(POST, "/_matrix/client/v3/login", {"pad": "z" * 3000}, mtype=aiocoap.CON)
        response = exchange(gw, encode(msg, mid=0x0404))
        assert code_of(response) == "4.13"
        assert response.opt.size1 == 2000
        assert len(proxy.requests) == before
    finally:
        stop(gw.proc)


def test_matrix_errors_are_translated(gateway, synapse):
    # No token at all: Synapse's 401 M_MISSING_TOKEN comes back as 4.01 with its body.
    raw = RawSocket(gateway)
    try:
        response = raw.exchange(encode(message(GET, "/_matrix/client/v3/account/whoami", mtype=aiocoap.CON), mid=0x0505))
    finally:
        raw.close()
    assert code_of(response) == "4.01"
    assert decode(response)[1]["errcode"] == "M_MISSING_TOKEN"


def test_unreachable_homeserver_is_5_02():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    gw = start_gateway(f"http://127.0.0.1:{port}")
    try:
        response = exchange(gw, encode(message(GET, "/_matrix/client/versions", mtype=aiocoap.CON), mid=0x0606))
        assert code_of(response) == "5.02"
    finally:
        stop(gw.proc)


def test_silent_homeserver_is_5_04():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop_accepting = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop_accepting.is_set():
            try:
                accepted.append(listener.accept()[0])  # never answers
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    gw = start_gateway(f"http://127.0.0.1:{listener.getsockname()[1]}", "--upstream-timeout-ms", "500",
                       "--piggyback-wait-ms", "2000")
    try:
        response = exchange(gw, encode(message(GET, "/_matrix/client/versions", mtype=aiocoap.CON), mid=0x0707))
        assert code_of(response) == "5.04"
    finally:
        stop(gw.proc)
        stop_accepting.set()
        t.join()
        for s in accepted:
            s.close()
        listener.close()


@pytest.mark.parametrize("status,headers,errcode,code,max_age", [
    (429, {"Retry-After": "7"}, "M_LIMIT_EXCEEDED", "4.29", 7),
    (503, {}, "M_UNKNOWN", "5.03", None),
    (405, {}, "M_UNRECOGNIZED", "4.05", None),
])
def test_homeserver_errors_map_to_coap_codes(status, headers, errcode, code, max_age):
    upstream = FakeHomeserver(status, {"errcode": errcode, "error": "canned"}, headers)
    gw = start_gateway(upstream.url)
    try:
        response = exchange(gw, encode(message(GET, "/_matrix/client/v3/sync", mtype=aiocoap.CON), mid=0x0808))
        assert code_of(response) == code
        assert response.opt.max_age == max_age or (max_age is None and response.opt.max_age in (None, 60))
        assert decode(response)[1] == {"errcode": errcode, "error": "canned"}
    finally:
        stop(gw.proc)
        upstream.close()
