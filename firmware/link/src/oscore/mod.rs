//! OSCORE (RFC 8613) for one pair of endpoints: the security context (key derivation,
//! §3.2), message protection and verification (§5, §8), the replay window (§7.4), sender
//! sequence persistence (appendix B.1.1) and the Echo challenge (RFC 9175, appendix B.1.2).
//!
//! Only what jeton uses: AES-CCM-16-64-128 with HKDF-SHA-256, no ID Context, no Group OSCORE.

mod replay;
mod sequence;

use ccm::aead::{AeadInOut, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use replay::ReplayWindow;
pub use replay::{ECHO_LEN, REPLAY_WINDOW};
use sequence::SenderSequence;
pub use sequence::{MAX_SEQUENCE, SEQUENCE_CHUNK};

use jeton_proto::coap::codec::PAYLOAD_MARKER;
use jeton_proto::coap::option::{OBSERVE, PROXY_SCHEME, PROXY_URI, URI_HOST, URI_PORT};

use crate::OscoreError;
use crate::aead::AesCcm16_64_128 as Aead;
use crate::message::{Message, OptionList, decode_options, encode_options, put};

/// The OSCORE option number (RFC 8613 §2).
pub const OSCORE_OPTION: u16 = 9;
/// The Echo option number (RFC 9175).
pub const ECHO_OPTION: u16 = 252;
/// The longest sender or recipient id: nonce length 13 minus 6 (RFC 8613 §3.3).
pub const MAX_ID_LEN: usize = 7;
/// Bytes the AEAD tag adds to every protected message.
pub const TAG_LEN: usize = 8;
/// The longest Partial IV.
pub const MAX_PIV_LEN: usize = 5;
/// The longest OSCORE option value this implementation writes: flags, Partial IV, kid.
pub const MAX_OSCORE_OPTION_LEN: usize = 1 + MAX_PIV_LEN + MAX_ID_LEN;

const KEY_LEN: usize = 16;
const NONCE_LEN: usize = 13;
/// COSE algorithm 10: AES-CCM-16-64-128.
const ALG_AES_CCM_16_64_128: u8 = 10;

/// Options that stay outside the protection (class U of RFC 8613 §4.1): Uri-Host,
/// Uri-Port, Proxy-Uri, Proxy-Scheme. The OSCORE option itself is outer only; Observe is
/// both inner and outer.
const fn is_outer_only(number: u16) -> bool {
    matches!(
        number,
        URI_HOST | URI_PORT | PROXY_URI | PROXY_SCHEME | OSCORE_OPTION
    )
}

/// A sender or recipient id (a kid): 0 to [`MAX_ID_LEN`] bytes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Id {
    len: u8,
    bytes: [u8; MAX_ID_LEN],
}

