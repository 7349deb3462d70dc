"""Two jeton-sim tokens and a matrix-nio client (vodozemac) chat in an encrypted room through
the real gateway and a real Synapse: each reads the others, and a member who joins later reads
only what was sent after joining."""

import asyncio

from e2e_stack import NioPeer, UdpRelay, new_user, setup_room

WIRE_SAMPLES = 5


def test_tokens_and_nio_read_each_other_in_an_encrypted_room(synapse, gateway, tokens, tmp_path):
    asyncio.run(_read_each_other(synapse, gateway, tokens, tmp_path))


async def _read_each_other(synapse, gateway, tokens, tmp_path):
    relay = UdpRelay(gateway.address)
    nio = None
    try:
        alice, one, two, tok1, tok2, nio, room = await setup_room(synapse, gateway, tokens, tmp_path, relay)

        up, down, dgu, dgd = relay.counters()
        print(f"\nwire bytes of token one from start to joined (login, key upload, sync, join): "
              f"up {up} B in {dgu} datagrams, down {down} B in {dgd} datagrams")

        # nio -> both tokens.
        await nio.send_text(room, "hello tokens, from nio")
        for tok in (tok1, tok2):
            [line] = await tok.expect(f"message {room} {alice[0]} ")
            assert line.endswith(" e2e hello tokens, from nio"), line

        # token one -> nio (decrypted, not an undecryptable MegolmEvent) and token two.
        mark2 = tok2.mark()
        up0, down0, dgu0, dgd0 = relay.counters()
        tok1.command(f"send {room} hello from token one")
        await tok1.expect("delivered ")
        [event] = await nio.wait_for_text(room, one[0], "hello from token one")
        up1, down1, dgu1, dgd1 = relay.counters()
        print(f"wire bytes of token one's first message (keys/claim, Olm sessions, room key to the 2 other devices): "
              f"up {up1 - up0} B in {dgu1 - dgu0} datagrams, down {down1 - down0} B in {dgd1 - dgd0} datagrams")
        assert event.decrypted and event.body == "hello from token one"
        [line] = await tok2.expect(f"message {room} {one[0]} ", since=mark2)
        assert line.endswith(" e2e hello from token one"), line

        # token two -> token one and nio.
        mark1 = tok1.mark()
        tok2.command(f"send {room} and hello from token two")
        [line] = await tok1.expect(f"message {room} {two[0]} ", since=mark1)
        assert line.endswith(" e2e and hello from token two"), line
        await nio.wait_for_text(room, two[0], "and hello from token two")

        assert nio.undecrypted_from(room, one[0]) == []
        assert nio.undecrypted_from(room, two[0]) == []
        assert tok1.find("undecryptable") == [] and tok2.find("undecryptable") == []

        # Wire bytes on token one's link, per message, with its background traffic included.
        up0, down0, dgu0, dgd0 = relay.counters()
        for i in range(WIRE_SAMPLES):
            mark = tok1.mark()
            tok1.command(f"send {room} wire sample {i:02d}")
            await tok1.expect("delivered ", since=mark)
            await nio.wait_for_text(room, one[0], f"wire sample {i:02d}")
        up1, down1, dgu1, dgd1 = relay.counters()
        for i in range(WIRE_SAMPLES):
            mark = tok1.mark()
            await nio.send_text(room, f"incoming sample {i:02d}")
            [line] = await tok1.expect(f"message {room} {alice[0]} ", since=mark)
            assert line.endswith(f" e2e incoming sample {i:02d}"), line
        up2, down2, dgu2, dgd2 = relay.counters()
        print(f"wire bytes per message sent by the token: up {(up1 - up0) / WIRE_SAMPLES:.0f} B "
              f"in {(dgu1 - dgu0) / WIRE_SAMPLES:.1f} datagrams, down {(down1 - down0) / WIRE_SAMPLES:.0f} B "
              f"in {(dgd1 - dgd0) / WIRE_SAMPLES:.1f} datagrams")
        print(f"wire bytes per message received by the token: up {(up2 - up1) / WIRE_SAMPLES:.0f} B "
              f"in {(dgu2 - dgu1) / WIRE_SAMPLES:.1f} datagrams, down {(down2 - down1) / WIRE_SAMPLES:.0f} B "
              f"in {(dgd2 - dgd1) / WIRE_SAMPLES:.1f} datagrams")
    finally:
        if nio:
            await nio.close()
        relay.close()


