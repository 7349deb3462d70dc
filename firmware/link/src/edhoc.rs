//! EDHOC (RFC 9528) as the link runs it, on lakers: method 3 (static Diffie-Hellman keys on
//! both sides), cipher suite 2, credentials referenced by kid, no EAD, no message_4. The
//! token initiates ([`Initiator`]), the gateway responds ([`Responder`]); both end with the
//! OSCORE Master Secret and Salt of RFC 9528 appendix A.1 ([`OscoreMaterial`]).
//!
//! Each state is a type: a handshake cannot be driven out of order, and a failed step
//! consumes the state.

use lakers::{
    ConnId, CredentialTransfer, EDHOCMethod, EDHOCSuite, EdhocInitiator, EdhocInitiatorProcessedM2,
    EdhocInitiatorProcessingM2, EdhocInitiatorWaitM2, EdhocMessageBuffer, EdhocResponder,
    EdhocResponderWaitM3, IdCred,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::credential::{Credential, Identity, Kid};
use crate::crypto_backend::LinkCrypto;
use crate::oscore::{Id, SecurityContext};
use crate::seeded_rng::SeededRng;
use crate::{HandshakeError, OscoreError};

/// The EDHOC option of RFC 9668: a request that carries EDHOC message_3 ahead of its OSCORE
/// ciphertext (payload `message_3 || ciphertext`, the OSCORE kid being C_R).
pub const EDHOC_OPTION: u16 = 21;

/// The longest EDHOC message lakers handles.
pub const MAX_EDHOC_MESSAGE_LEN: usize = lakers::MAX_MESSAGE_SIZE_LEN;
/// Bytes of the OSCORE Master Secret EDHOC exports (the key length of AES-CCM-16-64-128).
pub const MASTER_SECRET_LEN: usize = 16;
/// Bytes of the OSCORE Master Salt EDHOC exports (RFC 9528 appendix A.1).
pub const MASTER_SALT_LEN: usize = 8;

/// An EDHOC message to send.
#[derive(Clone)]
pub struct EdhocMessage(EdhocMessageBuffer);

impl EdhocMessage {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl core::fmt::Debug for EdhocMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "EdhocMessage({} bytes)", self.0.as_slice().len())
    }
}

/// Whether 32 bytes are the x-coordinate of a point on P-256.
///
/// lakers' ECDH has no way to fail (its reference backend panics on a point off the curve,
/// lakers issue 93; this crate's backend returns a secret no MAC verifies with). The link
/// checks G_X and G_Y here, so such a message is refused as malformed before lakers sees it.
fn is_p256_x(x: &[u8]) -> bool {
    <&[u8; 32]>::try_from(x).is_ok_and(crate::p256::is_x_coordinate)
}

/// G_X in message_1 = (METHOD, SUITES_I, G_X, C_I, ...): skips the method (a small
/// integer) and SUITES_I (an integer or an array of integers).
fn message_1_key(message_1: &[u8]) -> Option<&[u8]> {
    let (_method, rest) = skip_small_uint(message_1)?;
    let (&head, mut rest) = rest.split_first()?;
    match head {
        0x00..=0x18 => {
            if head == 0x18 {
                rest = rest.get(1..)?;
            }
        }
        0x80..=0x97 => {
            for _ in 0..head - 0x80 {
                rest = skip_small_uint(rest)?.1;
            }
        }
        _ => return None,
    }
    match rest {
        [0x58, 0x20, key @ ..] => key.get(..32),
        _ => None,
    }
}

fn skip_small_uint(bytes: &[u8]) -> Option<((), &[u8])> {
    match bytes {
        [0x00..=0x17, rest @ ..] => Some(((), rest)),
        [0x18, _, rest @ ..] => Some(((), rest)),
        _ => None,
    }
}

/// G_Y in message_2 = bstr(G_Y || CIPHERTEXT_2), which must be the whole message.
fn message_2_key(message_2: &[u8]) -> Option<&[u8]> {
    single_byte_string(message_2)?.get(..32)
}