impl Id {
    /// The id with these bytes.
    pub fn new(bytes: &[u8]) -> Result<Id, OscoreError> {
        let mut id = Id::default();
        id.bytes
            .get_mut(..bytes.len())
            .ok_or(OscoreError::IdTooLong)?
            .copy_from_slice(bytes);
        id.len = bytes.len() as u8;
        Ok(id)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl core::fmt::Debug for Id {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Id(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A Partial IV: a sequence number in 1 to 5 big-endian bytes without leading zeros.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PartialIv {
    len: u8,
    bytes: [u8; MAX_PIV_LEN],
}

impl PartialIv {
    /// The Partial IV of a sequence number (0 is the single byte 0x00).
    pub fn from_sequence(sequence: u64) -> PartialIv {
        let all = sequence.to_be_bytes();
        let significant = (8 - (sequence.leading_zeros() / 8) as usize).clamp(1, MAX_PIV_LEN);
        let mut piv = PartialIv {
            len: significant as u8,
            ..PartialIv::default()
        };
        if let (Some(dst), Some(src)) =
            (piv.bytes.get_mut(..significant), all.get(8 - significant..))
        {
            dst.copy_from_slice(src);
        }
        piv
    }

    /// The Partial IV in these bytes (1 to 5 of them).
    pub fn new(bytes: &[u8]) -> Result<PartialIv, OscoreError> {
        if bytes.is_empty() || bytes.len() > MAX_PIV_LEN {
            return Err(OscoreError::MalformedOscoreOption);
        }
        let mut piv = PartialIv {
            len: bytes.len() as u8,
            ..PartialIv::default()
        };
        piv.bytes
            .get_mut(..bytes.len())
            .ok_or(OscoreError::MalformedOscoreOption)?
            .copy_from_slice(bytes);
        Ok(piv)
    }

    /// The bytes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The sequence number it encodes.
    pub fn sequence(&self) -> u64 {
        self.as_bytes()
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

impl core::fmt::Debug for PartialIv {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PartialIv({})", self.sequence())
    }
}

/// What ties a response to its request: the request's kid and Partial IV, which the
/// response's AAD (and, without its own Partial IV, its nonce) reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestBinding {
    /// The requester's sender id.
    pub kid: Id,
    /// The request's Partial IV.
    pub piv: PartialIv,
}

/// The fields of an OSCORE option value (RFC 8613 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OscoreOption<'a> {
    /// The Partial IV, if the message carries one.
    pub piv: Option<&'a [u8]>,
    /// The kid context (flag h), which jeton never sends.
    pub kid_context: Option<&'a [u8]>,
    /// The kid (flag k): the sender's id.
    pub kid: Option<&'a [u8]>,
}

impl<'a> OscoreOption<'a> {
    /// Reads an OSCORE option value; reserved flag bits and Partial IVs of 6 or 7 bytes are
    /// malformed.
    pub fn parse(value: &'a [u8]) -> Result<Self, OscoreError> {
        let Some((&flags, rest)) = value.split_first() else {
            return Ok(OscoreOption::default());
        };
        if flags & 0xE0 != 0 {
            return Err(OscoreError::MalformedOscoreOption);
        }
        let n = usize::from(flags & 0x07);
        if n > MAX_PIV_LEN {
            return Err(OscoreError::MalformedOscoreOption);
        }
        let (piv, mut rest) = rest
            .split_at_checked(n)
            .ok_or(OscoreError::MalformedOscoreOption)?;
        let mut option = OscoreOption {
            piv: (n > 0).then_some(piv),
            ..OscoreOption::default()
        };
        if flags & 0x10 != 0 {
            let (&s, tail) = rest
                .split_first()
                .ok_or(OscoreError::MalformedOscoreOption)?;
            let (context, tail) = tail
                .split_at_checked(usize::from(s))
                .ok_or(OscoreError::MalformedOscoreOption)?;
            option.kid_context = Some(context);
            rest = tail;
        }
        if flags & 0x08 != 0 {
            option.kid = Some(rest);
        } else if !rest.is_empty() {
            return Err(OscoreError::MalformedOscoreOption);
        }
        Ok(option)
    }

    /// The kid of a message with this OSCORE option value, or `None`: how a server finds the
    /// context of a request.
    pub fn kid_of(message: &Message<'a>) -> Result<Option<&'a [u8]>, OscoreError> {
        let value = message
            .options
            .get(OSCORE_OPTION)
            .ok_or(OscoreError::NotProtected)?;
        Ok(OscoreOption::parse(value)?.kid)
    }
}

/// Writes an OSCORE option value: flags, Partial IV, kid (if `kid` is given).
fn write_oscore_option(
    piv: Option<&PartialIv>,
    kid: Option<&Id>,
    out: &mut [u8],
) -> Result<usize, OscoreError> {
    let piv_bytes = piv.map_or(&[][..], |p| p.as_bytes());
    let flags = piv_bytes.len() as u8 | if kid.is_some() { 0x08 } else { 0 };
    if flags == 0 {
        return Ok(0);
    }
    let mut at = 0;
    put(out, &mut at, &[flags])?;
    put(out, &mut at, piv_bytes)?;
    put(out, &mut at, kid.map_or(&[][..], |k| k.as_bytes()))?;
    Ok(at)
}

/// Whether a message still waits for the Echo round trip of RFC 8613 appendix B.1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The request is new: process it.
    Fresh,
    /// The recipient lost its replay window: do not act on the request; answer 4.01
    /// Unauthorized (protected) with an Echo option carrying
    /// [`SecurityContext::echo_challenge`].
    EchoRequired,
}

/// A verified request.
#[derive(Clone, Copy, Debug)]
pub struct UnprotectedRequest<'a> {
    /// The inner request, with the outer-only options (Uri-Host, ...) merged back in.
    pub message: Message<'a>,
    /// What the response must be bound to.
    pub binding: RequestBinding,
    /// Whether the request may be acted on.
    pub freshness: Freshness,
}

/// A security context's stored form: the derived keys and ids (see
/// [`SecurityContext::to_record`]). Persist it once when a context is made; the
/// sequence number's high-water mark is stored next to it, separately.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ContextRecord {
    bytes: [u8; RECORD_LEN],
}

/// Bytes of a [`ContextRecord`].
pub const RECORD_LEN: usize = 1 + 2 * KEY_LEN + NONCE_LEN + 2 * (1 + MAX_ID_LEN);
const RECORD_VERSION: u8 = 1;

impl ContextRecord {
    /// The record's bytes.
    pub fn as_bytes(&self) -> &[u8; RECORD_LEN] {
        &self.bytes
    }

