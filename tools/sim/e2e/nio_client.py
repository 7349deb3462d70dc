"""The matrix-nio side of smoke.py.

peer: log in (keeping the device id and token in the store dir), join, send an encrypted
      "hello from nio", then print "text <sender> <body>" / "undecryptable <sender> <session>"
      for the room's events for a while.
read: restore that device and print every event of the room, the whole history, decrypted.
"""
import asyncio
import os
import sys

from nio import AsyncClient, AsyncClientConfig, MegolmEvent, RoomMessageText

CONFIG = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)


def show(client, event):
    if isinstance(event, MegolmEvent):
        event = client.decrypt_event(event)
    if isinstance(event, RoomMessageText):
        print(f"text {event.sender} {event.body}", flush=True)
    elif isinstance(event, MegolmEvent):
        print(f"undecryptable {event.sender} {event.session_id}", flush=True)


async def peer(base, room, store):
    os.makedirs(store, exist_ok=True)
    client = AsyncClient(base, "@nio:localhost", store_path=store, config=CONFIG)
    await client.login("secret")
    with open(os.path.join(store, "device"), "w") as f:
        f.write(client.device_id)
    with open(os.path.join(store, "token"), "w") as f:
        f.write(client.access_token)
    await client.join(room)
    await client.sync(timeout=3000, full_state=True)
    if client.should_upload_keys:
        await client.keys_upload()
    for _ in range(60):
        await client.sync(timeout=1000)
        members = client.rooms[room].users if room in client.rooms else {}
        if "@token1:localhost" in members and "@token2:localhost" in members:
            break
    await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hello from nio"},
                           ignore_unverified_devices=True)
    for _ in range(20):
        response = await client.sync(timeout=1000)
        info = response.rooms.join.get(room)
        for event in info.timeline.events if info else []:
            show(client, event)
    await client.close()


async def read(base, room, store):
    client = AsyncClient(base, "@nio:localhost", store_path=store, config=CONFIG)
    with open(os.path.join(store, "device")) as d, open(os.path.join(store, "token")) as t:
        client.restore_login("@nio:localhost", d.read().strip(), t.read().strip())
    client.load_store()
    events, start = [], None
    for _ in range(10):
        response = await client.sync(timeout=1000)
        info = response.rooms.join.get(room)
        if info is not None:
            events.extend(info.timeline.events)
            start = start or info.timeline.prev_batch
    while start:
        page = await client.room_messages(room, start=start, limit=100)
        if not page.chunk:
            break
        events.extend(page.chunk)
        start = page.end
    seen = set()
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            show(client, event)
    await client.close()


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    asyncio.run({"peer": peer, "read": read}[mode](*rest))
