"""What Element shows about the token's trust, and what the token shows when Element keeps a
room key from it: the shield next to the token's messages (matrix-js-sdk's
getEncryptionInfoForEvent, non-strict as Element Web draws it), cross-signing bootstrapped on
the token, and Element's "exclude insecure devices" mode (MSC4153), in which Element shares
room keys only with devices their owner cross-signed and sends the others
m.room_key.withheld."""

import time

from element_room import token_cross_signs, token_joins_element_room, token_says

WITHHELD_REASONS = ("blacklisted", "unverified", "unauthorised", "unavailable", "no_olm")


def token_message_shield(r, body):
    r.token.command(f"send {r.room_id} {body}")
    [event] = r.element.wait_texts(r.room_id, r.bob[0], [body])
    return r.element.shield(r.room_id, event["event_id"])


def test_cross_signing_on_the_token_turns_the_shield_from_red_to_none(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element)
    # A device its owner has not cross-signed: Element's red shield.
    assert token_message_shield(r, "before cross-signing") == ("RED", "UNSIGNED_DEVICE")

    token_cross_signs(r)
    assert r.element.call("user_status", user=r.bob[0])["has_cross_signing_keys"]
    assert token_message_shield(r, "after cross-signing") == ("NONE", None)


def test_element_excluding_insecure_devices_still_reaches_the_token(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element)
    token_cross_signs(r)
    r.element.call("isolation", mode="only_signed")
    mark = r.token.mark()

    bodies = [f"only to signed devices {i}" for i in range(3)]
    for body in bodies:
        r.element.send_text(r.room_id, body)
    for body in bodies:
        token_says(r.token, r.room_id, r.alice[0], body, since=mark)
    assert r.token.find("undecryptable", mark) == []
    # ... and Element, which in this mode reads only cross-signed devices, reads the token.
    assert token_message_shield(r, "a signed device answers") == ("NONE", None)


def test_a_withheld_room_key_is_shown_with_its_reason(synapse, gateway, tokens, element):
    r = token_joins_element_room(synapse, gateway, tokens, element)
    # The token is not cross-signed: in this mode Element withholds the room key from it.
    r.element.call("isolation", mode="only_signed")
    mark = r.token.mark()
    r.element.send_text(r.room_id, "not for insecure devices")

    [line] = r.token.wait_for(f"undecryptable {r.room_id} {r.alice[0]} ", since=mark)
    # Give a withheld notice that arrives after the event time to show (the token may show
    # the event first and the reason when the notice comes).
    time.sleep(2)
    lines = r.token.find(f"undecryptable {r.room_id} {r.alice[0]} ", mark) + r.token.find("withheld", mark)
    assert any("unverified" in line for line in lines), lines
    assert r.token.find(f"message {r.room_id} {r.alice[0]} ", mark) == []


def test_a_room_key_the_token_withholds_reaches_element_with_its_reason(synapse, gateway, tokens, element):
    # The token shares room keys with verified devices only; Element's device is not one.
    r = token_joins_element_room(synapse, gateway, tokens, element, greet=False,
                                 sim_args=["--share-keys-only-with-verified"])
    body = "for verified devices only"
    r.token.command(f"send {r.room_id} {body}")
    # matrix-sdk-crypto reads the token's m.room_key.withheld (m.unverified) and says why.
    [event] = r.element.wait_until(
        lambda: [e for e in r.element.undecryptable(r.room_id, r.bob[0])
                 if e["failure"] == "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE"],
        "the token's message, withheld from an unverified device")
    assert r.element.texts(r.room_id, r.bob[0]) == []
