"""Operations: graceful shutdown drains in-flight requests, the metrics endpoint, logs without
secrets, and --help documenting every setting."""

import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import aiocoap
from aiocoap import Message

from coap_client import GET, PUT, RawSocket, code_of, decode, encode, message
from conftest import GATEWAY_BIN, build_gateway, start_gateway, stop
from fake_homeserver import FakeHomeserver
from matrix_users import make_room, make_user


def healthz(gw):
    """The readiness check's status and body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/healthz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones():
    upstream = FakeHomeserver(body={"versions": ["v1.11"]}, delay=1.5)
    gw = start_gateway(upstream.url, "--piggyback-wait-ms", "5000")
    raw = RawSocket(gw, timeout=5)
    try:
        assert healthz(gw) == (200, "ready\n")
        raw.send(encode(message(GET, "/_matrix/client/versions", mtype=aiocoap.CON), mid=0x0A01, token=b"\x0a"))
        time.sleep(0.3)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert healthz(gw) == (503, "draining\n"), "a draining gateway is not ready"
        late = raw.exchange(encode(message(GET, "/_matrix/client/versions", mtype=aiocoap.CON), mid=0x0A02, token=b"\x0b"))
        assert code_of(late) == "5.03", "a request after SIGTERM is refused"
        drained = Message.decode(raw.recv())
        assert drained.mid == 0x0A01 and code_of(drained) == "2.05", "the in-flight request is still answered"
        assert decode(drained)[1]["versions"] == ["v1.11"]
        assert gw.proc.wait(timeout=10) == 0
    finally:
        raw.close()
        stop(gw.proc)
        upstream.close()


def test_metrics_and_logs_without_secrets(proxy, synapse):
    gw = start_gateway(f"http://127.0.0.1:{proxy.port}", "--log", "debug")
    user = make_user(synapse)
    token = user["access_token"]
    room = make_room(synapse, token)
    secret_body = f"secret-{uuid.uuid4()}"
    raw = RawSocket(gw)
    try:
        path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{uuid.uuid4()}"
        request = encode(message(PUT, path, {"msgtype": "m.text", "body": secret_body}, token=token,
                                 mtype=aiocoap.CON), mid=0x0B01)
        assert code_of(raw.exchange(request)) == "2.04"
        raw.exchange(request)  # a duplicate
        metrics = gw.metrics()
    finally:
        raw.close()
        stop(gw.proc)
    gw.proc.log.seek(0)
    logs = gw.proc.log.read().decode()
    assert "answered" in logs, "debug logging is on"
    assert token not in logs and secret_body not in logs and room not in logs

    assert metrics['jeton_gateway_requests_total{route="/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}",code="2.04"}'] == 1
    assert metrics["jeton_gateway_duplicates_total"] == 1
    assert metrics["jeton_gateway_coap_received_bytes_total"] > 0
    assert metrics["jeton_gateway_http_sent_bytes_total"] > 0
    assert metrics["jeton_gateway_upstream_latency_seconds_count"] == 1
    assert "jeton_gateway_observers" in metrics
    assert not any(room in k or token in k for k in metrics)


def test_help_documents_every_setting():
    build_gateway()
    text = subprocess.run([str(GATEWAY_BIN), "--help"], check=True, capture_output=True, text=True).stdout
    flags = set(re.findall(r"--([a-z0-9-]+)", text)) - {"help", "version"}
    assert len(flags) >= 20
    for flag in flags:
        env = "JETON_GATEWAY_" + flag.upper().replace("-", "_")
        assert env in text, f"--{flag} names its environment variable"
    assert "precedence" in text