    /// A record read back from storage.
    pub fn from_bytes(bytes: &[u8; RECORD_LEN]) -> Self {
        ContextRecord { bytes: *bytes }
    }
}

impl core::fmt::Debug for ContextRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ContextRecord(..)")
    }
}

/// The OSCORE security context of one endpoint towards one peer.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecurityContext {
    sender_key: [u8; KEY_LEN],
    recipient_key: [u8; KEY_LEN],
    common_iv: [u8; NONCE_LEN],
    #[zeroize(skip)]
    sender_id: Id,
    #[zeroize(skip)]
    recipient_id: Id,
    #[zeroize(skip)]
    sequence: SenderSequence,
    #[zeroize(skip)]
    replay: ReplayWindow,
}

impl core::fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecurityContext")
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .field("next_sequence", &self.sequence.next)
            .finish_non_exhaustive()
    }
}

impl SecurityContext {
    /// Derives a context from a Master Secret and Master Salt (RFC 8613 §3.2.1). The context
    /// lives in RAM only: its sequence numbers need no persistence (see
    /// [`Self::with_persisted_sequence`]).
    pub fn derive(
        master_secret: &[u8],
        master_salt: &[u8],
        sender_id: &[u8],
        recipient_id: &[u8],
    ) -> Result<Self, OscoreError> {
        let sender_id = Id::new(sender_id)?;
        let recipient_id = Id::new(recipient_id)?;
        let hkdf = Hkdf::<Sha256>::new(Some(master_salt), master_secret);
        let mut context = SecurityContext {
            sender_key: [0; KEY_LEN],
            recipient_key: [0; KEY_LEN],
            common_iv: [0; NONCE_LEN],
            sender_id,
            recipient_id,
            sequence: SenderSequence {
                next: 0,
                durable_until: None,
            },
            replay: ReplayWindow::fresh(),
        };
        expand(&hkdf, sender_id.as_bytes(), b"Key", &mut context.sender_key)?;
        expand(
            &hkdf,
            recipient_id.as_bytes(),
            b"Key",
            &mut context.recipient_key,
        )?;
        expand(&hkdf, &[], b"IV", &mut context.common_iv)?;
        Ok(context)
    }

    /// Makes the sender sequence number persisted (RFC 8613 appendix B.1.1): no number is
    /// used until a high-water mark covering it was persisted, see
    /// [`Self::sequence_to_persist`].
    pub fn with_persisted_sequence(mut self) -> Self {
        self.sequence.durable_until = Some(self.sequence.next);
        self
    }

    /// The high-water mark the caller should persist now (if any), then report with
    /// [`Self::sequence_persisted`]. Asked before each send; it asks ahead, while half a
    /// chunk is still left, so saving can happen before it blocks.
    pub fn sequence_to_persist(&self) -> Option<u64> {
        self.sequence.mark_to_persist()
    }

    /// Records that a high-water mark from [`Self::sequence_to_persist`] is durable.
    pub fn sequence_persisted(&mut self, mark: u64) {
        self.sequence.persisted(mark);
    }

