"""CoAP transport behaviour checked with aiocoap and raw UDP: duplicate detection, Block1,
Block2 and Observe, against the real Synapse behind the recording proxy."""

import asyncio
import json
import time
import uuid

import aiocoap
import cbor2
from aiocoap import Message

from coap_client import GET, PUT, Client, RawSocket, code_of, decode, encode, message, run
from matrix_users import make_room, make_user


def test_con_retransmission_is_answered_from_the_cache_and_reaches_synapse_once(gateway, synapse, proxy):
    user = make_user(synapse)
    room = make_room(synapse, user["access_token"])
    txn = f"dup-{uuid.uuid4()}"
    msg = message(PUT, f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}",
                  {"msgtype": "m.text", "body": "once"}, token=user["access_token"], mtype=aiocoap.CON)
    datagram = encode(msg, mid=0x4242, token=b"\x07\x08")
    raw = RawSocket(gateway)
    try:
        raw.send(datagram)
        first = raw.recv()
        raw.send(datagram)  # the same message id again: a retransmission
        second = raw.recv()
    finally:
        raw.close()
    assert first == second, "the duplicate gets the very same response"
    response = Message.decode(first)
    assert code_of(response) == "2.04"
    assert response.mid == 0x4242 and response.token == b"\x07\x08"
    event_id = decode(response)[1]["event_id"]
    assert len(proxy.seen("PUT", txn)) == 1, "the homeserver saw the request once"
    status, event = synapse.request("GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}", token=user["access_token"])
    assert status == 200 and event["content"]["body"] == "once"


def test_retransmission_while_waiting_gets_an_empty_ack_and_then_a_separate_response(gateway, synapse, proxy):
    user = make_user(synapse)
    # A long-poll sync keeps the homeserver busy for ~1.5 s: longer than the piggyback wait.
    _, first = synapse.request("GET", "/_matrix/client/v3/sync?timeout=0", token=user["access_token"])
    msg = message(GET, "/_matrix/client/v3/sync", token=user["access_token"],
                  query=(f"since={first['next_batch']}", "timeout=1500"), mtype=aiocoap.CON)
    datagram = encode(msg, mid=0x5151, token=b"\x51")
    raw = RawSocket(gateway, timeout=5)
    try:
        raw.send(datagram)
        raw.send(datagram)
        ack = Message.decode(raw.recv())
        assert ack.mtype == aiocoap.ACK and ack.code == aiocoap.EMPTY and ack.mid == 0x5151
        separate = Message.decode(raw.recv())
        assert separate.mtype == aiocoap.CON and separate.token == b"\x51"
        assert code_of(separate) == "2.05"
        raw.send(bytes([0x60, 0]) + separate.mid.to_bytes(2, "big"))  # empty ACK
        assert raw.recv_or_none(timeout=3.5) is None, "an acknowledged response is not retransmitted"
    finally:
        raw.close()
    assert len(proxy.seen("GET", first["next_batch"])) == 1


def test_block1_upload_and_block2_download(gateway, synapse, proxy):
    user = make_user(synapse)
    token = user["access_token"]
    room = make_room(synapse, token)
    big = {"msgtype": "m.text", "body": "x" * 3000}
    txn = f"big-{uuid.uuid4()}"

    async def go():
        async with Client(gateway) as c:
            before = gateway.metrics()
            code, sent = await c.request(PUT, f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}", big, token=token)
            assert code == "2.04", sent
            code, state = await c.request(GET, f"/_matrix/client/v3/rooms/{room}/event/{sent['event_id']}", cbor=False)
            return before, sent, code, state

    before, sent, code, event = run(go())
    after = gateway.metrics()
    uploads = proxy.seen("PUT", txn)
    assert len(uploads) == 1 and json.loads(uploads[0][2]) == big, "Block1 reassembled the body exactly"
    assert code == "2.05" and event["content"] == big, "Block2 delivered the whole event"
    assert len(proxy.seen("GET", f"/event/")) >= 1
    key1 = 'jeton_gateway_blockwise_transfers_total{kind="block1"}'
    key2 = 'jeton_gateway_blockwise_transfers_total{kind="block2"}'
    assert after.get(key1, 0) > before.get(key1, 0)
    assert after.get(key2, 0) > before.get(key2, 0)
    # Later blocks came from the stored body: the homeserver saw one GET for this event.
    assert len(proxy.seen("GET", sent["event_id"].replace("$", "%24"))) + len(proxy.seen("GET", sent["event_id"])) == 1


