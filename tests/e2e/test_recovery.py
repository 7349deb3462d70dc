"""A token survives what happens to real devices: power cuts (SIGKILL) at random moments while
it sends, and its gateway restarting mid-conversation."""

import asyncio
import collections
import os
import random
import time

import pytest

from e2e_stack import (PostgresCluster, UdpRelay, gateway_partial_ivs, megolm_message_index,
                       postgres_binaries, raw_encrypted_events, setup_room, start_gateway, stop_process)

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


# A gateway that kept its OSCORE contexts (its state file, or its PostgreSQL database) serves a token's next request at
# once (room handles resolve as before), and ends the /sync observations it no longer holds as it starts, so idle tokens register
# again at once too. One that lost them (--state off) answers 4.01: the token runs EDHOC again
# and sends its access token again; an idle token's observation goes silent until it registers
# again when no notification came for --observe-silence-secs, which a deployment sets above the
# gateway's --observe-keepalive-secs.
KEEPALIVE = ("--observe-keepalive-secs", "5")
SILENCE = {"off": ("--observe-silence-secs", "15"),
           # Longer than the test waits: the observation must come back without it.
           "kept": ("--observe-silence-secs", "600"),
           "postgres": ("--observe-silence-secs", "600")}


@pytest.mark.parametrize("state", ["kept", "postgres", "off"])
def test_tokens_recover_when_their_gateway_restarts_mid_conversation(synapse, tokens, tmp_path, link_pairing, state):
    if link_pairing is None:
        pytest.skip("the suite runs plain CoAP: there is no OSCORE context to keep")
    cluster = None
    if state == "postgres":
        binaries = postgres_binaries()
        if binaries is None:
            pytest.skip("no PostgreSQL binaries (/usr/lib/postgresql/*/bin; apt-get install postgresql)")
        cluster = PostgresCluster(binaries)
    # The restarted gateway is given the same arguments, so the same state file or database.
    link = link_pairing.gateway_args()
    if state == "off":
        link += ["--state", "off"]
    elif cluster:
        link += ["--state", "off", "--database", cluster.url]
    try:
        gateways = [start_gateway(synapse.base, *KEEPALIVE, *link)]
        relay = UdpRelay(("127.0.0.1", gateways[0].port), record=True)
        try:
            asyncio.run(_gateway_restart(synapse, gateways, tokens, tmp_path, link, relay, state))
        finally:
            relay.close()
            for gw in gateways:
                stop_process(gw.proc)
    finally:
        if cluster:
            cluster.close()


async def _timed_send(tok, room, body, relay):
    """Sends `body` from `tok` (through `relay`): seconds until it is delivered, and the
    bytes on the air (both ways) meanwhile."""
    mark, before, started = tok.mark(), relay.counters(), time.monotonic()
    tok.command(f"send {room} {body}")
    await tok.expect("delivered ", since=mark, timeout=120)
    elapsed, after = time.monotonic() - started, relay.counters()
    return elapsed, (after[0] - before[0]) + (after[1] - before[1])


async def _gateway_restart(synapse, gateways, tokens, tmp_path, link, relay, state):
    nio = None
    try:
        alice, one, two, tok1, tok2, nio, room = await setup_room(synapse, gateways[0], tokens, tmp_path,
                                                                  relay=relay, sim_args=SILENCE[state])
        # The first send shares the room key; the second is what a send costs in steady state.
        await _timed_send(tok1, room, "the room key goes with this one", relay)
        steady = await _timed_send(tok1, room, "before the gateway restart", relay)
        await nio.wait_for_text(room, one[0], "before the gateway restart")
        await tok2.expect(f"message {room} {one[0]} ", count=2)

        gateways[0].proc.kill()
        gateways[0].proc.wait()
        with relay.lock:
            restart = len(relay.datagrams)
        mark1, mark2 = tok1.mark(), tok2.mark()
        gateways.append(start_gateway(synapse.base, *KEEPALIVE, *link, "--listen",
                                      f"127.0.0.1:{gateways[0].port}"))
        restarted = await _timed_send(tok1, room, "first after the gateway restart", relay)
        print(f"\nstate {state}: a send before the restart {steady[0] * 1000:.0f} ms, {steady[1]} B on the air; "
              f"the first after it {restarted[0] * 1000:.0f} ms, {restarted[1]} B")
        await nio.wait_for_text(room, one[0], "first after the gateway restart", timeout=60)

        # Both tokens read what follows, nobody typing a command: token one, which sent, and
        # token two, idle, within the silence bound.
        sent = time.monotonic()
        await nio.send_text(room, "after the gateway restart")
        for tok, mark in ((tok2, mark2), (tok1, mark1)):
            [line] = await tok.expect(f"message {room} {alice[0]} ", since=mark, timeout=60)
            assert line.endswith(" e2e after the gateway restart"), line
            if tok is tok2:
                print(f"state {state}: the idle token shows a message sent after the restart "
                      f"{time.monotonic() - sent:.1f} s after it was sent")
        [line] = await tok2.expect(f"message {room} {one[0]} ", since=mark2, timeout=60)
        assert line.endswith(" e2e first after the gateway restart"), line

        handshakes = tok1.find("link-established", since=mark1) + tok2.find("link-established", since=mark2)
        logins = tok1.find("logged-in", since=mark1) + tok2.find("logged-in", since=mark2)
        assert logins == [], "a token logged in again"
        if state != "off":
            # The gateway's own Partial IVs (its notifications) go on past the restart in the
            # same context without one used twice: numbering resumed above what it reserved.
            own = gateway_partial_ivs(relay)
            repeated = sorted(piv for (_, piv), datagrams in own.items() if len(datagrams) > 1)
            assert repeated == [], f"the gateway reused OSCORE Partial IVs {repeated}"
            before, after = gateway_partial_ivs(relay, end=restart), gateway_partial_ivs(relay, start=restart)
            assert before and after, "the test saw the gateway's own Partial IVs on both sides of the restart"
            print(f"state {state}: the gateway's own Partial IVs on the air, none twice: "
                  f"{sorted(piv for _, piv in before)} before the restart, {sorted(piv for _, piv in after)} after")
            assert handshakes == [], "a token ran EDHOC again although the gateway kept its context"
            assert gateways[1].metric("edhoc_handshakes") == 0
            refused = {k: v for k, v in gateways[1].metrics().items() if 'code="4.12"' in k or 'code="4.01"' in k}
            assert sum(refused.values()) == 0, f"the gateway lost a token's sticky state: {refused}"
        else:
            assert len(handshakes) == 2, "the gateway lost the contexts: both tokens run EDHOC again"
    finally:
        if nio:
            await nio.close()