/// The content of a message that is exactly one CBOR byte string (message_2, message_3).
///
/// lakers 0.8 trusts the length in message_3's header and slices past its buffer when the
/// header claims more than the message holds, and underflows on a ciphertext shorter than
/// its tag; the link refuses such messages first.
fn single_byte_string(message: &[u8]) -> Option<&[u8]> {
    let (len, content) = match message {
        [head @ 0x40..=0x57, rest @ ..] => (usize::from(head - 0x40), rest),
        [0x58, len, rest @ ..] => (usize::from(*len), rest),
        _ => return None,
    };
    (content.len() == len).then_some(content)
}

fn buffer(bytes: &[u8]) -> Result<EdhocMessageBuffer, HandshakeError> {
    EdhocMessageBuffer::new_from_slice(bytes).map_err(|_| HandshakeError::Malformed)
}

/// What a completed handshake yields: the OSCORE input parameters (RFC 9528 appendix A.1)
/// and the peer's credential id.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct OscoreMaterial {
    master_secret: [u8; MASTER_SECRET_LEN],
    master_salt: [u8; MASTER_SALT_LEN],
    #[zeroize(skip)]
    sender_id: Id,
    #[zeroize(skip)]
    recipient_id: Id,
    #[zeroize(skip)]
    peer_kid: Kid,
}

impl core::fmt::Debug for OscoreMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OscoreMaterial")
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .field("peer_kid", &self.peer_kid)
            .finish_non_exhaustive()
    }
}

impl OscoreMaterial {
    /// The OSCORE security context these parameters derive.
    pub fn security_context(&self) -> Result<SecurityContext, OscoreError> {
        SecurityContext::derive(
            &self.master_secret,
            &self.master_salt,
            self.sender_id.as_bytes(),
            self.recipient_id.as_bytes(),
        )
    }

    /// The kid of the peer's credential: which token (on the gateway) this context is for.
    pub fn peer_kid(&self) -> &Kid {
        &self.peer_kid
    }

    /// This endpoint's OSCORE sender id (the peer's connection identifier).
    pub fn sender_id(&self) -> &Id {
        &self.sender_id
    }

    /// This endpoint's OSCORE recipient id (its own connection identifier).
    pub fn recipient_id(&self) -> &Id {
        &self.recipient_id
    }

    /// The Master Secret, for tests comparing both ends.
    #[cfg(test)]
    pub(crate) fn master_secret(&self) -> &[u8] {
        &self.master_secret
    }
}

fn material<F>(
    mut exporter: F,
    own_c: &ConnId,
    peer_c: &ConnId,
    peer_kid: Kid,
) -> Result<OscoreMaterial, HandshakeError>
where
    F: FnMut(u8, usize) -> [u8; lakers::MAX_BUFFER_LEN],
{
    let mut secret = exporter(0, MASTER_SECRET_LEN);
    let mut salt = exporter(1, MASTER_SALT_LEN);
    let mut out = OscoreMaterial {
        master_secret: [0; MASTER_SECRET_LEN],
        master_salt: [0; MASTER_SALT_LEN],
        // RFC 9528 appendix A.1: one's OSCORE Sender ID is the peer's connection id.
        sender_id: Id::new(peer_c.as_slice()).map_err(|_| HandshakeError::InvalidConnectionId)?,
        recipient_id: Id::new(own_c.as_slice()).map_err(|_| HandshakeError::InvalidConnectionId)?,
        peer_kid,
    };
    out.master_secret.copy_from_slice(
        secret
            .get(..MASTER_SECRET_LEN)
            .unwrap_or(&[0; MASTER_SECRET_LEN]),
    );
    out.master_salt
        .copy_from_slice(salt.get(..MASTER_SALT_LEN).unwrap_or(&[0; MASTER_SALT_LEN]));
    secret.zeroize();
    salt.zeroize();
    Ok(out)
}

