"""A paired token chats with matrix-nio through a linked gateway while a flood of datagrams from
200 loopback addresses that never proved themselves (duplicates, EDHOC message_1, random paths,
Block1 starts, garbage; tests/gateway/flood.py) hits the gateway for at least 60 s (issue 15).
Prints and asserts: every message arrives, the send round trip p99 is printed beside the one without
the flood (target 3x; asserted within 10x), the flood gets back at most 3x its bytes, and the gateway's RSS grows less than its
memory budget (the default, 256 MiB)."""

import asyncio
import time

import pytest

from e2e_stack import REPO, _load, setup_room

_flood = _load("jeton_gateway_suite_flood", REPO / "tests" / "gateway" / "flood.py")
Flood, p99, rss_bytes = _flood.Flood, _flood.p99, _flood.rss_bytes

QUIET_MESSAGES = 10
FLOOD_SECONDS = 60
MEMORY_BUDGET = 256 * 2**20


@pytest.fixture(autouse=True)
def _linked(link_pairing):
    if link_pairing is None:
        pytest.skip("the suite runs with the link unprotected (JETON_E2E_PLAIN_LINK=1)")


async def send_round_trip(tok, nio, room, sender, text):
    """Seconds from the token's `send` to the text reaching nio."""
    start = time.monotonic()
    tok.command(f"send {room} {text}")
    await nio.wait_for_text(room, sender, text)
    return time.monotonic() - start


def test_a_token_chats_through_a_flood_of_unproven_datagrams(synapse, gateway, tokens, tmp_path):
    asyncio.run(_chat_under_flood(synapse, gateway, tokens, tmp_path))


async def _chat_under_flood(synapse, gateway, tokens, tmp_path):
    nio = flood = None
    try:
        _, one, _, tok1, _, nio, room = await setup_room(synapse, gateway, tokens, tmp_path)
        quiet = [await send_round_trip(tok1, nio, room, one[0], f"quiet {i}") for i in range(QUIET_MESSAGES)]
        rss_before = rss_bytes(gateway.proc.pid)
        flood = Flood(gateway.address)
        flood.start()
        loud, end = [], time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < end:
            loud.append(await send_round_trip(tok1, nio, room, one[0], f"loud {len(loud)}"))
        rss_flood = rss_bytes(gateway.proc.pid)
        await asyncio.to_thread(flood.finish)
    finally:
        if flood:
            flood.finish()
        if nio:
            await nio.close()
    print(f"\nflood: {flood.report(FLOOD_SECONDS)}")
    print(f"token send round trip p99: {p99(quiet) * 1000:.0f} ms without the flood ({len(quiet)} messages), "
          f"{p99(loud) * 1000:.0f} ms with it ({len(loud)} messages, all arrived)")
    print(f"gateway RSS: {rss_before / 2**20:.1f} MiB before, {rss_flood / 2**20:.1f} MiB under the flood")
    # The 3x target is a figure printed above; on a shared CI machine the quiet baseline is noisy,
    # so the assertion only guards against a flood that stalls the token.
    assert p99(loud) <= 10 * p99(quiet), "the flood stalls the token"
    assert flood.received <= 3 * flood.sent, "no amplification towards unproven addresses"
    assert rss_flood - rss_before <= MEMORY_BUDGET, "memory within the budget"