    /// The sequence number the next message with a Partial IV will use.
    pub fn next_sequence(&self) -> u64 {
        self.sequence.next
    }

    /// Sets the sender sequence number (test vectors start at 20).
    #[cfg(test)]
    pub(crate) fn set_sequence(&mut self, next: u64) {
        self.sequence.next = next;
    }

    /// The stored form of this context, without its sequence number.
    pub fn to_record(&self) -> ContextRecord {
        let mut bytes = [0u8; RECORD_LEN];
        let mut at = 0;
        let mut write = |chunk: &[u8]| {
            if let Some(dst) = bytes.get_mut(at..at + chunk.len()) {
                dst.copy_from_slice(chunk);
            }
            at += chunk.len();
        };
        write(&[RECORD_VERSION]);
        write(&self.sender_key);
        write(&self.recipient_key);
        write(&self.common_iv);
        for id in [&self.sender_id, &self.recipient_id] {
            write(&[id.len]);
            write(&id.bytes);
        }
        ContextRecord { bytes }
    }

    /// A context restored from its record and the last persisted high-water mark: sending
    /// resumes at the mark (never below it), and, as a server, the first request must
    /// pass the Echo round trip with `echo_challenge` (fresh random bytes) before the replay
    /// window starts again (RFC 8613 appendix B.1.2). A client (the token), which receives
    /// no requests, may pass any bytes.
    pub fn restore(
        record: &ContextRecord,
        persisted_mark: u64,
        echo_challenge: [u8; ECHO_LEN],
    ) -> Result<Self, OscoreError> {
        let b = &record.bytes;
        let take =
            |from: usize, len: usize| b.get(from..from + len).ok_or(OscoreError::MalformedRecord);
        if b.first() != Some(&RECORD_VERSION) {
            return Err(OscoreError::MalformedRecord);
        }
        let mut context = SecurityContext {
            sender_key: [0; KEY_LEN],
            recipient_key: [0; KEY_LEN],
            common_iv: [0; NONCE_LEN],
            sender_id: Id::default(),
            recipient_id: Id::default(),
            sequence: SenderSequence {
                next: persisted_mark,
                durable_until: Some(persisted_mark),
            },
            replay: ReplayWindow::AwaitingEcho {
                challenge: echo_challenge,
            },
        };
        context.sender_key.copy_from_slice(take(1, KEY_LEN)?);
        context
            .recipient_key
            .copy_from_slice(take(1 + KEY_LEN, KEY_LEN)?);
        context
            .common_iv
            .copy_from_slice(take(1 + 2 * KEY_LEN, NONCE_LEN)?);
        let ids = 1 + 2 * KEY_LEN + NONCE_LEN;
        for (i, id) in [&mut context.sender_id, &mut context.recipient_id]
            .into_iter()
            .enumerate()
        {
            let at = ids + i * (1 + MAX_ID_LEN);
            let len = usize::from(*take(at, 1)?.first().ok_or(OscoreError::MalformedRecord)?);
            if len > MAX_ID_LEN {
                return Err(OscoreError::MalformedRecord);
            }
            *id = Id::new(take(at + 1, len)?)?;
        }
        Ok(context)
    }

    /// A server's context restored from its record, the last persisted sequence mark and the
    /// persisted high-water mark of its replay window (the highest Partial IV it accepted,
    /// stored before the request was acted on): requests at or below that mark are replays,
    /// newer ones pass at once, without the Echo round trip of [`Self::restore`].
    pub fn restore_with_replay_mark(
        record: &ContextRecord,
        persisted_mark: u64,
        replay_high_water: Option<u64>,
    ) -> Result<Self, OscoreError> {
        let mut context = Self::restore(record, persisted_mark, [0; ECHO_LEN])?;
        context.replay = ReplayWindow::after_restart(replay_high_water);
        Ok(context)
    }

    /// This endpoint's sender id (the kid of its requests).
    pub fn sender_id(&self) -> &Id {
        &self.sender_id
    }

    /// The peer's sender id (the kid its requests carry).
    pub fn recipient_id(&self) -> &Id {
        &self.recipient_id
    }

