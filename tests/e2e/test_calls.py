"""Incoming calls end to end: matrix-nio calls a jeton-sim token in an encrypted room through
the real gateway and Synapse (a legacy m.call.invite, Megolm-encrypted by nio); the token
rings, `decline` reaches nio as an m.call.reject for that call, and a call nio hangs up stops
ringing."""

import asyncio

from e2e_stack import setup_room


def test_a_call_from_nio_rings_is_declined_and_a_hung_up_call_stops_ringing(synapse, gateway, tokens, tmp_path):
    asyncio.run(_calls(synapse, gateway, tokens, tmp_path))


def _invite(call_id, version):
    return {"call_id": call_id, "party_id": "nio-alice", "version": version, "lifetime": 60000,
            "offer": {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}}


async def _calls(synapse, gateway, tokens, tmp_path):
    from nio import RoomSendResponse, UnknownEvent

    nio = None
    try:
        alice, one, _two, tok1, _tok2, nio, room = await setup_room(synapse, gateway, tokens, tmp_path)
        [logged_in] = tok1.find(f"logged-in {one[0]} ")
        token_device = logged_in.split()[2]
        seen = []

        async def on_unknown(_room, event):
            seen.append(event)

        nio.client.add_event_callback(on_unknown, UnknownEvent)

        async def send(event_type, content):
            response = await nio.client.room_send(room, event_type, content, ignore_unverified_devices=True)
            assert isinstance(response, RoomSendResponse), response

        # A version 1 call rings; the token declines it with an m.call.reject nio decrypts.
        mark = tok1.mark()
        await send("m.call.invite", _invite("call-declined", "1"))
        await tok1.expect(f"call-incoming {room} {alice[0]} call-declined", since=mark)
        tok1.command("decline call-declined")
        await tok1.expect(f"call-ended {room} call-declined declined", since=mark)
        await tok1.expect("delivered ", since=mark)
        rejects = await nio.wait(
            lambda: [e for e in seen if e.type == "m.call.reject" and e.sender == one[0]],
            "the token's m.call.reject")
        content = rejects[0].source["content"]
        assert content == {"call_id": "call-declined", "party_id": token_device, "version": "1"}, content
        assert tok1.find("undecryptable") == []

        # A call the caller hangs up stops ringing.
        mark = tok1.mark()
        await send("m.call.invite", _invite("call-hung-up", "1"))
        await tok1.expect(f"call-incoming {room} {alice[0]} call-hung-up", since=mark)
        await send("m.call.hangup", {"call_id": "call-hung-up", "party_id": "nio-alice", "version": "1",
                                     "reason": "user_hangup"})
        await tok1.expect(f"call-ended {room} call-hung-up hung-up", since=mark)
    finally:
        if nio:
            await nio.close()
