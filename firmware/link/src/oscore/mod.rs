//! OSCORE (RFC 8613) for one pair of endpoints: the security context (key derivation,
//! §3.2), message protection and verification (§5, §8), the replay window (§7.4), sender
//! sequence persistence (appendix B.1.1) and the Echo challenge (RFC 9175, appendix B.1.2).
//!
//! Only what jeton uses: AES-CCM-16-64-128 with HKDF-SHA-256, no ID Context, no Group OSCORE.

mod envelope;
mod ids;
mod option;
mod record;
mod replay;
mod sequence;

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use envelope::{open, seal};
pub use ids::{Id, PartialIv, RequestBinding};
pub use option::OscoreOption;
pub use record::{ContextRecord, RECORD_LEN};
use replay::ReplayWindow;
pub use replay::{ECHO_LEN, REPLAY_WINDOW};
use sequence::SenderSequence;
pub use sequence::{MAX_SEQUENCE, SEQUENCE_CHUNK};

use jeton_proto::coap::option::OBSERVE;

use crate::OscoreError;
use crate::message::{Message, put};

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

#[cfg(test)]
mod tests;