    /// The Echo value a request must carry before this context accepts requests again, if
    /// its replay window was lost.
    pub fn echo_challenge(&self) -> Option<&[u8; ECHO_LEN]> {
        match &self.replay {
            ReplayWindow::AwaitingEcho { challenge } => Some(challenge),
            ReplayWindow::Active { .. } => None,
        }
    }

    /// Protects a request (client side, RFC 8613 §8.1). The outer message's payload and
    /// OSCORE option value are written to `out`; the outer-only options borrow from
    /// `request`. Returns the outer message and what the response must be bound to.
    pub fn protect_request<'a>(
        &mut self,
        request: &Message<'a>,
        out: &'a mut [u8],
    ) -> Result<(Message<'a>, RequestBinding), OscoreError> {
        let sequence = self.sequence.take()?;
        let piv = PartialIv::from_sequence(sequence);
        let binding = RequestBinding {
            kid: self.sender_id,
            piv,
        };
        let outer_code = if request.options.get(OBSERVE).is_some() {
            0x05 // FETCH
        } else {
            0x02 // POST
        };
        let nonce = self.nonce(&self.sender_id, &piv);
        let outer = seal(
            &self.sender_key,
            &nonce,
            &binding,
            request,
            outer_code,
            (Some(&piv), Some(&self.sender_id)),
            out,
        )?;
        Ok((outer, binding))
    }

    /// Verifies and decrypts a request (server side, RFC 8613 §8.2). The caller chose this
    /// context by the request's kid ([`OscoreOption::kid_of`]). The inner message is
    /// written to `out`. A replayed or altered request is an error; nothing of it is
    /// to be acted on.
    pub fn unprotect_request<'a>(
        &mut self,
        outer: &Message<'a>,
        out: &'a mut [u8],
    ) -> Result<UnprotectedRequest<'a>, OscoreError> {
        let value = outer
            .options
            .get(OSCORE_OPTION)
            .ok_or(OscoreError::NotProtected)?;
        let option = OscoreOption::parse(value)?;
        let (Some(piv), Some(kid)) = (option.piv, option.kid) else {
            return Err(OscoreError::MissingRequestFields);
        };
        if option.kid_context.is_some() {
            return Err(OscoreError::WrongContext);
        }
        if !bool::from(kid.ct_eq(self.recipient_id.as_bytes())) {
            return Err(OscoreError::WrongContext);
        }
        let piv = PartialIv::new(piv)?;
        self.replay.check(piv.sequence())?;
        let binding = RequestBinding {
            kid: self.recipient_id,
            piv,
        };
        let nonce = self.nonce(&self.recipient_id, &piv);
        let message = open(&self.recipient_key, &nonce, &binding, outer, out)?;
        let freshness = match self.replay {
            ReplayWindow::AwaitingEcho { challenge } => {
                let echoed = message
                    .options
                    .get(ECHO_OPTION)
                    .is_some_and(|v| bool::from(v.ct_eq(&challenge)));
                if echoed {
                    self.replay = ReplayWindow::fresh();
                    self.replay.accept(piv.sequence());
                    Freshness::Fresh
                } else {
                    Freshness::EchoRequired
                }
            }
            ReplayWindow::Active { .. } => {
                self.replay.accept(piv.sequence());
                Freshness::Fresh
            }
        };
        Ok(UnprotectedRequest {
            message,
            binding,
            freshness,
        })
    }

    /// Protects a response to the request `binding` names (server side, RFC 8613 §8.3).
    /// With `own_partial_iv` false the response reuses the request's nonce: allowed once
    /// per request, for its first response; every later one (Observe notifications, a
    /// response re-made for a retransmitted request) must pass `true`.
    pub fn protect_response<'a>(
        &mut self,
        binding: &RequestBinding,
        response: &Message<'a>,
        own_partial_iv: bool,
        out: &'a mut [u8],
    ) -> Result<Message<'a>, OscoreError> {
        let outer_code = if response.options.get(OBSERVE).is_some() {
            0x45 // 2.05 Content
        } else {
            0x44 // 2.04 Changed
        };
        let own_piv = if own_partial_iv {
            Some(PartialIv::from_sequence(self.sequence.take()?))
        } else {
            None
        };
        let nonce = match &own_piv {
            Some(piv) => self.nonce(&self.sender_id, piv),
            None => self.nonce(&binding.kid, &binding.piv),
        };
        seal(
            &self.sender_key,
            &nonce,
            binding,
            response,
            outer_code,
            (own_piv.as_ref(), None),
            out,
        )
    }

    /// Verifies and decrypts a response to the request `binding` names (client side,
    /// RFC 8613 §8.4).
    pub fn unprotect_response<'a>(
        &mut self,
        binding: &RequestBinding,
        outer: &Message<'a>,
        out: &'a mut [u8],
    ) -> Result<Message<'a>, OscoreError> {
        let value = outer
            .options
            .get(OSCORE_OPTION)
            .ok_or(OscoreError::NotProtected)?;
        let option = OscoreOption::parse(value)?;
        if option.kid_context.is_some() || option.kid.is_some() {
            // A response names no kid in this profile; one that does is for another context.
            return Err(OscoreError::WrongContext);
        }
        let nonce = match option.piv {
            Some(piv) => self.nonce(&self.recipient_id, &PartialIv::new(piv)?),
            None => self.nonce(&binding.kid, &binding.piv),
        };
        open(&self.recipient_key, &nonce, binding, outer, out)
    }

    /// The AEAD nonce of RFC 8613 §5.2 for a sender id and Partial IV.
    fn nonce(&self, id: &Id, piv: &PartialIv) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[0] = id.len;
        let id_bytes = id.as_bytes();
        let piv_bytes = piv.as_bytes();
        if let Some(dst) = nonce.get_mut(1 + MAX_ID_LEN - id_bytes.len()..1 + MAX_ID_LEN) {
            dst.copy_from_slice(id_bytes);
        }
        if let Some(dst) = nonce.get_mut(NONCE_LEN - piv_bytes.len()..) {
            dst.copy_from_slice(piv_bytes);
        }
        for (n, iv) in nonce.iter_mut().zip(self.common_iv.iter()) {
            *n ^= iv;
        }
        nonce
    }
}

