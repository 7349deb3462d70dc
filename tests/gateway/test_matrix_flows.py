"""End-to-end Matrix traffic through the gateway (CoAP + CBOR) against a real Synapse, each
result checked against what Synapse stored, read back over plain HTTP."""

import base64
import os
import uuid
from urllib.parse import quote

import pytest

from coap_client import GET, POST, PUT, Client, run


def b64(n):
    return base64.b64encode(os.urandom(n)).decode().rstrip("=")


def test_versions_advertise_the_low_bandwidth_profile(gateway, synapse):
    async def go():
        async with Client(gateway) as c:
            return await c.request(GET, "/_matrix/client/versions")

    code, body = run(go())
    assert code == "2.05"
    assert body["m.low_bandwidth"] == {"cbor_enum_version": 2, "coap_enum_version": 1}
    _, direct = synapse.request("GET", "/_matrix/client/versions")
    assert body["versions"] == direct["versions"]


async def register(c, username, password="correct horse battery"):
    path = "/_matrix/client/v3/register"
    code, challenge = await c.request(POST, path, {"username": username, "password": password})
    assert code == "4.01", challenge
    assert "m.login.dummy" in [s for f in challenge["flows"] for s in f["stages"]]
    code, body = await c.request(POST, path, {
        "username": username, "password": password,
        "auth": {"type": "m.login.dummy", "session": challenge["session"]},
    })
    assert code == "2.04", body
    return body


def test_matrix_e2ee_flows_through_coap_and_cbor(gateway, synapse, proxy):
    alice_name = f"alice{uuid.uuid4().hex[:8]}"
    bob_name = f"bob{uuid.uuid4().hex[:8]}"

    async def go():
        async with Client(gateway) as alice, Client(gateway) as bob:
            reg = await register(alice, alice_name)
            assert reg["user_id"] == f"@{alice_name}:localhost"
            status, whoami = synapse.request("GET", "/_matrix/client/v3/account/whoami", token=reg["access_token"])
            assert status == 200 and whoami["user_id"] == reg["user_id"]

            # Log in: a new device; its token travels in option 256 with "Bearer ".
            code, login = await alice.request(POST, "/_matrix/client/v3/login", {
                "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice_name},
                "password": "correct horse battery", "initial_device_display_name": "token",
            })
            assert code == "2.04", login
            token, device = login["access_token"], login["device_id"]
            status, whoami = synapse.request("GET", "/_matrix/client/v3/account/whoami", token=token)
            assert whoami["device_id"] == device

            code, room = await alice.request(POST, "/_matrix/client/v3/createRoom", {
                "preset": "private_chat",
                "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                   "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            }, token=f"Bearer {token}")
            assert code == "2.04", room
            room_id = room["room_id"]
            status, enc = synapse.request("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.encryption/", token=token)
            assert status == 200 and enc["algorithm"] == "m.megolm.v1.aes-sha2"

            # Device keys and 50 one-time keys: larger than one block, so aiocoap uses Block1.
            device_keys = {
                "user_id": reg["user_id"] and login["user_id"], "device_id": device,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {f"curve25519:{device}": b64(32), f"ed25519:{device}": b64(32)},
                "signatures": {login["user_id"]: {f"ed25519:{device}": b64(64)}},
            }
            otks = {f"signed_curve25519:AAAAA{i:03d}": {
                "key": b64(32), "signatures": {login["user_id"]: {f"ed25519:{device}": b64(64)}}}
                for i in range(50)}
            block1_before = gateway.metric('jeton_gateway_blockwise_transfers_total{kind="block1"}')
            # Sticky token: no option 256 from here on.
            code, counts = await alice.request(POST, "/_matrix/client/v3/keys/upload",
                                               {"device_keys": device_keys, "one_time_keys": otks})
            assert code == "2.04", counts
            assert counts["one_time_key_counts"]["signed_curve25519"] == 50
            assert gateway.metric('jeton_gateway_blockwise_transfers_total{kind="block1"}') > block1_before

            # Encrypted send.
            content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": b64(238),
                       "session_id": b64(32), "sender_key": device_keys["keys"][f"curve25519:{device}"],
                       "device_id": device}
            txn = str(uuid.uuid4())
            code, sent = await alice.request(PUT, f"/_matrix/client/v3/rooms/{room_id}/send/m.room.encrypted/{txn}", content)
            assert code == "2.04", sent
            status, stored = synapse.request("GET", f"/_matrix/client/v3/rooms/{room_id}/event/{sent['event_id']}", token=token)
            assert status == 200
            assert stored["type"] == "m.room.encrypted"
            assert stored["content"] == content

            code, sync = await alice.request(GET, "/_matrix/client/v3/sync")
            assert code == "2.05"
            timeline = sync["rooms"]["join"][room_id]["timeline"]["events"]
            assert [e["content"] for e in timeline if e["event_id"] == sent["event_id"]] == [content]

            # Bob (registered through the gateway too) queries and claims Alice's keys.
            bob_reg = await register(bob, bob_name)
            bob_token = bob_reg["access_token"]
            code, query = await bob.request(POST, "/_matrix/client/v3/keys/query",
                                            {"device_keys": {login["user_id"]: []}}, token=bob_token)
            assert code == "2.04", query
            got = query["device_keys"][login["user_id"]][device]
            status, direct = synapse.request("POST", "/_matrix/client/v3/keys/query",
                                             {"device_keys": {login["user_id"]: []}}, token=bob_token)
            assert got == direct["device_keys"][login["user_id"]][device]
            assert got["keys"] == device_keys["keys"]

            code, claim = await bob.request(POST, "/_matrix/client/v3/keys/claim",
                                            {"one_time_keys": {login["user_id"]: {device: "signed_curve25519"}}})
            assert code == "2.04", claim
            (key_id, key), = claim["one_time_keys"][login["user_id"]][device].items()
            assert otks[key_id] == key
            status, counts = synapse.request("POST", "/_matrix/client/v3/keys/upload", {}, token=token)
            assert counts["one_time_key_counts"]["signed_curve25519"] == 49

            # To-device from Bob to Alice's device.
            olm = {"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": b64(32),
                   "ciphertext": {device_keys["keys"][f"curve25519:{device}"]: {"type": 0, "body": b64(400)}}}
            code, _ = await bob.request(PUT, f"/_matrix/client/v3/sendToDevice/m.room.encrypted/{uuid.uuid4()}",
                                        {"messages": {login["user_id"]: {device: olm}}})
            assert code == "2.04"
            # Incremental, from the batch Alice saw through the gateway (initial syncs are cached).
            status, alice_sync = synapse.request("GET", f"/_matrix/client/v3/sync?timeout=0&since={sync['next_batch']}", token=token)
            to_device = alice_sync["to_device"]["events"]
            assert [e["content"] for e in to_device if e["type"] == "m.room.encrypted"] == [olm]

    run(go())


