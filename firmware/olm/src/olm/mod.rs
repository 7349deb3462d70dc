//! Olm: the [`Account`] with a device's keys, and the [`Session`] (a double ratchet) between
//! two devices, used to send to-device messages such as Megolm room keys.

pub(crate) mod account;
mod messages;
pub(crate) mod session;

pub use self::{
    account::{
        Account, DEFAULT_ONE_TIME_KEYS, IdentityKeys, InboundCreationResult, KeyId,
        OneTimeKeyGenerationResult,
    },
    messages::{Message, MessageType, OlmMessage, PreKeyMessage, SessionKeys, olm_message_len},
    session::{
        EncryptedMessage, MAX_MESSAGE_GAP, MAX_RECEIVING_CHAINS, MAX_SKIPPED_KEYS,
        MAX_SKIPPED_KEYS_PER_CHAIN, Session, SessionId,
    },
};

#[cfg(test)]
mod tests;