/// The token's side: start with [`Initiator::start`]. Only lakers' state and C_I wait for
/// message_2: the token's identity and the pinned gateway credential come with it, from
/// wherever the caller keeps them.
#[derive(Debug)]
pub struct Initiator {
    state: EdhocInitiatorWaitM2<LinkCrypto>,
    c_i: ConnId,
}

impl Initiator {
    /// Starts a handshake: returns the state waiting for message_2 and message_1 to send.
    /// `seed` is 32 fresh bytes from the platform's CSPRNG.
    pub fn start(seed: [u8; 32]) -> Result<(Initiator, EdhocMessage), HandshakeError> {
        let initiator = EdhocInitiator::new(
            LinkCrypto::new(SeededRng::new(seed)),
            EDHOCMethod::StatStat,
            EDHOCSuite::CipherSuite2,
        );
        let (state, message_1) = initiator.prepare_message_1(None, &None)?;
        // lakers picks C_I inside message_1: method, SUITES_I, G_X, C_I.
        let c_i = connection_id_at_end(message_1.as_slice())?;
        Ok((Initiator { state, c_i }, EdhocMessage(message_1)))
    }

    /// Verifies message_2 against `gateway`, the gateway's pinned credential, authenticates
    /// the token as `identity`, and returns message_3 and the OSCORE material. The caller
    /// sends message_3 (or combines it with its first OSCORE request, RFC 9668) and may use
    /// the context at once.
    ///
    /// The steps run out of line one after the other, so that the buffers lakers moves
    /// between them are not all on a token's stack at once.
    pub fn process_message_2(
        self,
        identity: &Identity,
        gateway: &Credential,
        message_2: &[u8],
    ) -> Result<(EdhocMessage, OscoreMaterial), HandshakeError> {
        let (processing, c_r, id_cred_r) = parse_message_2(self.state, message_2)?;
        let processed = verify_message_2(processing, identity, gateway, id_cred_r)?;
        prepare_message_3(processed, &self.c_i, &c_r, gateway)
    }
}

/// message_2's framing and G_Y checked, then parsed and decrypted by lakers; no critical EAD
/// and a credential referenced by kid.
#[inline(never)]
fn parse_message_2(
    state: EdhocInitiatorWaitM2<LinkCrypto>,
    message_2: &[u8],
) -> Result<(EdhocInitiatorProcessingM2<LinkCrypto>, ConnId, IdCred), HandshakeError> {
    if !message_2_key(message_2).is_some_and(is_p256_x) {
        return Err(HandshakeError::Malformed);
    }
    let message_2 = buffer(message_2)?;
    let (processing, c_r, id_cred_r, ead_2) = state.parse_message_2(&message_2)?;
    if ead_2.is_some_and(|ead| ead.is_critical) {
        return Err(HandshakeError::Malformed);
    }
    if !id_cred_r.reference_only() {
        return Err(HandshakeError::CredentialByValue);
    }
    Ok((processing, c_r, id_cred_r))
}

/// The gateway's MAC_2 verified against the pinned credential.
#[inline(never)]
fn verify_message_2(
    mut processing: EdhocInitiatorProcessingM2<LinkCrypto>,
    identity: &Identity,
    gateway: &Credential,
    id_cred_r: IdCred,
) -> Result<EdhocInitiatorProcessedM2<LinkCrypto>, HandshakeError> {
    let valid = lakers::credential_check_or_fetch(Some(gateway.inner), id_cred_r)?;
    processing.set_identity(identity.private_key_array(), identity.credential().inner)?;
    Ok(processing.verify_message_2(valid)?)
}

/// message_3 and the OSCORE material exported from the completed handshake.
#[inline(never)]
fn prepare_message_3(
    processed: EdhocInitiatorProcessedM2<LinkCrypto>,
    c_i: &ConnId,
    c_r: &ConnId,
    gateway: &Credential,
) -> Result<(EdhocMessage, OscoreMaterial), HandshakeError> {
    let (waiting, message_3, mut prk_out) =
        processed.prepare_message_3(CredentialTransfer::ByReference, &None)?;
    prk_out.zeroize();
    let mut done = waiting.completed_without_message_4()?;
    let peer_kid = Kid::new(gateway.kid())?;
    let material = material(
        |label, len| done.edhoc_exporter(label, &[], len),
        c_i,
        c_r,
        peer_kid,
    )?;
    Ok((EdhocMessage(message_3), material))
}

