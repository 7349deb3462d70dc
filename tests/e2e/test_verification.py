"""SAS device verification between a jeton-sim token and matrix-nio 0.26 (vodozemac) through the
real gateway and Synapse: nio starts and the token accepts, the token starts and nio accepts, a
person who sees different numbers cancels, and tampered keys and MACs are refused. Timeouts are
tested on the virtual clock of jeton-core's harness (firmware/core/tests/matrix/verification.rs).

nio 0.26 writes the accept's commitment as hex where the specification says unpadded base64
(https://github.com/matrix-nio/matrix-nio/issues/570). The token reads both forms, and writes base64;
so that nio can check the token's commitment, the tests where nio starts give nio's check the
specification's base64, as nio's pending fix does (matrix-nio pull request 572). nio's own
commitment stays hex. nio's emoji are computed wrongly (matrix-nio pull request 573): the decimals
are compared.
"""

import asyncio
import base64
import hashlib

import pytest

from e2e_stack import NioPeer, gateway_address, new_user


@pytest.fixture
def spec_commitment_check(monkeypatch):
    """nio's check of a peer's commitment in unpadded base64, as the specification says."""
    from nio.api import Api
    from nio.crypto.sas import Sas

    def check(self, key):
        content = Api.to_canonical_json(self.start_verification().content)
        digest = hashlib.sha256(key.encode() + content.encode()).digest()
        return self.commitment == base64.b64encode(digest).decode().rstrip("=")

    monkeypatch.setattr(Sas, "_check_commitment", check)


def test_nio_starts_and_the_token_accepts(synapse, gateway, tokens, tmp_path, spec_commitment_check):
    asyncio.run(_nio_starts(synapse, gateway, tokens, tmp_path))


def test_the_token_starts_and_nio_accepts(synapse, gateway, tokens, tmp_path):
    asyncio.run(_token_starts(synapse, gateway, tokens, tmp_path))


def test_different_numbers_end_with_mismatched_sas_on_both_sides(synapse, gateway, tokens, tmp_path,
                                                                  spec_commitment_check):
    asyncio.run(_mismatch(synapse, gateway, tokens, tmp_path))


def test_a_tampered_key_or_mac_is_refused(synapse, gateway, tokens, tmp_path, spec_commitment_check):
    asyncio.run(_tampered(synapse, gateway, tokens, tmp_path))


def test_room_keys_can_be_kept_from_unverified_devices(synapse, gateway, tokens, tmp_path):
    asyncio.run(_verified_only(synapse, gateway, tokens, tmp_path))