def test_a_member_who_joins_later_reads_only_what_is_sent_after_joining(synapse, gateway, tokens, tmp_path):
    asyncio.run(_late_member(synapse, gateway, tokens, tmp_path))


async def _late_member(synapse, gateway, tokens, tmp_path):
    nio = carol = None
    try:
        alice, one, two, tok1, tok2, nio, room = await setup_room(synapse, gateway, tokens, tmp_path)
        tok1.command(f"send {room} before carol joined")
        await tok1.expect("delivered ")
        [before] = await nio.wait_for_text(room, one[0], "before carol joined")

        carol_user = new_user(synapse, "carol")
        carol = await NioPeer.login(synapse.base, carol_user, tmp_path / "nio-carol", "nio-carol")
        invited = await nio.client.room_invite(room, carol_user[0])
        assert not hasattr(invited, "status_code"), invited
        joined = await carol.client.join(room)
        assert getattr(joined, "room_id", None) == room, joined
        await nio.trust_devices_of(carol_user[0])  # carol's device keys are on the homeserver
        # Token one has seen carol join (alice, both tokens, carol).
        for _ in range(300):
            mark = tok1.mark()
            tok1.command("rooms")
            [line] = await tok1.expect(f"room {room} ", since=mark)
            if " members=4 " in line:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"token one never saw carol join: {line}")

        mark2 = tok2.mark()
        tok1.command(f"send {room} after carol joined")
        [after] = await carol.wait_for_text(room, one[0], "after carol joined")
        assert after.decrypted
        [after_for_alice] = await nio.wait_for_text(room, one[0], "after carol joined")
        assert after_for_alice.session_id != before.session_id, "token one did not rotate its session"
        [line] = await tok2.expect(f"message {room} {one[0]} ", since=mark2)
        assert line.endswith(" e2e after carol joined"), line

        # Carol sees the earlier event in the room's history but cannot decrypt it.
        history = await carol.client.room_messages(room, start=carol.client.next_batch, limit=100)
        earlier = [e for e in history.chunk if e.event_id == before.event_id]
        assert len(earlier) == 1, [type(e).__name__ for e in history.chunk]
        from nio import MegolmEvent
        assert isinstance(earlier[0], MegolmEvent), earlier[0]
        assert [e.body for e in carol.texts_from(room, one[0])] == ["after carol joined"]
    finally:
        for peer in (nio, carol):
            if peer:
                await peer.close()


def test_a_token_back_on_shows_what_it_missed_in_order_or_says_what_it_did_not_fetch(synapse, gateway, tokens,
                                                                                    tmp_path):
    asyncio.run(_missed_while_off(synapse, gateway, tokens, tmp_path))


async def _missed_while_off(synapse, gateway, tokens, tmp_path):
    # The token's sync filter holds 10 events of a room's timeline; more written while it was off
    # make its next sync `limited`, and it fetches the rest from /messages (20 events back at most).
    nio = None
    try:
        alice, one, two, tok1, tok2, nio, room = await setup_room(synapse, gateway, tokens, tmp_path)
        await nio.send_text(room, "before the cut")
        await tok1.expect(f"message {room} {alice[0]} ")

        async def off_while_alice_writes(bodies):
            tok1.kill()
            for body in bodies:
                await nio.send_text(room, body)
            mark = tok1.mark()
            tok1.start()
            def shown():
                lines = tok1.find(f"message {room} {alice[0]} ", since=mark)
                return [" ".join(line.split(" ", 5)[4:]) for line in lines]

            for _ in range(900):
                if f"e2e {bodies[-1]}" in shown():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(3)  # time for a late duplicate to show up
            return mark, shown()

        missed = [f"while off {i:02d}" for i in range(15)]
        mark, shown = await off_while_alice_writes(missed)
        assert shown == [f"e2e {body}" for body in missed]
        assert tok1.find("gap ", since=mark) == [] and tok1.find("undecryptable", since=mark) == []

        # More than the token fetches: it says so, then shows the newest 30 in order.
        missed = [f"long off {i:02d}" for i in range(40)]
        mark, shown = await off_while_alice_writes(missed)
        assert shown == [f"e2e {body}" for body in missed[10:]]
        gap = tok1.find(f"gap {room} ", since=mark)
        assert gap == [f"gap {room} earlier messages were not fetched (20 back-filled)"]
        [first] = [i for i, line in enumerate(tok1.lines) if i >= mark and line.endswith(" e2e long off 10")]
        assert tok1.lines.index(gap[0], mark) < first
        assert tok1.find("undecryptable", since=mark) == []
    finally:
        if nio:
            await nio.close()