def test_msc3079_short_paths_and_v2_binary_fields(gateway, synapse, proxy):
    """A token's traffic: MSC3079 v1 short paths, integer keys, and under option 257 = 2 the
    ciphertext as a CBOR byte string; Synapse stores the same base64 text."""
    from coap_client import encode_cbor
    from matrix_users import make_room, make_user

    user = make_user(synapse)
    token = user["access_token"]
    room = make_room(synapse, token)
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": b64(238), "session_id": b64(32)}
    v1_body = encode_cbor(content, 1)
    v2_body = encode_cbor(content, 2)
    assert len(v2_body) < len(v1_body), "v2 carries the ciphertext as bytes"

    async def go():
        async with Client(gateway) as c:
            # v1 enum 9 is PUT /_matrix/client/r0/rooms/{roomId}/send/{eventType}/{txnId}.
            code, sent = await c.request(PUT, f"/9/{room}/m.room.encrypted/{uuid.uuid4()}", v2_body,
                                         token=token, version=2)
            assert code == "2.04", sent
            _, first = synapse.request("GET", "/_matrix/client/v3/sync?timeout=0", token=token)
            # v1 enum 7 is /_matrix/client/r0/sync.
            code, sync = await c.request(GET, "/7", version=2, query=("timeout=0",))
            assert code == "2.05"
            return sent, sync

    sent, sync = run(go())
    assert proxy.seen("PUT", "/_matrix/client/r0/rooms/")
    status, stored = synapse.request("GET", f"/_matrix/client/v3/rooms/{room}/event/{sent['event_id']}", token=token)
    assert stored["content"] == content
    events = sync["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"] for e in events if e["event_id"] == sent["event_id"]] == [content]


