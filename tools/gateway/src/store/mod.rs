//! The gateway's durable state, behind one interface ([`StateStore`]): what a token's OSCORE
//! context needs to go on after a gateway restart without a new EDHOC handshake.
//!
//! Per context: the derived keys and ids ([`ContextRecord`]), the sender sequence number's
//! reserved upper bound (RFC 8613 appendix B.1.1: stored before any number below it is used,
//! so no nonce repeats after a crash), the replay window's high-water mark (stored before a
//! request is acted on, so nothing at or below it is accepted again after a restart), the
//! Matrix access token bound to the context, the token's sticky profile state (room ids and
//! Megolm sender fields it may leave out), and the registration of the token's /sync
//! observation (its CoAP token and Partial IV: a restarted gateway, which does not hold the
//! observation, ends it with one protected notification, and the token registers again at once
//! from the position it confirmed). The link ([`crate::link::Link`]) writes through
//! the store at each of these moments and reads everything back at start.
//!
//! [`SqliteStore`] is the embedded implementation (one file, or in memory for tests), the
//! default; [`PostgresStore`] keeps the same in a PostgreSQL database (`--database`). Secrets
//! in either are sealed by [`sealing`] with a key derived from the gateway's identity.

#[cfg(test)]
mod contract;
mod postgres;
mod sealing;
mod sqlite;

use std::net::SocketAddr;

use jeton_link::ContextRecord;
use zeroize::Zeroizing;

pub use postgres::{DatabaseUrl, Migrated, PostgresStore, migrate};
pub use sealing::SealingKey;
pub use sqlite::SqliteStore;

/// One OSCORE context as stored.
pub struct StoredContext {
    /// The number the transport knows the context by; never given twice.
    pub id: u64,
    /// The recipient id the gateway chose (its C_R): the kid of the token's requests.
    pub rid: Vec<u8>,
    /// The token's credential kid.
    pub peer_kid: Vec<u8>,
    /// The operator's name for the token (for the logs).
    pub token_name: String,
    /// Where the token's requests last came from (responses go there).
    pub real_peer: SocketAddr,
    /// The keys and ids.
    pub record: ContextRecord,
    /// No sender sequence number at or above this is in use.
    pub sequence_mark: u64,
    /// The highest Partial IV of a request accepted, if any.
    pub replay_high_water: Option<u64>,
    /// The Matrix access token bound to the context.
    pub access_token: Option<Zeroizing<Vec<u8>>>,
    /// The token's latest observation registration: its CoAP token and Partial IV.
    pub observation: Option<(Vec<u8>, u64)>,
    /// The transport's sticky profile state of the token (room ids, Megolm sender fields).
    pub sticky: Option<Vec<u8>>,
}

impl core::fmt::Debug for StoredContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoredContext")
            .field("id", &self.id)
            .field("token_name", &self.token_name)
            .field("sequence_mark", &self.sequence_mark)
            .field("replay_high_water", &self.replay_high_water)
            .finish_non_exhaustive()
    }
}

/// A number as the databases store it (sequence numbers and ids stay far below 2^63).
fn integer(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Durable gateway state. Each write is durable when it returns `Ok`; a write that failed
/// leaves what was stored before.
pub trait StateStore: Send {
    /// Every stored context.
    fn contexts(&mut self) -> Result<Vec<StoredContext>, StoreError>;
    /// Stores a new context, replacing the token's (`peer_kid`) older ones.
    fn put_context(&mut self, context: &StoredContext) -> Result<(), StoreError>;
    /// Raises the reserved upper bound of the context's sender sequence numbers.
    fn reserve_sequence(&mut self, id: u64, mark: u64) -> Result<(), StoreError>;
    /// Raises the context's replay high-water mark to `piv` (a request about to be acted on).
    fn accept_request(&mut self, id: u64, piv: u64) -> Result<(), StoreError>;
    /// Records the context's latest observation registration (CoAP token, Partial IV).
    fn observe(&mut self, id: u64, coap_token: &[u8], piv: u64) -> Result<(), StoreError>;
    /// Stores the transport's sticky profile state of the context's token.
    fn put_sticky(&mut self, id: u64, record: &[u8]) -> Result<(), StoreError>;
    /// Binds the access token to the context.
    fn bind_access_token(&mut self, id: u64, access_token: &[u8]) -> Result<(), StoreError>;
    /// Forgets a context (its token was revoked).
    fn forget_context(&mut self, id: u64) -> Result<(), StoreError>;
}

/// Why the state store failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is not a jeton gateway state database (another program's, or damaged).
    Foreign(String),
    /// The database was written under another gateway identity: its secrets do not open.
    WrongIdentity(String),
    /// Another process (another gateway) holds the file.
    InUse(String),
    /// The database has no gateway tables, or older ones: `jeton-gateway migrate` makes them.
    NotMigrated(String),
    /// The database could not be read or written.
    Database(String),
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Foreign(why) => write!(
                f,
                "{why} is not a jeton gateway state database (move it away, or give another file with --state)"
            ),
            Self::WrongIdentity(why) => write!(
                f,
                "{why} was written by a gateway with another identity (--link-identity): its secrets cannot be read (give that identity, or move the state away and let the tokens run EDHOC again: the file, or the database's jeton_gateway.contexts and jeton_gateway.meta rows)"
            ),
            Self::InUse(why) => write!(
                f,
                "{why} is in use by another process (another jeton-gateway? each gateway needs its own --state file or --database)"
            ),
            Self::NotMigrated(why) => write!(
                f,
                "{why} has no jeton gateway tables, or older ones: run `jeton-gateway migrate --database URL` with the same URL (it makes or updates them), then start the gateway again"
            ),
            Self::Database(why) => write!(f, "the gateway state database failed: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}