/// The last CBOR item of message_1 is C_I; lakers only emits the one-byte integer form.
fn connection_id_at_end(message_1: &[u8]) -> Result<ConnId, HandshakeError> {
    let last = message_1.last().ok_or(HandshakeError::Malformed)?;
    ConnId::from_slice(&[*last]).ok_or(HandshakeError::InvalidConnectionId)
}

/// The gateway's side: [`Responder::respond`] to message_1, then
/// [`Responder::process_message_3`].
#[derive(Debug)]
pub struct Responder {
    state: EdhocResponderWaitM3<LinkCrypto>,
    c_i: ConnId,
    c_r: ConnId,
}

impl Responder {
    /// Answers message_1 (without the CBOR `true` prefix of the CoAP transport) with
    /// message_2, using `c_r` as the responder's connection id (the gateway's OSCORE
    /// recipient id for this token; unique among its contexts and open handshakes). If
    /// `c_r` equals the initiator's C_I this fails with
    /// [`HandshakeError::InvalidConnectionId`]; call again with another `c_r`.
    pub fn respond(
        seed: [u8; 32],
        identity: &Identity,
        message_1: &[u8],
        c_r: &[u8],
    ) -> Result<(Responder, EdhocMessage), HandshakeError> {
        let c_r = ConnId::from_slice(c_r).ok_or(HandshakeError::InvalidConnectionId)?;
        let responder = EdhocResponder::new(
            LinkCrypto::new(SeededRng::new(seed)),
            EDHOCMethod::StatStat,
            identity.private_key_array(),
            identity.credential().inner,
        );
        if !message_1_key(message_1).is_some_and(is_p256_x) {
            return Err(HandshakeError::Malformed);
        }
        let message_1 = buffer(message_1)?;
        let (processed, c_i, ead_1) = responder.process_message_1(&message_1)?;
        if c_i == c_r {
            // RFC 9528 §3.3.2: C_R differs from C_I, as the OSCORE ids derived from them must.
            return Err(HandshakeError::InvalidConnectionId);
        }
        if ead_1.is_some_and(|ead| ead.is_critical) {
            return Err(HandshakeError::Malformed);
        }
        let (state, message_2) =
            processed.prepare_message_2(CredentialTransfer::ByReference, Some(c_r), &None)?;
        Ok((Responder { state, c_i, c_r }, EdhocMessage(message_2)))
    }

    /// The responder's connection id.
    pub fn connection_id(&self) -> &[u8] {
        self.c_r.as_slice()
    }

    /// Verifies message_3 (without the C_R prefix of the CoAP transport). `authorised`
    /// returns the credential for a kid if that token may connect; an unknown kid fails
    /// with [`HandshakeError::UnknownPeer`]. Returns the OSCORE material and a message_4,
    /// which the gateway sends in reply to a stand-alone message_3 (peers that wait for it,
    /// such as aiocoap, get key confirmation) and drops after a combined EDHOC + OSCORE
    /// request, whose protected response confirms the keys.
    pub fn process_message_3(
        self,
        message_3: &[u8],
        authorised: impl FnOnce(&[u8]) -> Option<Credential>,
    ) -> Result<(OscoreMaterial, EdhocMessage), HandshakeError> {
        // At least the 8-byte AEAD tag: lakers 0.8 subtracts it from the length unchecked.
        if single_byte_string(message_3).is_none_or(|ciphertext| ciphertext.len() < 8) {
            return Err(HandshakeError::Malformed);
        }
        let message_3 = buffer(message_3)?;
        let (processing, id_cred_i, ead_3) = self.state.parse_message_3(&message_3)?;
        if ead_3.is_some_and(|ead| ead.is_critical) {
            return Err(HandshakeError::Malformed);
        }
        let kid = match id_cred_i.as_full_value() {
            // {4: h'..'}: a kid of up to 23 bytes.
            [0xA1, 0x04, head, kid @ ..] if *head & 0xE0 == 0x40 => kid,
            _ => return Err(HandshakeError::CredentialByValue),
        };
        let peer_kid = Kid::new(kid)?;
        let credential = authorised(kid).ok_or(HandshakeError::UnknownPeer)?;
        let (processed, _prk_out) = processing.verify_message_3(credential.inner)?;
        let (mut done, message_4) = processed.prepare_message_4(&None)?;
        let material = material(
            |label, len| done.edhoc_exporter(label, &[], len),
            &self.c_r,
            &self.c_i,
            peer_kid,
        )?;
        Ok((material, EdhocMessage(message_4)))
    }
}

