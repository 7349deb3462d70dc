"""The protected token-gateway link end to end: a token paired with `jeton pair` runs EDHOC with
the gateway and then chats with a matrix-nio peer over OSCORE only; a token killed and restarted
20 times mid-conversation never reuses an OSCORE sequence number; a token the gateway does not
list is refused with a clear error. A UDP relay between token and gateway records what the air
shows."""

import asyncio
import random
import re
import signal
import time

import pytest

from e2e_stack import (OSCORE, SimToken, UdpRelay, is_request, new_user, option, oscore_kid_and_piv, pair,
                       setup_room, start_gateway, stop_process, wire)

EDHOC_PATH = [b".well-known", b"edhoc"]
ACCESS_TOKEN = 256
URI_PATH = 11


@pytest.fixture(autouse=True)
def _linked(link_pairing):
    if link_pairing is None:
        pytest.skip("the suite runs with the link unprotected (JETON_E2E_PLAIN_LINK=1)")


def test_a_paired_token_runs_edhoc_then_chats_with_nio_over_oscore_only(synapse, gateway, tokens, tmp_path):
    relay = UdpRelay(gateway.address, record=True)
    try:
        asyncio.run(_chat(synapse, gateway, tokens, tmp_path, relay))
    finally:
        relay.close()


async def _chat(synapse, gateway, tokens, tmp_path, relay):
    nio = None
    try:
        alice, one, _, tok1, _, nio, room = await setup_room(synapse, gateway, tokens, tmp_path, relay=relay)
        assert tok1.find("link-established kid="), tok1.lines[:10]
        tok1.command(f"send {room} hello over oscore")
        await nio.wait_for_text(room, one[0], "hello over oscore")
        mark = tok1.mark()
        await nio.send_text(room, "hello back")
        [line] = await tok1.expect(f"message {room} {alice[0]} ", since=mark)
        assert line.endswith(" e2e hello back"), line

        carried = wire(relay)
        requests = [(data, m) for up, data, m in carried if up and is_request(m)]
        edhoc = [(data, m) for data, m in requests if option(m, URI_PATH) == EDHOC_PATH]
        protected = [(data, m) for data, m in requests if option(m, OSCORE)]
        assert len(edhoc) >= 2, "message_1 and message_3"
        assert len(edhoc) + len(protected) == len(requests), "every other request is OSCORE"
        assert len(protected) > 10
        # Never in clear: the access token, paths and queries are inside the ciphertext.
        assert not [m for up, _, m in carried if option(m, ACCESS_TOKEN)]
        assert not [m for _, m in protected if option(m, URI_PATH)]
        # Every response to a protected request is protected too.
        protected_tokens = {m[3] for _, m in protected}
        responses = [m for up, _, m in carried if not up and m[1] >= 64 and m[3] in protected_tokens]
        assert responses and all(option(m, OSCORE) for m in responses)

        # The gateway first asks the token's (unproven) address for an Echo round trip: its
        # first message_1 gets a bare 4.01 with an Echo value, and the handshake proper starts
        # with the message_1 that carries it.
        edhoc_tokens = {m[3] for _, m in edhoc}
        challenged = {m[3] for up, _, m in carried if not up and m[3] in edhoc_tokens and m[1] == 0x81}
        assert len(challenged) == 1, "one Echo challenge, before the first handshake"
        echo = [data for _, data, m in carried if m[3] in challenged and m[1] != 0]
        steps = [data for _, data, m in carried if m[3] in edhoc_tokens - challenged and m[1] != 0]
        handshake = sum(len(data) for data in steps)
        print(f"\nEDHOC handshake on the air: {handshake} B in {len(steps)} datagrams "
              f"(UDP payloads, CoAP headers included; target 250 B), after an Echo round trip of "
              f"{sum(len(data) for data in echo)} B in {len(echo)} datagrams")
        assert handshake <= 250
    finally:
        if nio:
            await nio.close()


def test_a_token_killed_and_restarted_20_times_never_reuses_an_oscore_sequence_number(
        synapse, gateway, tokens, tmp_path):
    relay = UdpRelay(gateway.address, record=True)
    try:
        asyncio.run(_restarts(synapse, gateway, tokens, tmp_path, relay, random.Random(20261128)))
    finally:
        relay.close()


