"""A person on Element (matrix-js-sdk 43 with its Rust crypto: matrix-sdk-crypto 0.19) and a
jeton-sim token chat in an encrypted room through the real gateway and Synapse, over the
protected link: from the first message after the join, in bursts, with long messages, and with
a second Element device of the same person."""

import time

import pytest

from e2e_stack import UdpRelay
from element_room import GREETING, token_bodies, token_joins_element_room, token_says

BURST = 10
LINK_LATENCY = 0.1  # seconds each way


def token_shows_all_or_fails(r, bodies, since=0, timeout=60.0):
    """Waits until the token showed the last of `bodies` from alice, or printed an error line
    (then there is no point in waiting); returns what it showed, as (marker, body) pairs."""
    alice = r.alice[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = token_bodies(r.token, r.room_id, alice, since)
        errors = r.token.find("error ", since)
        if errors or (bodies[-1] in [body for _, body in shown]):
            break
        time.sleep(0.1)
    assert r.token.find("error ", since) == []
    return token_bodies(r.token, r.room_id, alice, since)


def test_messages_both_ways_right_after_the_token_joins(synapse, gateway, tokens, element):
    # Over a radio-like link (100 ms each way), where the token's own exchanges after the join
    # (alice's device keys) overlap the notification that brings Element's room key. On
    # loopback the same loss happens in about 1 run in 8.
    relay = UdpRelay(gateway.address, delay=LINK_LATENCY)
    try:
        r = token_joins_element_room(synapse, gateway, tokens, element, greet=False, via=relay)
        alice, bob = r.alice[0], r.bob[0]

        # alice writes the moment she sees the token arrive, as people do.
        r.element.send_text(r.room_id, "welcome, token")
        token_says(r.token, r.room_id, alice, "welcome, token", timeout=20)
        print(f"\nfirst message shown on the token {time.monotonic() - r.seen_at:.2f} s after Element saw the join "
              f"(link latency {LINK_LATENCY * 1000:.0f} ms each way)")

        r.token.command(f"send {r.room_id} thanks, alice")
        [reply] = r.element.wait_texts(r.room_id, bob, ["thanks, alice"])
        r.element.send_text(r.room_id, "and a second one")
        token_says(r.token, r.room_id, alice, "and a second one", timeout=20)

        assert token_bodies(r.token, r.room_id, alice) == [("e2e", "welcome, token"), ("e2e", "and a second one")]
        assert r.token.find("undecryptable") == [] and r.token.find("room-key-rejected") == []
        assert r.element.undecryptable(r.room_id, bob) == []
        assert reply["encrypted"]
    finally:
        relay.close()


def test_a_burst_sent_before_the_join_all_shows(synapse, gateway, tokens, element):
    # alice writes while the token's person has not accepted the invite yet: Element shares the
    # room key with invited devices, and the token's join brings all of it at once (its /sync
    # timeline is limited to 10 events, the join among them).
    r = token_joins_element_room(synapse, gateway, tokens, element, join=False)
    bodies = [f"burst {i:02d}" for i in range(BURST)]
    for body in bodies:
        r.element.send_text(r.room_id, body)
    r.token.command(f"join {r.room_id}")
    started = time.monotonic()
    shown = token_shows_all_or_fails(r, bodies)
    print(f"\n{len(shown)} of {BURST} messages shown on the token {time.monotonic() - started:.2f} s after its join")
    assert shown == [("e2e", body) for body in bodies]
    assert r.token.find("undecryptable") == []


def test_long_messages_arriving_with_the_join_all_show(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element, join=False)
    # Five paragraphs of 600 characters: more than 4 KB in one /sync, each far below the
    # largest message the token decrypts.
    bodies = [f"paragraph {i}: " + "lorem ipsum " * 50 for i in range(5)]
    for body in bodies:
        r.element.send_text(r.room_id, body)
    r.token.command(f"join {r.room_id}")
    shown = token_shows_all_or_fails(r, bodies)
    assert shown == [("e2e", body) for body in bodies]

    # And the token goes on reading.
    mark = r.token.mark()
    r.element.send_text(r.room_id, "still there?")
    token_says(r.token, r.room_id, r.alice[0], "still there?", since=mark)


def test_a_second_element_device_reads_the_token(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element)
    alice, bob = r.alice[0], r.bob[0]
    [before] = r.element.wait_texts(r.room_id, bob, [GREETING])

    # alice opens Element on her phone too, and writes from it.
    phone = element(r.alice, "element-alice-phone")
    phone.wait_member(r.room_id, bob)
    phone.send_text(r.room_id, "now on my phone")
    token_says(r.token, r.room_id, alice, "now on my phone")

    # The token's next message reaches both of alice's devices.
    r.token.command(f"send {r.room_id} both of you")
    for device in (r.element, phone):
        [event] = device.wait_texts(r.room_id, bob, ["both of you"])
        assert event["encrypted"]
    assert r.element.undecryptable(r.room_id, bob) == []
    # The phone logged in after the greeting: it sees it in the history, without its key.
    assert [e["event_id"] for e in phone.undecryptable(r.room_id, bob)] == [before["event_id"]]
