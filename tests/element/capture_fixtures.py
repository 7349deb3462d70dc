"""Captures, once, what matrix-sdk-crypto (Element's crypto engine, through matrix-js-sdk) puts on
the wire, for jeton-core's deterministic tests: the decrypted Olm plaintext of an `m.room_key`
(with MSC4147's `sender_device_keys`), the Megolm event that key opens, `m.room_key.withheld`,
the to-device `m.key.verification.*` messages of a whole SAS verification, and the in-room
verification events (the `m.key.verification.request` room message and what follows it, which
matrix-js-sdk sends unencrypted even in an encrypted room).

    tests/.venv/bin/python tests/element/capture_fixtures.py [OUT_DIR]

OUT_DIR defaults to firmware/core/tests/fixtures/matrix-sdk-crypto. A private Synapse runs on
loopback for the capture and is removed afterwards. Two Element devices (alice, bob: one
driver.mjs process each) talk to Synapse through a recording HTTP proxy, which keeps every
to-device message they send. A matrix-nio device (carol, vodozemac) sits in the
room and decrypts what is encrypted to it: the exact plaintext strings are taken where nio parses
them. Keys and ids differ at every run; what the fixtures pin is the shape matrix-sdk-crypto
gives them. See the README.md written next to the fixtures.
"""

import asyncio
import importlib.metadata
import json
import pathlib
import shutil
import sys
import tempfile
import time
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import e2e_stack  # noqa: E402
from e2e_stack import NioPeer, new_user, synapse_server  # noqa: E402
from element_peer import ElementDevice  # noqa: E402

DEFAULT_OUT = e2e_stack.REPO / "firmware" / "core" / "tests" / "fixtures" / "matrix-sdk-crypto"


class NioPlaintexts:
    """Every JSON text nio's Olm machine parses that is a decrypted event: Olm payloads (they
    name a `recipient`) and Megolm payloads (they name a `room_id`), verbatim, in order."""

    def __init__(self):
        import nio.crypto.olm_machine as machine

        self.olm, self.megolm = [], []
        real = machine.json
        capture = self

        class Json:
            def __getattr__(self, name):
                return getattr(real, name)

            def loads(self, text, *args, **kwargs):
                value = real.loads(text, *args, **kwargs)
                if isinstance(value, dict) and "type" in value:
                    if "recipient" in value:
                        capture.olm.append(text)
                    elif "room_id" in value:
                        capture.megolm.append(text)
                return value

        machine.json = Json()

    def olm_of_type(self, kind):
        return [t for t in self.olm if json.loads(t)["type"] == kind]

    def megolm_of_type(self, prefix):
        return [t for t in self.megolm if json.loads(t)["type"].startswith(prefix)]


def verification_kind(event):
    """`m.key.verification.<kind>` for an in-room verification event, else None."""
    kind = event["type"]
    if kind == "m.room.message":
        kind = event["content"].get("msgtype", "")
    return kind if kind.startswith("m.key.verification.") else None


def sent_to_device(proxy, sender):
    """The to-device messages a device sent through the proxy, as the recipient's /sync shows
    them: [{"sender", "type", "content"}], in order."""
    events = []
    for method, path, body in proxy.requests:
        parts = urllib.parse.urlsplit(path).path.split("/")
        if method == "PUT" and "sendToDevice" in parts:
            kind = urllib.parse.unquote(parts[parts.index("sendToDevice") + 1])
            for devices in json.loads(body)["messages"].values():
                for content in devices.values():
                    events.append({"sender": sender, "type": kind, "content": content})
    return events


async def call(peer, cmd, **args):
    return await asyncio.to_thread(peer.call, cmd, **args)


async def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def sas(requester, responder, rid_requester, since):
    """Runs SAS to the end once `responder` got the request: it accepts, `requester` starts,
    both confirm."""
    request = await asyncio.to_thread(
        responder.wait_event, lambda e: e["event"] == "verification_request", "the request", since)
    await call(responder, "accept_verification", rid=request["rid"])
    await asyncio.to_thread(requester.phase, rid_requester, "Ready")
    await call(requester, "start_sas", rid=rid_requester)
    await asyncio.to_thread(requester.sas, rid_requester)
    await asyncio.to_thread(responder.sas, request["rid"])
    await call(requester, "confirm_sas", rid=rid_requester)
    await call(responder, "confirm_sas", rid=request["rid"])
    for device, rid in ((requester, rid_requester), (responder, request["rid"])):
        await asyncio.to_thread(device.wait_event, lambda e, rid=rid: e["event"] == "verification_done"
                                and e["rid"] == rid, "the verification to finish")