def test_observe_pushes_new_events_with_rising_numbers_and_ends_on_cancel(gateway, synapse, proxy):
    user = make_user(synapse)
    token = user["access_token"]
    room = make_room(synapse, token)
    _, initial = synapse.request("GET", "/_matrix/client/v3/sync?timeout=0", token=token)

    async def go():
        async with Client(gateway) as c:
            msg = c.prepare(message(GET, "/_matrix/client/v3/sync", token=token,
                                    query=(f"since={initial['next_batch']}",), observe=0))
            request = c.ctx.request(msg)
            first = await request.response
            assert code_of(first) == "2.05"
            assert first.opt.observe is not None
            observe_numbers = [first.opt.observe]
            notifications = request.observation.__aiter__()
            bodies = []
            deadline = time.monotonic() + 30
            sent = []
            for i in range(3):
                body = "small" if i < 2 else "large " + "y" * 2500
                status, r = synapse.request("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/obs{i}-{uuid.uuid4()}",
                                            {"msgtype": "m.text", "body": body}, token=token)
                sent.append(r["event_id"])
                while True:
                    notification = await asyncio.wait_for(notifications.__anext__(), deadline - time.monotonic())
                    observe_numbers.append(notification.opt.observe)
                    data = decode(notification)[1]
                    events = [e["event_id"] for e in data.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])]
                    if r["event_id"] in events:
                        bodies.append(data)
                        break
            assert gateway.metric("jeton_gateway_observers") >= 1
            request.observation.cancel()
            # Explicit deregistration as RFC 7641 allows: GET without Observe, same token path.
            await c.request(GET, "/_matrix/client/v3/sync", token=token, query=("timeout=0",))
            return observe_numbers, bodies, sent

    numbers, bodies, sent = run(go())
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    assert len(bodies) == 3
    large = bodies[2]["rooms"]["join"][room]["timeline"]["events"]
    assert any(e["content"]["body"].startswith("large ") and len(e["content"]["body"]) == 2506 for e in large)
    deadline = time.monotonic() + 10
    while gateway.metric("jeton_gateway_observers") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gateway.metric("jeton_gateway_observers") == 0


def test_observe_ends_when_the_client_resets_a_notification(synapse, proxy):
    from conftest import start_gateway, stop

    gw = start_gateway(f"http://127.0.0.1:{proxy.port}", "--observe-poll-timeout-ms", "500")
    user = make_user(synapse)
    token = user["access_token"]
    room = make_room(synapse, token)
    _, initial = synapse.request("GET", "/_matrix/client/v3/sync?timeout=0", token=token)
    raw = RawSocket(gw, timeout=10)
    try:
        register = message(GET, "/_matrix/client/v3/sync", token=token, query=(f"since={initial['next_batch']}",),
                           observe=0, mtype=aiocoap.CON)
        first = raw.exchange(encode(register, mid=0x7001, token=b"\x70"))
        assert code_of(first) == "2.05" and first.opt.observe is not None
        assert gw.metric("jeton_gateway_observers") == 1
        synapse.request("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{uuid.uuid4()}",
                        {"msgtype": "m.text", "body": "ping"}, token=token)
        notification = Message.decode(raw.recv())
        assert notification.mtype == aiocoap.CON and notification.token == b"\x70"
        assert notification.opt.observe > first.opt.observe
        raw.send(bytes([0x70, 0x00]) + notification.mid.to_bytes(2, "big"))  # RST
        deadline = time.monotonic() + 5
        while gw.metric("jeton_gateway_observers") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gw.metric("jeton_gateway_observers") == 0
        assert raw.recv_or_none(timeout=1.5) is None, "no more notifications after the reset"
    finally:
        raw.close()
        stop(gw.proc)