def _empty_members(value, path=()):
    """Paths of the empty objects/arrays that are members of an object (not array items)."""
    found = []
    if isinstance(value, dict):
        for name, member in value.items():
            if isinstance(member, (dict, list)) and not member:
                found.append(path + (name,))
            if isinstance(member, dict):
                found += _empty_members(member, path + (name,))
    return found


def test_v2_token_paths_well_known_values_and_lean_sync(gateway, synapse, proxy):
    """What jeton-core sends under v2: `we` (encrypted send, event type implied), the algorithm as
    a well-known value (one byte); Synapse stores the standard event; a v2 sync leaves out the
    empty members a v1 sync of the same position carries."""
    from coap_client import encode_cbor
    from matrix_users import make_room, make_user

    user = make_user(synapse)
    token = user["access_token"]
    room = make_room(synapse, token)
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": b64(238), "session_id": b64(32)}
    body = encode_cbor(content, 2)
    # algorithm (key 84, `18 54`) is simple(1), `e1`, instead of 21 bytes of text.
    assert b"\x18\x54\xe1" in body and b"m.megolm" not in body

    async def go():
        async with Client(gateway) as c:
            code, sent = await c.request(PUT, f"/we/{room}/{uuid.uuid4()}", body, token=token, version=2)
            assert code == "2.04", sent
            code, lean = await c.request(GET, "/v", version=2, query=("timeout=0",))
            assert code == "2.05"
            # `v` is v2 only; v1's sync enum is `7` (/r0/sync, the same response).
            code, full = await c.request(GET, "/7", version=1, query=("timeout=0",))
            assert code == "2.05"
            return sent, lean, full

    sent, lean, full = run(go())
    assert proxy.seen("PUT", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/send/m.room.encrypted/")
    _, stored = synapse.request("GET", f"/_matrix/client/v3/rooms/{room}/event/{sent['event_id']}", token=token)
    assert stored["type"] == "m.room.encrypted" and stored["content"] == content
    events = lean["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"] for e in events if e["event_id"] == sent["event_id"]] == [content]
    assert [e["type"] for e in events if e["event_id"] == sent["event_id"]] == ["m.room.encrypted"]
    kept = {("device_one_time_keys_count",), ("device_unused_fallback_key_types",),
            ("org.matrix.msc2732.device_unused_fallback_key_types",)}
    assert set(_empty_members(lean)) <= kept, _empty_members(lean)
    assert set(_empty_members(full)) - kept, "a v1 sync keeps Synapse's empty members"
    # `limited: false` is left out; absent reads as false.
    timeline, full_timeline = lean["rooms"]["join"][room]["timeline"], full["rooms"]["join"][room]["timeline"]
    assert timeline.get("limited", False) == full_timeline["limited"]
    assert full_timeline["limited"] or "limited" not in timeline


def test_v2_room_handles_and_kept_megolm_sender_fields_reach_synapse_in_full(gateway, synapse):
    """PROFILE.md section 1.1: after one send naming the room and the deprecated Megolm sender
    fields in full, a send naming the room by its handle and leaving the fields out reaches
    Synapse as the same full event; an unknown handle is 4.12 and reaches nothing."""
    from coap_client import encode_cbor
    from matrix_users import make_room, make_user

    user = make_user(synapse)
    token = user["access_token"]
    room = make_room(synapse, token)
    bare = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": b64(238), "session_id": b64(32)}
    full = dict(bare, sender_key=b64(32), device_id="JETONDEV01")
    handle = "~" + room[1:12]

    async def go():
        async with Client(gateway) as c:
            unknown = await c.request(PUT, f"/we/{handle}/h0", encode_cbor(bare, 2), token=token, version=2)
            first = await c.request(PUT, f"/we/{room}/h1", encode_cbor(full, 2), version=2)
            later = await c.request(PUT, f"/we/{handle}/h2", encode_cbor(bare, 2), version=2)
            return unknown, first, later

    (code0, _), (code1, first), (code2, later) = run(go())
    assert code0 == "4.12"
    assert (code1, code2) == ("2.04", "2.04"), (first, later)
    for sent in (first, later):
        status, stored = synapse.request("GET", f"/_matrix/client/v3/rooms/{room}/event/{sent['event_id']}", token=token)
        assert status == 200 and stored["content"] == full, stored
    status, messages = synapse.request("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20", token=token)
    assert sum(e["type"] == "m.room.encrypted" for e in messages["chunk"]) == 2
