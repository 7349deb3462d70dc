"""The starting point the Element scenarios share: a person on Element (alice) and a jeton-sim
token of another account in an encrypted room, as a person would set it up."""

import time
from dataclasses import dataclass

from e2e_stack import SimToken, gateway_address, new_user
from element_peer import ElementDevice


@dataclass
class Room:
    alice: tuple  # (user_id, localpart, password)
    bob: tuple  # the token's account
    element: ElementDevice
    token: SimToken
    token_device: str
    room_id: str
    seen_at: float  # time.monotonic() when Element saw the token join (or, not joining, invited)


GREETING = "hello, the token is here"


def token_joins_element_room(synapse, gateway, tokens, element, join=True, greet=True, via=None, sim_args=()):
    """alice on Element (cross-signing set up, as Element does at a new account's first login)
    creates an encrypted room and invites bob's token. With `join`, the token joins by itself
    (--auto-join-from alice) and this returns once Element's sync shows the join; else it
    returns once Element shows the token invited, and the token's person joins later
    (`join <room>`).

    With `greet` (and `join`), the token writes GREETING first and Element reads it: the token
    has then looked up alice's devices, and what Element sends next does not meet issue 13's
    lost-notification race (see test_messages_both_ways_right_after_the_token_joins, which
    does not greet: Element writes the moment it sees the join). `via`: a UdpRelay between the
    token and the gateway."""
    alice, bob = new_user(synapse, "alice"), new_user(synapse, "bob")
    token = tokens(via.address if via else gateway_address(gateway), bob, "tok", [alice[0]] if join else [], sim_args)
    [logged_in] = token.wait_for("logged-in ")
    token.wait_for("keys-published")
    device = element(alice, "element-alice")
    assert device.call("bootstrap_cross_signing")["ready"]
    room_id = device.create_encrypted_room(invite=[bob[0]])
    token.wait_for(f"joined {room_id}" if join else f"invited {room_id}")
    device.wait_member(room_id, bob[0], "join" if join else "invite")
    seen_at = time.monotonic()
    if join and greet:
        token.command(f"send {room_id} {GREETING}")
        device.wait_texts(room_id, bob[0], [GREETING])
    return Room(alice, bob, device, token, logged_in.split()[2], room_id, seen_at)


def token_says(token, room, sender, body, since=0, timeout=60.0):
    """Waits for the token's shell line showing `body` from `sender`; returns the line."""
    deadline = time.monotonic() + timeout
    while True:
        for line in token.find(f"message {room} {sender} ", since):
            if line.split(" ", 5)[5] == body:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the token never showed {body!r} from {sender} in {timeout}s; it showed "
                f"{token.find(f'message {room} ', since)}, "
                f"{token.find('undecryptable', since)}, {token.find('room-key-rejected', since)}")
        time.sleep(0.1)


def token_bodies(token, room, sender, since=0):
    """What the token showed from `sender` in `room`, as (e2e marker, body) pairs."""
    return [tuple(line.split(" ", 5)[4:6]) for line in token.find(f"message {room} {sender} ", since)]


def token_cross_signs(r, timeout=60.0):
    """The token's person bootstraps cross-signing (`xsign`: master, self-signing and
    user-signing keys made on the token, uploaded with the account password, its own device
    signed); returns once Element sees the token's device signed by its owner. An error line on
    the token ends the wait at once."""
    mark = r.token.mark()
    r.token.command("xsign")
    deadline = time.monotonic() + timeout
    while True:
        errors = r.token.find("error ", mark)
        assert errors == [], f"the token could not bootstrap cross-signing: {errors}"
        if r.element.device_status(r.bob[0], r.token_device).get("signed_by_owner"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Element never saw the token's device signed by its owner in {timeout}s; "
                                 f"the token said {r.token.lines[mark:]}")
        time.sleep(0.2)