fn expand(hkdf: &Hkdf<Sha256>, id: &[u8], kind: &[u8], out: &mut [u8]) -> Result<(), OscoreError> {
    // info = [ id: bstr, id_context: nil, alg_aead: 10, type: tstr, L: uint ] (§3.2.1)
    let mut info = [0u8; 2 + MAX_ID_LEN + 4 + 4];
    let mut at = 0;
    put(&mut info, &mut at, &[0x85, 0x40 | id.len() as u8])?;
    put(&mut info, &mut at, id)?;
    put(
        &mut info,
        &mut at,
        &[0xF6, ALG_AES_CCM_16_64_128, 0x60 | kind.len() as u8],
    )?;
    put(&mut info, &mut at, kind)?;
    put(&mut info, &mut at, &[out.len() as u8])?;
    hkdf.expand(info.get(..at).unwrap_or(&[]), out)
        .map_err(|_| OscoreError::BufferTooSmall)
}

/// The AAD (RFC 8613 §5.4): Enc_structure ["Encrypt0", h'', external_aad] with
/// external_aad = bstr .cbor [1, [10], request_kid, request_piv, h''].
fn aad(binding: &RequestBinding, out: &mut [u8; 40]) -> Result<usize, OscoreError> {
    let kid = binding.kid.as_bytes();
    let piv = binding.piv.as_bytes();
    let external_len = 4 + 1 + kid.len() + 1 + piv.len() + 1;
    let mut at = 0;
    put(out, &mut at, &[0x83, 0x68])?;
    put(out, &mut at, b"Encrypt0")?;
    put(out, &mut at, &[0x40, 0x40 | external_len as u8])?;
    put(out, &mut at, &[0x85, 0x01, 0x81, ALG_AES_CCM_16_64_128])?;
    put(out, &mut at, &[0x40 | kid.len() as u8])?;
    put(out, &mut at, kid)?;
    put(out, &mut at, &[0x40 | piv.len() as u8])?;
    put(out, &mut at, piv)?;
    put(out, &mut at, &[0x40])?;
    Ok(at)
}

