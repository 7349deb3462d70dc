//! The two error types of the link: [`OscoreError`] for message protection and
//! [`HandshakeError`] for EDHOC. Neither carries key material.

use core::fmt;

/// Why a message could not be protected or unprotected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OscoreError {
    /// The message has more options than [`crate::MAX_OPTIONS`].
    TooManyOptions,
    /// The options are not sorted by number, as CoAP's delta encoding needs.
    OptionsOutOfOrder,
    /// An option value is longer than CoAP can encode (65804 bytes).
    OptionTooLong,
    /// The caller's output buffer is too small for the result.
    BufferTooSmall,
    /// A sender or recipient id is longer than [`crate::MAX_ID_LEN`] bytes.
    IdTooLong,
    /// The message has no OSCORE option, so it is not protected.
    NotProtected,
    /// The OSCORE option value is malformed (reserved flags, truncated fields).
    MalformedOscoreOption,
    /// A protected request carries no Partial IV or no kid.
    MissingRequestFields,
    /// The kid of a request names another security context than the one given.
    WrongContext,
    /// The ciphertext or its tag do not verify: the message was altered, or another key made it.
    AuthenticationFailed,
    /// The decrypted plaintext is not a well-formed CoAP code, option list and payload.
    MalformedPlaintext,
    /// The request's Partial IV was seen before or is older than the replay window.
    Replay,
    /// The next sequence number is beyond the persisted high-water mark: persist
    /// [`crate::SecurityContext::sequence_to_persist`] first.
    SequenceNotPersisted,
    /// The sender sequence number reached 2^40 - 1: the context is used up; run EDHOC again.
    SequenceExhausted,
    /// A stored context record is malformed.
    MalformedRecord,
}

impl fmt::Display for OscoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooManyOptions => "the message has more options than the link can hold",
            Self::OptionsOutOfOrder => "the message's options are not sorted by number",
            Self::OptionTooLong => "an option value is longer than CoAP can encode",
            Self::BufferTooSmall => "the output buffer is too small for the message",
            Self::IdTooLong => "an OSCORE sender or recipient id is longer than 7 bytes",
            Self::NotProtected => "the message carries no OSCORE option",
            Self::MalformedOscoreOption => "the OSCORE option value is malformed",
            Self::MissingRequestFields => "the protected request carries no Partial IV or no kid",
            Self::WrongContext => "the request's kid names another security context",
            Self::AuthenticationFailed => "the protected message does not verify",
            Self::MalformedPlaintext => "the decrypted message is not a well-formed CoAP message",
            Self::Replay => "the request was seen before (replay)",
            Self::SequenceNotPersisted => {
                "the next sequence number is beyond the persisted high-water mark"
            }
            Self::SequenceExhausted => "the sender sequence numbers of this context are used up",
            Self::MalformedRecord => "the stored security context record is malformed",
        })
    }
}

impl core::error::Error for OscoreError {}

/// Why an EDHOC handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// An EDHOC message is malformed or longer than the link accepts.
    Malformed,
    /// The peer uses a method or cipher suite other than method 3 with suite 2.
    Unsupported,
    /// The responder presented another credential than the pinned one.
    UnexpectedCredential,
    /// The initiator's credential is not in the list of authorised credentials.
    UnknownPeer,
    /// The peer sent its credential by value; the link only accepts a reference by kid.
    CredentialByValue,
    /// A MAC or the AEAD of a message did not verify.
    AuthenticationFailed,
    /// A credential (CCS) could not be parsed or lacks a kid.
    MalformedCredential,
    /// A connection identifier is not a valid EDHOC connection identifier.
    InvalidConnectionId,
    /// The caller's buffer is too small.
    BufferTooSmall,
    /// lakers refused the exchange for another reason.
    Rejected,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "an EDHOC message is malformed",
            Self::Unsupported => "the peer asks for an EDHOC method or cipher suite other than 3/2",
            Self::UnexpectedCredential => {
                "the gateway presented a credential other than the pinned one"
            }
            Self::UnknownPeer => "the token's credential is not authorised on this gateway",
            Self::CredentialByValue => "the peer sent its credential by value, not by kid",
            Self::AuthenticationFailed => "an EDHOC message did not verify",
            Self::MalformedCredential => "a credential is not a CCS with a P-256 key and a kid",
            Self::InvalidConnectionId => "a connection identifier is invalid",
            Self::BufferTooSmall => "the output buffer is too small for the EDHOC message",
            Self::Rejected => "the EDHOC exchange was rejected",
        })
    }
}

impl core::error::Error for HandshakeError {}

impl From<lakers::EDHOCError> for HandshakeError {
    fn from(e: lakers::EDHOCError) -> Self {
        use lakers::EDHOCError as E;
        match e {
            E::UnexpectedCredential => Self::UnexpectedCredential,
            E::MacVerificationFailed => Self::AuthenticationFailed,
            E::UnsupportedMethod | E::UnsupportedCipherSuite => Self::Unsupported,
            E::ParsingError | E::EncodingError | E::CredentialTooLongError => Self::Malformed,
            E::EadLabelTooLongError | E::EadTooLongError | E::EADUnprocessable => Self::Malformed,
            _ => Self::Rejected,
        }
    }
}