class Pair:
    """A token and alice's nio client in an encrypted room, each knowing the other's device."""

    def __init__(self, alice, tok, tok_user, tok_device, nio):
        self.alice, self.tok, self.tok_user, self.tok_device, self.nio = alice, tok, tok_user, tok_device, nio
        self.to_device = []  # verification to-device events nio received: (type, content)
        from nio import KeyVerificationEvent, UnknownToDeviceEvent

        nio.client.add_to_device_callback(self._on_to_device, (KeyVerificationEvent, UnknownToDeviceEvent))

    async def _on_to_device(self, event):
        kind = event.source.get("type", "")
        if kind.startswith("m.key.verification."):
            self.to_device.append((kind, event.source.get("content", {})))

    @property
    def nio_device(self):
        return self.nio.client.device_id

    def token_device_at_nio(self):
        return self.nio.client.device_store[self.tok_user][self.tok_device]

    async def received(self, kind, what):
        return await self.nio.wait(lambda: [c for t, c in self.to_device if t == kind], what)

    async def cancelled_with(self, code):
        """Waits until nio received a cancel with `code` from the token."""
        return await self.nio.wait(
            lambda: [c for t, c in self.to_device if t == "m.key.verification.cancel" and c.get("code") == code],
            f"the token's {code}")

    async def nio_sas(self, predicate, what):
        """The newest verification nio knows once `predicate(sas)` holds."""
        def found():
            verifications = list(self.nio.client.key_verifications.values())
            return verifications and predicate(verifications[-1]) and verifications[-1]
        return await self.nio.wait(found, what)

    async def nio_decimals(self):
        sas = await self.nio_sas(lambda s: getattr(s, "established_sas", None) is not None,
                                 "nio's short authentication string")
        return sas, " ".join(str(d) for d in sas.get_decimals())

    async def token_decimals(self, since):
        [line] = await self.tok.expect(f"sas {self.alice[0]} {self.nio_device} ", since=since)
        return " ".join(line.split()[3:6])

    async def nio_starts(self):
        """nio starts, the token's person accepts, keys are exchanged: (mark, nio's
        verification, nio's decimals, the token's decimals)."""
        mark = self.tok.mark()
        response = await self.nio.client.start_key_verification(self.token_device_at_nio())
        assert not hasattr(response, "status_code"), response
        await self.tok.expect(f"verification-request {self.alice[0]} {self.nio_device}", since=mark)
        self.tok.command("confirm")
        sas, nio_numbers = await self.nio_decimals()
        return mark, sas, nio_numbers, await self.token_decimals(mark)

    async def both_confirm(self, sas, mark, token_first):
        """Both persons say the numbers match; returns the token's done once each side
        marked the other verified."""
        if token_first:
            self.tok.command("confirm")
        await self.nio.client.confirm_short_auth_string(sas.transaction_id)
        if not token_first:
            self.tok.command("confirm")
        await self.tok.expect(f"verified {self.alice[0]} {self.nio_device}", since=mark)
        await self.nio.wait(lambda: sas.verified, "nio to check the token's MAC")
        await self.nio.wait(lambda: self.token_device_at_nio().verified, "nio to mark the token verified")
        [done] = await self.received("m.key.verification.done", "the token's done")
        return done

    async def token_starts(self):
        """The token starts, nio accepts, keys are exchanged: as `nio_starts`."""
        mark = self.tok.mark()
        self.tok.command(f"verify {self.alice[0]} {self.nio_device}")
        sas = await self.nio_sas(lambda s: not s.we_started_it, "the token's start at nio")
        await self.nio.client.accept_key_verification(sas.transaction_id)
        _, nio_numbers = await self.nio_decimals()
        return mark, sas, nio_numbers, await self.token_decimals(mark)


async def _pair(synapse, gateway, tokens, tmp_path, sim_args=()):
    alice = new_user(synapse, "alice")
    one = new_user(synapse, "tokver")
    tok = tokens(gateway_address(gateway), one, "tok1", [alice[0]], sim_args)
    [logged_in] = await tok.expect("logged-in ")
    tok_device = logged_in.split()[2]
    await tok.expect("keys-published")
    nio = await NioPeer.login(synapse.base, alice, tmp_path / "nio-alice", "nio-alice")
    room = await nio.create_encrypted_room(invite=[one[0]])
    await tok.expect(f"joined {room}")
    await nio.wait(lambda: list(nio.client.device_store.active_user_devices(one[0])), "the token's device")
    # nio shares room keys with the members it saw join (not the invited ones).
    await nio.wait(lambda: one[0] in nio.client.rooms[room].users and one[0] not in nio.client.rooms[room].invited_users,
                   "the token's join at nio")
    # The token learns nio's device from the room's members: once it reads nio's message, its
    # keys/query is done.
    await nio.send_text(room, "hello token")
    await tok.expect(f"message {room} {alice[0]} ")
    return Pair(alice, tok, one[0], tok_device, nio), room


async def _nio_starts(synapse, gateway, tokens, tmp_path):
    pair, room = await _pair(synapse, gateway, tokens, tmp_path)
    try:
        tok, nio = pair.tok, pair.nio
        mark, sas, nio_numbers, token_numbers = await pair.nio_starts()
        assert token_numbers == nio_numbers

        # Both persons see the same numbers and confirm, nio first.
        done = await pair.both_confirm(sas, mark, token_first=False)
        assert done["transaction_id"] == sas.transaction_id
        assert tok.find("verification-cancelled", since=mark) == []
    finally:
        await pair.nio.close()


async def _token_starts(synapse, gateway, tokens, tmp_path):
    pair, room = await _pair(synapse, gateway, tokens, tmp_path)
    try:
        tok, nio = pair.tok, pair.nio
        mark, sas, nio_numbers, token_numbers = await pair.token_starts()
        assert token_numbers == nio_numbers

        # This time the token's person confirms first.
        await pair.both_confirm(sas, mark, token_first=True)

        # The token marks nio's messages as coming from a verified device.
        await nio.send_text(room, "from a verified device")
        [line] = await tok.expect(f"message {room} {pair.alice[0]} ", since=mark)
        assert line.endswith(" e2e-verified from a verified device"), line
    finally:
        await pair.nio.close()