/// Encrypts the inner message into `out` = [OSCORE option value | ciphertext | tag] and
/// returns the outer message.
fn seal<'a>(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    binding: &RequestBinding,
    inner: &Message<'a>,
    outer_code: u8,
    option_fields: (Option<&PartialIv>, Option<&Id>),
    out: &'a mut [u8],
) -> Result<Message<'a>, OscoreError> {
    let mut option_value = [0u8; MAX_OSCORE_OPTION_LEN];
    let option_len = write_oscore_option(option_fields.0, option_fields.1, &mut option_value)?;
    let (option_out, body) = out
        .split_at_mut_checked(option_len)
        .ok_or(OscoreError::BufferTooSmall)?;
    option_out.copy_from_slice(option_value.get(..option_len).unwrap_or(&[]));

    // Plaintext: code, class-E options, 0xFF and payload.
    let mut at = 0;
    put(body, &mut at, &[inner.code])?;
    encode_options(
        inner.options.iter().filter(|(n, _)| !is_outer_only(*n)),
        body,
        &mut at,
    )?;
    if !inner.payload.is_empty() {
        put(body, &mut at, &[PAYLOAD_MARKER])?;
        put(body, &mut at, inner.payload)?;
    }
    let mut aad_buf = [0u8; 40];
    let aad_len = aad(binding, &mut aad_buf)?;
    let cipher = Aead::new(key.into());
    let (plaintext, rest) = body.split_at_mut(at);
    let tag = cipher
        .encrypt_inout_detached(
            nonce.into(),
            aad_buf.get(..aad_len).unwrap_or(&[]),
            plaintext.into(),
        )
        .map_err(|_| OscoreError::BufferTooSmall)?;
    rest.get_mut(..TAG_LEN)
        .ok_or(OscoreError::BufferTooSmall)?
        .copy_from_slice(&tag);
    let payload = body
        .get(..at + TAG_LEN)
        .ok_or(OscoreError::BufferTooSmall)?;

    let mut options = OptionList::new();
    for (number, value) in inner.options.iter() {
        if is_outer_only(number) || number == OBSERVE {
            options.insert(number, value)?;
        }
    }
    options.insert(OSCORE_OPTION, option_out)?;
    Ok(Message {
        code: outer_code,
        options,
        payload,
    })
}

/// Decrypts an outer message's payload into `out` and returns the inner message with the
/// outer-only options merged in.
fn open<'a>(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    binding: &RequestBinding,
    outer: &Message<'a>,
    out: &'a mut [u8],
) -> Result<Message<'a>, OscoreError> {
    let Some(ciphertext_len) = outer.payload.len().checked_sub(TAG_LEN) else {
        return Err(OscoreError::AuthenticationFailed);
    };
    let (ciphertext, tag) = outer.payload.split_at(ciphertext_len);
    let buffer = out
        .get_mut(..ciphertext_len)
        .ok_or(OscoreError::BufferTooSmall)?;
    buffer.copy_from_slice(ciphertext);
    let mut aad_buf = [0u8; 40];
    let aad_len = aad(binding, &mut aad_buf)?;
    let cipher = Aead::new(key.into());
    let tag = tag
        .try_into()
        .map_err(|_| OscoreError::AuthenticationFailed)?;
    if cipher
        .decrypt_inout_detached(
            nonce.into(),
            aad_buf.get(..aad_len).unwrap_or(&[]),
            (&mut *buffer).into(),
            tag,
        )
        .is_err()
    {
        buffer.zeroize();
        return Err(OscoreError::AuthenticationFailed);
    }
    let plaintext: &'a [u8] = buffer;
    let (&code, rest) = plaintext
        .split_first()
        .ok_or(OscoreError::MalformedPlaintext)?;
    let mut options = OptionList::new();
    let payload = decode_options(rest, &mut options)?;
    if options.iter().any(|(n, _)| is_outer_only(n)) {
        return Err(OscoreError::MalformedPlaintext);
    }
    for (number, value) in outer.options.iter() {
        if is_outer_only(number) && number != OSCORE_OPTION {
            options.insert(number, value)?;
        }
    }
    Ok(Message {
        code,
        options,
        payload,
    })
}

#[cfg(test)]
mod tests;