/// Splits a CoAP payload that starts with a CBOR-encoded connection identifier (the C_R
/// before message_3, RFC 9528 appendix A.2) into the identifier's bytes and the rest.
pub fn split_connection_id(payload: &[u8]) -> Result<(&[u8], &[u8]), HandshakeError> {
    let (&first, rest) = payload.split_first().ok_or(HandshakeError::Malformed)?;
    match first {
        // An integer -24..=23 is its own one-byte encoding.
        0x00..=0x17 | 0x20..=0x37 => Ok((payload.get(..1).unwrap_or(&[]), rest)),
        0x40..=0x57 => rest
            .split_at_checked(usize::from(first - 0x40))
            .ok_or(HandshakeError::Malformed),
        _ => Err(HandshakeError::InvalidConnectionId),
    }
}

/// The CBOR encoding of a connection identifier, as it prefixes message_3 on CoAP.
pub fn encode_connection_id(id: &[u8], out: &mut [u8; 9]) -> Result<usize, HandshakeError> {
    let conn = ConnId::from_slice(id).ok_or(HandshakeError::InvalidConnectionId)?;
    let cbor = conn.as_cbor();
    out.get_mut(..cbor.len())
        .ok_or(HandshakeError::InvalidConnectionId)?
        .copy_from_slice(cbor);
    Ok(cbor.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, OptionList};

    fn identities() -> (Identity, Identity) {
        (
            Identity::generate([1; 32], b"\x0a", "token-1").unwrap(),
            Identity::generate([2; 32], b"\x0b", "gateway").unwrap(),
        )
    }

    fn run(
        token: &Identity,
        gateway: &Identity,
        pinned: &Credential,
        known: Option<Credential>,
    ) -> Result<(OscoreMaterial, OscoreMaterial, [usize; 4]), HandshakeError> {
        let (initiator, m1) = Initiator::start([3; 32])?;
        let (responder, m2) = Responder::respond([4; 32], gateway, m1.as_bytes(), &[0x05])?;
        let (m3, token_side) = initiator.process_message_2(token, pinned, m2.as_bytes())?;
        let (gateway_side, m4) =
            responder.process_message_3(m3.as_bytes(), |kid| known.filter(|c| c.kid() == kid))?;
        let sizes = [
            m1.as_bytes().len(),
            m2.as_bytes().len(),
            m3.as_bytes().len(),
            m4.as_bytes().len(),
        ];
        Ok((token_side, gateway_side, sizes))
    }

    #[test]
    fn both_ends_derive_one_oscore_context() {
        let (token, gateway) = identities();
        let (t, g, _) = run(
            &token,
            &gateway,
            gateway.credential(),
            Some(*token.credential()),
        )
        .unwrap();
        assert_eq!(t.master_secret(), g.master_secret());
        assert_eq!(t.sender_id(), g.recipient_id());
        assert_eq!(g.sender_id(), t.recipient_id());
        assert_eq!(g.recipient_id().as_bytes(), &[0x05]);
        assert_eq!(g.peer_kid().as_bytes(), b"\x0a");
        assert_eq!(t.peer_kid().as_bytes(), b"\x0b");

        let mut client = t.security_context().unwrap();
        let mut server = g.security_context().unwrap();
        let request = Message {
            code: 0x01,
            options: OptionList::from_sorted(&[(11, b"versions")]).unwrap(),
            payload: &[],
        };
        let mut buf = [0u8; 64];
        let (outer, _) = client.protect_request(&request, &mut buf).unwrap();
        let mut plain = [0u8; 64];
        assert_eq!(
            server
                .unprotect_request(&outer, &mut plain)
                .unwrap()
                .message,
            request
        );
    }

    #[test]
    fn a_token_refuses_a_gateway_other_than_the_pinned_one() {
        let (token, gateway) = identities();
        let impostor = Identity::generate([9; 32], b"\x0c", "impostor").unwrap();
        assert_eq!(
            run(
                &token,
                &impostor,
                gateway.credential(),
                Some(*token.credential())
            )
            .unwrap_err(),
            HandshakeError::UnexpectedCredential
        );
        // Same kid, other key: the MAC does not verify.
        let same_kid = Identity::generate([9; 32], b"\x0b", "impostor").unwrap();
        assert_eq!(
            run(
                &token,
                &same_kid,
                gateway.credential(),
                Some(*token.credential())
            )
            .unwrap_err(),
            HandshakeError::AuthenticationFailed
        );
    }

    #[test]
    fn a_gateway_refuses_an_unknown_token() {
        let (token, gateway) = identities();
        assert_eq!(
            run(&token, &gateway, gateway.credential(), None).unwrap_err(),
            HandshakeError::UnknownPeer
        );
        // A known kid with another key fails the MAC.
        let other = Identity::generate([8; 32], b"\x0a", "token-1").unwrap();
        assert_eq!(
            run(
                &token,
                &gateway,
                gateway.credential(),
                Some(*other.credential())
            )
            .unwrap_err(),
            HandshakeError::AuthenticationFailed
        );
    }

    #[test]
    fn flipped_bits_in_messages_2_and_3_fail() {
        let (token, gateway) = identities();
        let (_, m1) = Initiator::start([3; 32]).unwrap();
        let (_, m2) = Responder::respond([4; 32], &gateway, m1.as_bytes(), &[0x05]).unwrap();
        for bit in 0..m2.as_bytes().len() * 8 {
            let (initiator, _) = Initiator::start([3; 32]).unwrap();
            let mut bad = m2.as_bytes().to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                initiator
                    .process_message_2(&token, gateway.credential(), &bad)
                    .is_err(),
                "message_2 bit {bit}"
            );
        }
        let (initiator, _) = Initiator::start([3; 32]).unwrap();
        let (m3, _) = initiator
            .process_message_2(&token, gateway.credential(), m2.as_bytes())
            .unwrap();
        for bit in 0..m3.as_bytes().len() * 8 {
            let (responder, _) =
                Responder::respond([4; 32], &gateway, m1.as_bytes(), &[0x05]).unwrap();
            let mut bad = m3.as_bytes().to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            let result = responder.process_message_3(&bad, |_| Some(*token.credential()));
            assert!(result.is_err(), "message_3 bit {bit}");
        }
    }

    #[test]
    fn flipped_bits_in_message_1_fail_or_change_nothing_and_never_panic() {
        let (_, gateway) = identities();
        let (_, m1) = Initiator::start([3; 32]).unwrap();
        for bit in 0..m1.as_bytes().len() * 8 {
            let mut bad = m1.as_bytes().to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            // A changed G_X or C_I still gives a message_2; the handshake then fails at
            // message_3. What matters here: no panic, whatever the bytes.
            let _ = Responder::respond([4; 32], &gateway, &bad, &[0x05]);
        }
    }

    proptest::proptest! {
        /// Whatever arrives on the air, no step panics (lakers 0.8 does on some inputs the
        /// link now refuses first).
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                                          at in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let (token, gateway) = identities();
            let _ = Responder::respond([4; 32], &gateway, &bytes, &[0x05]);
            let (initiator, m1) = Initiator::start([3; 32]).unwrap();
            let _ = initiator.process_message_2(&token, gateway.credential(), &bytes);
            let (responder, _) = Responder::respond([4; 32], &gateway, m1.as_bytes(), &[0x05]).unwrap();
            let _ = responder.process_message_3(&bytes, |_| Some(*token.credential()));
            // And near-valid ones: a real message_1 with one byte replaced.
            let mut near = m1.as_bytes().to_vec();
            if let Some(slot) = near.get_mut(at) {
                *slot = byte;
            }
            let _ = Responder::respond([4; 32], &gateway, &near, &[0x05]);
        }
    }

    #[test]
    fn stored_identity_is_checked_against_its_credential() {
        let (token, gateway) = identities();
        let again = Identity::new(*token.private_key(), token.credential().as_bytes()).unwrap();
        assert_eq!(again.credential(), token.credential());
        assert_eq!(
            Identity::new(*gateway.private_key(), token.credential().as_bytes()).unwrap_err(),
            HandshakeError::MalformedCredential
        );
        assert!(!format!("{token:?}").contains(&format!("{:?}", token.private_key())));
    }

    #[test]
    fn a_connection_id_equal_to_c_i_is_refused() {
        let (_, gateway) = identities();
        let (_, m1) = Initiator::start([3; 32]).unwrap();
        let c_i = *m1.as_bytes().last().unwrap();
        assert_eq!(
            Responder::respond([4; 32], &gateway, m1.as_bytes(), &[c_i]).unwrap_err(),
            HandshakeError::InvalidConnectionId
        );
    }

    #[test]
    fn connection_ids_split_and_encode() {
        let mut out = [0u8; 9];
        for id in [&[0x05][..], &[0x37], &[0x18], &[0xAB, 0xCD]] {
            let n = encode_connection_id(id, &mut out).unwrap();
            let mut payload = out[..n].to_vec();
            payload.extend_from_slice(b"rest");
            let (got, rest) = split_connection_id(&payload).unwrap();
            assert_eq!((got, rest), (id, &b"rest"[..]));
        }
        assert!(split_connection_id(&[0xF5]).is_err());
        assert!(split_connection_id(&[0x43, 1]).is_err());
    }

    /// EDHOC over CoAP (RFC 9528 appendix A.2) as the token sends it: two POSTs to
    /// /.well-known/edhoc with a 2-byte token, message_2 in a piggybacked 2.04.
    #[test]
    fn handshake_bytes_on_the_air_are_printed_and_within_250() {
        let (token, gateway) = identities();
        let (_, _, [m1, m2, m3, m4]) = run(
            &token,
            &gateway,
            gateway.credential(),
            Some(*token.credential()),
        )
        .unwrap();
        let token_len = 2;
        // Header 4 + token, Uri-Path ".well-known" (1 + 11), "edhoc" (1 + 5), Content-Format
        // 65 (1 + 1), payload marker.
        let post = 4 + token_len + 12 + 6 + 2 + 1;
        let ack_with_payload = 4 + token_len + 2 + 1; // 2.04 with Content-Format, marker
        let request_1 = post + 1 + m1; // CBOR true
        let response_2 = ack_with_payload + m2;
        // RFC 9668: message_3 rides in the first OSCORE request, plus the empty EDHOC option.
        let combined = m3 + 1;
        let total = request_1 + response_2 + combined;
        // Stand-alone message_3 (C_R prefix) and its 2.04 with message_4.
        let request_3 = post + 1 + m3;
        let response_4 = ack_with_payload + m4;
        let stand_alone = request_1 + response_2 + request_3 + response_4;
        println!(
            "EDHOC: message_1 {m1} B, message_2 {m2} B, message_3 {m3} B, message_4 {m4} B; on the \
             air with CoAP headers: {request_1} + {response_2} + {combined} (message_3 inside the \
             first OSCORE request) = {total} B; with a stand-alone message_3 and message_4 \
             {stand_alone} B"
        );
        assert!(stand_alone <= 250, "{stand_alone}");
        assert!(total <= 250, "{total}");
    }
}
