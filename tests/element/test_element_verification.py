"""SAS verification between a jeton-sim token and Element's crypto engine (matrix-js-sdk 43,
matrix-sdk-crypto): Element asks and the token accepts, the token asks and Element accepts (the
to-device flow Element uses for a device), and Element's in-room request (the flow Element uses
for another person), which verifies the token's user through their cross-signing keys."""

import pytest

from element_room import token_cross_signs, token_joins_element_room, token_says


def element_and_token_agree(r, rid, since):
    """Both sides show the same numbers; both persons confirm; returns once each side marked the
    other verified."""
    alice = r.alice[0]
    element_numbers = r.element.sas(rid)
    [line] = r.token.wait_for(f"sas {alice} {r.element.device_id} ", since=since)
    assert " ".join(line.split()[3:6]) == element_numbers
    r.element.call("confirm_sas", rid=rid)
    r.token.command("confirm")
    r.token.wait_for(f"verified {alice} {r.element.device_id}", since=since)
    r.element.wait_event(lambda e: e["event"] == "verification_done" and e["rid"] == rid,
                         "Element's verification to finish")
    assert r.token.find("verification-cancelled", since) == []


def token_reads_element_as_verified(r, since):
    body = f"from a verified device ({since})"
    r.element.send_text(r.room_id, body)
    line = token_says(r.token, r.room_id, r.alice[0], body, since=since)
    assert line.split()[4] == "e2e-verified", line


def test_element_asks_and_the_token_accepts(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element)
    bob, alice = r.bob[0], r.alice[0]
    r.element.wait_device(bob, r.token_device)
    mark = r.token.mark()

    rid = r.element.call("request_verification", user=bob, device=r.token_device)["rid"]
    r.token.wait_for(f"verification-request {alice} {r.element.device_id}", since=mark)
    r.token.command("confirm")  # the board's button: accept
    r.element.phase(rid, "Ready")
    r.element.call("start_sas", rid=rid)
    element_and_token_agree(r, rid, mark)

    status = r.element.device_status(bob, r.token_device)
    assert status["locally_verified"] and status["verified"], status
    token_reads_element_as_verified(r, mark)


def test_the_token_asks_and_element_accepts(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element)
    bob, alice = r.bob[0], r.alice[0]
    # The token learns Element's device from the room: once it reads Element's message.
    r.element.send_text(r.room_id, "hello token")
    token_says(r.token, r.room_id, alice, "hello token")
    mark, seen = r.token.mark(), r.element.mark()

    r.token.command(f"request {alice} {r.element.device_id}")
    request = r.element.wait_event(lambda e: e["event"] == "verification_request", "the token's request", seen)
    assert (request["user"], request["device"], request["room"]) == (bob, r.token_device, None)
    r.element.call("accept_verification", rid=request["rid"])
    element_and_token_agree(r, request["rid"], mark)

    status = r.element.device_status(bob, r.token_device)
    assert status["locally_verified"] and status["verified"], status
    token_reads_element_as_verified(r, mark)


@pytest.mark.xfail(strict=True, reason="issue 13: in-room verification requests and cross-signing on the token")
def test_element_verifies_the_token_user_in_the_room(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element)
    bob, alice = r.bob[0], r.alice[0]
    token_cross_signs(r)
    mark = r.token.mark()

    # Element verifies another person with a request in the room they share.
    rid = r.element.call("request_verification", user=bob, room=r.room_id)["rid"]
    r.token.wait_for(f"verification-request {alice} {r.element.device_id}", since=mark)
    r.token.command("confirm")
    r.element.phase(rid, "Ready")
    r.element.call("start_sas", rid=rid)
    element_and_token_agree(r, rid, mark)

    assert r.element.call("user_status", user=bob)["cross_signing_verified"]
    r.token.command(f"send {r.room_id} from a verified person")
    [event] = r.element.wait_texts(r.room_id, bob, ["from a verified person"])
    assert r.element.shield(r.room_id, event["event_id"]) == ("NONE", None)
