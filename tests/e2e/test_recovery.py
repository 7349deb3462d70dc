"""A token survives what happens to real devices: power cuts (SIGKILL) at random moments while
it sends, and its gateway restarting mid-conversation."""

import asyncio
import collections
import os
import random
import time

from e2e_stack import megolm_message_index, raw_encrypted_events, setup_room, start_gateway, stop_process

MESSAGES = 50


def test_sigkill_at_random_moments_while_sending_loses_and_duplicates_nothing(synapse, gateway, tokens, tmp_path):
    seed = int(os.environ.get("JETON_E2E_SEED", "20261127"))
    print(f"\nSIGKILL schedule seed {seed} (JETON_E2E_SEED)")
    asyncio.run(_power_cuts(synapse, gateway, tokens, tmp_path, random.Random(seed)))


async def _power_cuts(synapse, gateway, tokens, tmp_path, rng):
    nio = None
    try:
        alice, one, two, tok1, tok2, nio, room = await setup_room(synapse, gateway, tokens, tmp_path)
        queued, sent_next, kills = [], 0, 0
        while sent_next < MESSAGES:
            # Send until a random moment, then cut the power.
            cut = time.monotonic() + rng.uniform(0.02, 1.0)
            while sent_next < MESSAGES and time.monotonic() < cut:
                body = f"power cut test {sent_next:02d}"
                sent_next += 1
                mark = tok1.mark()
                tok1.command(f"send {room} {body}")
                try:
                    await tok1.expect("queued ", since=mark, timeout=max(0.01, cut - time.monotonic()))
                except AssertionError:
                    break  # the cut came first: the token never said it took this one
                queued.append(body)
                if rng.random() < 0.5:
                    continue  # the next one right away: several in the outbox at the cut
                try:
                    await tok1.expect("delivered ", since=mark, timeout=max(0.01, cut - time.monotonic()))
                except AssertionError:
                    break
            tok1.kill()
            kills += 1
            tok1.start()
        print(f"{kills} SIGKILLs, {len(queued)} of {MESSAGES} messages queued before a cut")

        # Restarted for the last time: the outbox drains without anyone asking.
        for _ in range(600):
            mark = tok1.mark()
            tok1.command("status")
            [status] = await tok1.expect("status ", since=mark)
            if " outbox=0 " in status and "logged-in=true" in status:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the outbox never drained: {status}")
        for body in queued:
            await nio.wait_for_text(room, one[0], body, timeout=90)
        await asyncio.sleep(3)  # time for a late duplicate to show up

        counts = collections.Counter(e.body for e in nio.texts_from(room, one[0]))
        crash_bodies = {b: n for b, n in counts.items() if b.startswith("power cut test")}
        assert {b: n for b, n in crash_bodies.items() if n != 1} == {}, "a message arrived twice"
        assert set(queued) <= set(crash_bodies), "a message the token accepted never arrived"
        assert nio.undecrypted_from(room, one[0]) == []
        delivered = {line.split()[3] for line in tok1.find("delivered ")}
        assert delivered <= {e.event_id for e in nio.texts_from(room, one[0])}, "a delivered event never arrived"

        raw = raw_encrypted_events(synapse, nio.client.access_token, room, one[0])
        indexes = [(e["content"]["session_id"], megolm_message_index(e["content"]["ciphertext"])) for e in raw]
        assert len(raw) == sum(crash_bodies.values()), "the homeserver holds an event nio did not show"
        repeated = [k for k, n in collections.Counter(indexes).items() if n > 1]
        assert repeated == [], f"Megolm indexes used twice: {repeated}"
        print(f"{len(raw)} encrypted events from the token, {len(set(s for s, _ in indexes))} Megolm sessions, "
              f"no (session, index) twice")
    finally:
        if nio:
            await nio.close()


# A token that sends learns of the restart from the new gateway's 4.01 and registers its /sync
# observation again at once; an idle one when no notification came for --observe-silence-secs,
# which a deployment sets above the gateway's --observe-keepalive-secs.
KEEPALIVE = ("--observe-keepalive-secs", "5")
SILENCE = ("--observe-silence-secs", "15")


def test_tokens_recover_when_their_gateway_restarts_mid_conversation(synapse, tokens, tmp_path, link_pairing):
    # With the link on, the restarted gateway has lost every OSCORE context: the tokens run
    # EDHOC again by themselves.
    link = link_pairing.gateway_args() if link_pairing else []
    gateways = [start_gateway(synapse.base, *KEEPALIVE, *link)]
    try:
        asyncio.run(_gateway_restart(synapse, gateways, tokens, tmp_path, link))
    finally:
        for gw in gateways:
            stop_process(gw.proc)


async def _gateway_restart(synapse, gateways, tokens, tmp_path, link):
    nio = None
    try:
        alice, one, two, tok1, tok2, nio, room = await setup_room(synapse, gateways[0], tokens, tmp_path,
                                                                  sim_args=SILENCE)
        tok1.command(f"send {room} before the gateway restart")
        await nio.wait_for_text(room, one[0], "before the gateway restart")
        await tok2.expect(f"message {room} {one[0]} ")

        gateways[0].proc.kill()
        gateways[0].proc.wait()
        mark1, mark2 = tok1.mark(), tok2.mark()
        tok1.command(f"send {room} while the gateway was down")
        await tok1.expect("queued ", since=mark1)
        await asyncio.sleep(3)
        gateways.append(start_gateway(synapse.base, *KEEPALIVE, *link, "--listen",
                                      f"127.0.0.1:{gateways[0].port}"))

        # Token one (sending) and token two (idle) both read what follows, nobody typing a
        # command. Bounds: CoAP back-off for the first, the silence bound for the second.
        await tok1.expect("delivered ", since=mark1, timeout=120)
        await nio.wait_for_text(room, one[0], "while the gateway was down", timeout=60)
        await nio.send_text(room, "after the gateway restart")
        for tok, mark in ((tok1, mark1), (tok2, mark2)):
            [line] = await tok.expect(f"message {room} {alice[0]} ", since=mark, timeout=60)
            assert line.endswith(" e2e after the gateway restart"), line
        [line] = await tok2.expect(f"message {room} {one[0]} ", since=mark2, timeout=60)
        assert line.endswith(" e2e while the gateway was down"), line
    finally:
        if nio:
            await nio.close()