async def _restarts(synapse, gateway, tokens, tmp_path, relay, rng):
    nio = None
    try:
        alice, one, _, tok1, _, nio, room = await setup_room(synapse, gateway, tokens, tmp_path, relay=relay)
        sent = []
        for kill in range(20):
            body = f"restart {kill:02d}"
            tok1.command(f"send {room} {body}")
            sent.append(body)
            if kill % 4 == 0:
                await nio.send_text(room, f"to the token {kill:02d}")
            # Mid-conversation: the send may be queued, in flight or delivered.
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            tok1.kill()
            tok1.start()
        # The last start drains the outbox by itself.
        for body in sent[-3:]:
            await nio.wait_for_text(room, one[0], body, timeout=120)

        seen = {}
        for up, data, m in wire(relay):
            if up and is_request(m) and option(m, OSCORE):
                kid, piv = oscore_kid_and_piv(option(m, OSCORE)[0])
                key = (kid, piv)
                assert key not in seen, f"(kid {kid.hex()}, Partial IV {piv}) sent twice"
                seen[key] = data
        kids = {kid for kid, _ in seen}
        print(f"\n{len(seen)} protected requests over 20 restarts, kids {sorted(k.hex() for k in kids)}, "
              f"highest Partial IV {max(piv for _, piv in seen)}")
        # The context survived every restart: no new handshake.
        assert len(tok1.find("link-established")) == 1, tok1.find("link-established")
        assert len(seen) > 20
    finally:
        if nio:
            await nio.close()


def test_a_token_the_gateway_does_not_list_is_refused_with_a_clear_error(synapse, link_pairing, tmp_path):
    # Paired with the right gateway identity, but the gateway's tokens file never saw it.
    material = pair(tmp_path / "stranger.link", link_pairing.identity, tmp_path / "other-tokens.toml", "stranger")
    user_id, _, password = new_user(synapse, "stranger")
    gateway = start_gateway(synapse.base, *link_pairing.gateway_args(), "--log", "info")
    token = SimToken(f"127.0.0.1:{gateway.port}", user_id, password, tmp_path / "stranger", "stranger",
                     link=material).start()
    try:
        [line] = token.wait_for("error ", timeout=60)
        assert "refused this token's credential" in line, line
        time.sleep(1)
        assert not token.find("logged-in"), token.lines
        # The gateway's log says so too.
        for _ in range(50):
            gateway.proc.log.seek(0)
            log = re.sub(r"\x1b\[[0-9;]*m", "", gateway.proc.log.read().decode(errors="replace"))
            if "refused" in log:
                break
            time.sleep(0.1)
        assert "EDHOC refused" in log or "message_3 refused" in log, log[-2000:]
        print("\ngateway: " + next(l for l in log.splitlines() if "refused" in l).strip())
    finally:
        token.stop()
        stop_process(gateway.proc)


def test_a_plain_token_is_refused_by_a_linked_gateway(synapse, link_pairing, tokens):
    # A gateway that vouches for loopback: plain jeton-core answers no Echo challenge, and this
    # is about what comes after, the access token in clear.
    gateway = start_gateway(synapse.base, *link_pairing.gateway_args(), "--validated-prefixes", "127.0.0.0/8")
    try:
        user = new_user(synapse, "plain")
        token = tokens(f"127.0.0.1:{gateway.port}", user, "plain", link=False)
        # The login carries no access token; the first request that does is refused.
        [line] = token.wait_for("error ", timeout=60)
        assert "4.01" in line or "4.03" in line, line
        assert not token.find("keys-published"), token.lines
    finally:
        stop_process(gateway.proc)


def _gateway_log(gateway):
    gateway.proc.log.seek(0)
    return gateway.proc.log.read().decode(errors="replace")


def _wait_for_log(gateway, text, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = _gateway_log(gateway)
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the gateway's log: {_gateway_log(gateway)[-2000:]}")


def test_a_token_paired_while_the_gateway_runs_is_accepted_after_sighup(synapse, tmp_path):
    identity, tokens_file = tmp_path / "gateway-identity.toml", tmp_path / "gateway-tokens.toml"
    pair(tmp_path / "first.link", identity, tokens_file, "first")
    gateway = start_gateway(synapse.base, "--link-identity", str(identity), "--link-tokens", str(tokens_file),
                            "--compat-plain-msc3079", "false", "--log", "info")
    # Paired while the gateway runs: refused until the gateway reads its tokens file again.
    late = pair(tmp_path / "late.link", identity, tokens_file, "late")
    user_id, _, password = new_user(synapse, "late")
    token = SimToken(f"127.0.0.1:{gateway.port}", user_id, password, tmp_path / "late", "late", link=late).start()
    try:
        [line] = token.wait_for("error ", timeout=60)
        assert "refused this token's credential" in line, line
        gateway.proc.send_signal(signal.SIGHUP)
        log = _wait_for_log(gateway, "SIGHUP: reloaded the authorised tokens")
        assert re.search(r"tokens=2\b", log), log[-2000:]
        # The token tries again by itself (every 10 s), gets in, and its login goes through.
        [established] = token.wait_for("link-established ", timeout=60)
        token.wait_for("logged-in ", timeout=60)
        # The token and the gateway name the token by the same key id.
        log = _wait_for_log(gateway, "EDHOC complete")
        kid = re.search(r"link-established kid=([0-9a-f]+) gateway-kid=([0-9a-f]+)$", established)
        assert kid, established
        assert re.search(rf"token=late kid={kid.group(1)}\b", log), log[-2000:]
        # Its log goes to a file: no terminal colours in it.
        assert "\x1b[" not in log, log[:500]
    finally:
        token.stop()
        stop_process(gateway.proc)