async def _mismatch(synapse, gateway, tokens, tmp_path):
    pair, room = await _pair(synapse, gateway, tokens, tmp_path)
    try:
        tok, nio = pair.tok, pair.nio
        # The token's person sees different numbers and presses cancel.
        mark, sas, _, _ = await pair.nio_starts()
        tok.command("cancel")
        await tok.expect(f"verification-cancelled {pair.alice[0]} {pair.nio_device} m.mismatched_sas by-token",
                         since=mark)
        [cancel] = await pair.cancelled_with("m.mismatched_sas")
        assert cancel["transaction_id"] == sas.transaction_id
        await nio.wait(lambda: sas.canceled, "nio to end the verification")
        assert not sas.verified and not pair.token_device_at_nio().verified

        # nio's person sees different numbers and rejects them.
        mark, sas, _, _ = await pair.token_starts()
        await nio.client.cancel_key_verification(sas.transaction_id, reject=True)
        await tok.expect(f"verification-cancelled {pair.alice[0]} {pair.nio_device} m.mismatched_sas by-peer",
                         since=mark)
        tok.command("confirm")
        await tok.expect("error ", since=mark)
        assert tok.find("verified ", since=0) == []
        assert not pair.token_device_at_nio().verified
    finally:
        await pair.nio.close()


async def _tampered(synapse, gateway, tokens, tmp_path):
    from nio.event_builders import ToDeviceMessage
    from vodozemac import Sas as VodozemacSas

    pair, room = await _pair(synapse, gateway, tokens, tmp_path)
    try:
        tok, nio = pair.tok, pair.nio
        user, device = pair.tok_user, pair.tok_device

        # A key other than the one nio committed to, sent before nio's own.
        mark = tok.mark()
        tok.command(f"verify {pair.alice[0]} {pair.nio_device}")
        sas = await pair.nio_sas(lambda s: not s.we_started_it, "the token's start")
        await nio.client.accept_key_verification(sas.transaction_id)
        forged = VodozemacSas().public_key.to_base64()
        await nio.client.to_device(ToDeviceMessage(
            "m.key.verification.key", user, device, {"transaction_id": sas.transaction_id, "key": forged}))
        await tok.expect(f"verification-cancelled {pair.alice[0]} {pair.nio_device} m.mismatched_commitment "
                         "by-token", since=mark)
        await pair.cancelled_with("m.mismatched_commitment")
        assert tok.find("sas ", since=mark) == []

        # A MAC that does not cover nio's device key.
        mark, sas, _, _ = await pair.nio_starts()
        tok.command("confirm")
        key_id = f"ed25519:{pair.nio_device}"
        info = (f"MATRIX_KEY_VERIFICATION_MAC{pair.alice[0]}{pair.nio_device}{user}{device}"
                f"{sas.transaction_id}")
        mac = sas.established_sas.calculate_mac
        forged_key = VodozemacSas().public_key.to_base64()
        await nio.client.to_device(ToDeviceMessage("m.key.verification.mac", user, device, {
            "transaction_id": sas.transaction_id,
            "mac": {key_id: mac(forged_key, info + key_id)},
            "keys": mac(key_id, info + "KEY_IDS"),
        }))
        await tok.expect(f"verification-cancelled {pair.alice[0]} {pair.nio_device} m.key_mismatch by-token",
                         since=mark)
        await pair.cancelled_with("m.key_mismatch")
        assert tok.find("verified ", since=0) == []
        assert not pair.token_device_at_nio().verified
    finally:
        await pair.nio.close()


async def _verified_only(synapse, gateway, tokens, tmp_path):
    pair, room = await _pair(synapse, gateway, tokens, tmp_path, ["--share-keys-only-with-verified"])
    try:
        tok, nio = pair.tok, pair.nio
        # Before verification nio's device gets no room key: it cannot read the token.
        tok.command(f"send {room} before verification")
        await tok.expect("delivered ")
        await nio.wait(lambda: nio.undecrypted_from(room, pair.tok_user), "the token's message, undecryptable")
        assert nio.texts_from(room, pair.tok_user) == []

        mark, sas, _, _ = await pair.token_starts()
        await pair.both_confirm(sas, mark, token_first=False)

        # Verified now: the room key follows, and nio reads the next message.
        tok.command(f"send {room} after verification")
        await nio.wait_for_text(room, pair.tok_user, "after verification")
    finally:
        await pair.nio.close()