async def capture(out):
    captured = NioPlaintexts()
    work = pathlib.Path(tempfile.mkdtemp(prefix="jeton-capture-"))
    with synapse_server() as synapse:
        proxies = {name: e2e_stack._gateway_suite.RecordingProxy(int(synapse.base.rsplit(":", 1)[1]))
                   for name in ("alice", "bob")}
        users = {name: new_user(synapse, name) for name in ("alice", "bob", "carol")}
        devices = {}
        carol = None
        try:
            for name in ("alice", "bob"):
                devices[name] = ElementDevice(f"capture-{name}", work / f"{name}.log")
                await asyncio.to_thread(devices[name].login, f"http://127.0.0.1:{proxies[name].port}",
                                        users[name])
                await call(devices[name], "bootstrap_cross_signing")
            alice, bob = devices["alice"], devices["bob"]
            carol = await NioPeer.login(synapse.base, users["carol"], work / "nio-carol", "nio-carol")

            # A room key, and the event it opens.
            room = await asyncio.to_thread(alice.create_encrypted_room, [bob.user_id, carol.user_id])
            await call(bob, "join", room=room)
            joined = await carol.client.join(room)
            assert getattr(joined, "room_id", None) == room, joined
            for user in (bob.user_id, carol.user_id):
                await asyncio.to_thread(alice.wait_member, room, user)
            event_id = await asyncio.to_thread(alice.send_text, room, "hello from matrix-sdk-crypto")
            await wait_for(lambda: captured.olm_of_type("m.room_key") and captured.megolm_of_type("m.room.message"),
                           "nio to decrypt the room key and the message")
            encrypted = e2e_stack.raw_encrypted_events(synapse, carol.client.access_token, room, alice.user_id)
            encrypted = [e for e in encrypted if e["event_id"] == event_id]

            # SAS over to-device messages (how Element verifies a device), and a cancelled one.
            mark_bob = bob.mark()
            rid = (await call(alice, "request_verification", user=bob.user_id, device=bob.device_id))["rid"]
            await sas(alice, bob, rid, mark_bob)
            mark_bob = bob.mark()
            rid = (await call(alice, "request_verification", user=bob.user_id, device=bob.device_id))["rid"]
            await asyncio.to_thread(bob.wait_event, lambda e: e["event"] == "verification_request", "a request",
                                    mark_bob)
            await call(alice, "cancel_verification", rid=rid)

            # SAS in the room (how Element verifies another person); carol reads along.
            mark_bob = bob.mark()
            rid = (await call(alice, "request_verification", user=bob.user_id, room=room))["rid"]
            await sas(alice, bob, rid, mark_bob)

            # Element's "exclude insecure devices": carol's device is not cross-signed.
            await call(alice, "isolation", mode="only_signed")
            room2 = await asyncio.to_thread(alice.create_encrypted_room, [carol.user_id])
            joined = await carol.client.join(room2)
            assert getattr(joined, "room_id", None) == room2, joined
            await asyncio.to_thread(alice.wait_member, room2, carol.user_id)
            await asyncio.to_thread(alice.send_text, room2, "not for unsigned devices")
            await wait_for(lambda: [e for e in sent_to_device(proxies["alice"], alice.user_id)
                                    if e["type"] == "m.room_key.withheld"], "alice's withheld notice")

            to_device = sent_to_device(proxies["alice"], alice.user_id) + sent_to_device(proxies["bob"], bob.user_id)
            # matrix-js-sdk sends in-room verification events unencrypted, even in an encrypted room.
            in_room = e2e_stack.room_events(synapse, carol.client.access_token, room, verification_kind)
            versions = {
                "matrix-sdk-crypto": alice.crypto_version,
                "matrix-js-sdk": json.loads((HERE / "node_modules" / "matrix-js-sdk" / "package.json").read_text())["version"],
                "matrix-nio (recipient of the Olm and Megolm messages)": importlib.metadata.version("matrix-nio"),
                "synapse": importlib.metadata.version("matrix-synapse"),
            }
            identities = {
                name: {"user_id": d.user_id, "device_id": d.device_id, "curve25519": d.curve25519,
                       "ed25519": d.ed25519} for name, d in devices.items()}
            identities["carol (nio)"] = {
                "user_id": carol.user_id, "device_id": carol.client.device_id,
                "curve25519": carol.client.olm.account.identity_keys["curve25519"],
                "ed25519": carol.client.olm.account.identity_keys["ed25519"]}
        finally:
            if carol:
                await carol.close()
            for device in devices.values():
                device.close()
            for proxy in proxies.values():
                proxy.close()
            shutil.rmtree(work, ignore_errors=True)

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def write(name, text):
        (out / name).write_text(text if text.endswith("\n") else text + "\n")
        written.append(name)

    def write_json(name, value):
        write(name, json.dumps(value, indent=2, sort_keys=False))

    [room_key] = captured.olm_of_type("m.room_key")
    write("m.room_key.olm-plaintext.json", room_key)
    [message] = captured.megolm_of_type("m.room.message")
    write("m.room.message.megolm-plaintext.json", message)
    [event] = encrypted
    write_json("m.room.encrypted.megolm-event.json", event)
    kinds = {}
    for event in to_device:
        kinds.setdefault(event["type"], []).append(event)
    for kind, events in sorted(kinds.items()):
        if kind.startswith("m.key.verification.") or kind == "m.room_key.withheld":
            # The first of each kind as the recipient's /sync shows it.
            write_json(f"{kind}.to-device.json", events[0])
    for event in in_room:
        name = f"in-room.{verification_kind(event)}.room-event.json"
        if name not in written:
            write_json(name, event)
    write_json("capture.json", {"versions": versions, "identities": identities,
                                "to_device_types_sent": sorted(kinds)})
    return written


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    written = asyncio.run(capture(out))
    print(f"wrote {len(written)} files to {out}:")
    for name in written:
        print(f"  {name}")


if __name__ == "__main__":
    main()
