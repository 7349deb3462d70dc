//! [`StateStore`] in one SQLite file (rusqlite, SQLite compiled in): the gateway's default,
//! needing no server. WAL journal; the writes that guard a nonce (a new context, a sequence
//! reservation) are synced to the disk before they return, the others (the replay mark, the
//! access token) are durable once written, against a crash of the process but not of the
//! machine.

use std::net::SocketAddr;
use std::path::Path;

use jeton_link::ContextRecord;
use jeton_link::oscore::RECORD_LEN;
use rusqlite::{Connection, params};

use super::{SealingKey, StateStore, StoreError, StoredContext, integer};

/// `PRAGMA application_id` of a jeton gateway state database ("jgws").
const APPLICATION_ID: i32 = 0x6a67_7773;
/// `PRAGMA user_version`: the schema below.
const SCHEMA_VERSION: i32 = 1;
/// A value sealed at creation: it opens only under the identity that made the database.
const CHECK: &[u8] = b"jeton gateway state";

const SCHEMA: &str = "
    CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE contexts (
        id INTEGER PRIMARY KEY,
        rid BLOB NOT NULL UNIQUE,
        peer_kid BLOB NOT NULL,
        token_name TEXT NOT NULL,
        real_peer TEXT NOT NULL,
        record BLOB NOT NULL,
        sequence_mark INTEGER NOT NULL,
        replay_high_water INTEGER,
        access_token BLOB,
        observation_token BLOB,
        observation_piv INTEGER,
        sticky BLOB
    );";

/// The embedded store.
pub struct SqliteStore {
    connection: Connection,
    key: SealingKey,
    /// What the errors name: the file, or "the in-memory state".
    name: String,
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the state file at `path`, its secrets sealed with `key`.
    pub fn open(path: &Path, key: SealingKey) -> Result<Self, StoreError> {
        let name = path.display().to_string();
        let connection =
            Connection::open(path).map_err(|e| StoreError::Database(format!("{name}: {e}")))?;
        // A gateway restarted by its supervisor may start while the old one still exits.
        connection
            .busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| StoreError::Database(format!("{name}: {e}")))?;
        let store = Self::start(connection, key, name)?;
        owner_only(path).map_err(|e| StoreError::Database(format!("{}: {e}", store.name)))?;
        Ok(store)
    }

    /// A store that lives in memory (tests).
    pub fn in_memory(key: SealingKey) -> Result<Self, StoreError> {
        let connection = Connection::open_in_memory()
            .map_err(|e| StoreError::Database(format!("in memory: {e}")))?;
        Self::start(connection, key, "the in-memory state".into())
    }

    fn start(connection: Connection, key: SealingKey, name: String) -> Result<Self, StoreError> {
        let store = SqliteStore {
            connection,
            key,
            name,
        };
        let application_id: i32 = store
            .connection
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(|e| match store.failed(e) {
                StoreError::Database(_) => StoreError::Foreign(store.name.clone()),
                other => other,
            })?;
        match application_id {
            APPLICATION_ID => store.check_existing()?,
            0 => store.create()?,
            _ => return Err(StoreError::Foreign(store.name.clone())),
        }
        store
            .connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| store.failed(e))?;
        store.hold_exclusively()?;
        Ok(store)
    }

    /// A database this gateway made: its schema is the one known here, and its check value
    /// opens under this identity.
    fn check_existing(&self) -> Result<(), StoreError> {
        let version: i32 = self
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| self.failed(e))?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Database(format!(
                "{}: schema version {version}, this gateway reads {SCHEMA_VERSION}",
                self.name
            )));
        }
        let check: Vec<u8> = self
            .connection
            .query_row("SELECT value FROM meta WHERE name = 'check'", [], |row| {
                row.get(0)
            })
            .map_err(|_| StoreError::Foreign(self.name.clone()))?;
        match self.key.open(b"meta/check", &check) {
            Some(value) if value.as_slice() == CHECK => Ok(()),
            _ => Err(StoreError::WrongIdentity(self.name.clone())),
        }
    }

    /// A new database: empty (another program's tables make it foreign).
    fn create(&self) -> Result<(), StoreError> {
        let tables: i64 = self
            .connection
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(|_| StoreError::Foreign(self.name.clone()))?;
        if tables > 0 {
            return Err(StoreError::Foreign(self.name.clone()));
        }
        let check = self.key.seal(b"meta/check", CHECK).ok_or_else(|| {
            StoreError::Database("no randomness for the database's check value".into())
        })?;
        let batch = format!(
            "BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        );
        self.connection
            .execute_batch(&batch)
            .map_err(|e| self.failed(e))?;
        self.connection
            .execute(
                "INSERT INTO meta (name, value) VALUES ('check', ?1)",
                params![check],
            )
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Locks the file for this process until it ends (the operating system lets go when it
    /// dies): two gateways writing one file would reuse each other's context numbers.
    fn hold_exclusively(&self) -> Result<(), StoreError> {
        self.connection
            .pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(|e| self.failed(e))?;
        self.connection
            .execute_batch("BEGIN EXCLUSIVE; COMMIT;")
            .map_err(|e| self.failed(e))
    }

    /// The error in the person's words: a file another process holds, or a failure.
    fn failed(&self, error: rusqlite::Error) -> StoreError {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::InUse(self.name.clone())
            }
            _ => StoreError::Database(format!("{}: {error}", self.name)),
        }
    }

    /// Runs `write` synced to the disk before it returns (`FULL`), or durable against a crash
    /// of the process only (`NORMAL`, WAL).
    fn write(
        &self,
        synced: bool,
        sql: &str,
        values: impl rusqlite::Params,
    ) -> Result<usize, StoreError> {
        let level = if synced { "FULL" } else { "NORMAL" };
        self.connection
            .pragma_update(None, "synchronous", level)
            .map_err(|e| self.failed(e))?;
        self.connection
            .execute(sql, values)
            .map_err(|e| self.failed(e))
    }

    fn context_from_row(&self, row: ContextRow) -> Result<StoredContext, StoreError> {
        let id = u64::try_from(row.id).map_err(|_| StoreError::Foreign(self.name.clone()))?;
        let record = self
            .key
            .open_at(&self.name, &format!("contexts/{id}/record"), &row.record)?;
        let record: &[u8; RECORD_LEN] = record
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Foreign(self.name.clone()))?;
        let access_token = match row.access_token {
            Some(sealed) => Some(self.key.open_at(
                &self.name,
                &format!("contexts/{id}/access_token"),
                &sealed,
            )?),
            None => None,
        };
        let real_peer: SocketAddr = row
            .real_peer
            .parse()
            .map_err(|_| StoreError::Foreign(self.name.clone()))?;
        let number = |n: i64| u64::try_from(n).map_err(|_| StoreError::Foreign(self.name.clone()));
        Ok(StoredContext {
            id,
            rid: row.rid,
            peer_kid: row.peer_kid,
            token_name: row.token_name,
            real_peer,
            record: ContextRecord::from_bytes(record),
            sequence_mark: number(row.sequence_mark)?,
            replay_high_water: row.replay_high_water.map(number).transpose()?,
            access_token,
            observation: match row.observation {
                (Some(token), Some(piv)) => Some((token, number(piv)?)),
                _ => None,
            },
            sticky: row.sticky,
        })
    }
}

/// Only the gateway's user may read the file: its secrets are sealed, but room ids and the
/// times of a token's activity are not.
fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A row of `contexts` as read, its secrets still sealed.
struct ContextRow {
    id: i64,
    rid: Vec<u8>,
    peer_kid: Vec<u8>,
    token_name: String,
    real_peer: String,
    record: Vec<u8>,
    sequence_mark: i64,
    replay_high_water: Option<i64>,
    access_token: Option<Vec<u8>>,
    observation: (Option<Vec<u8>>, Option<i64>),
    sticky: Option<Vec<u8>>,
}

impl StateStore for SqliteStore {
    fn contexts(&mut self) -> Result<Vec<StoredContext>, StoreError> {
        let rows = {
            let mut statement = self
                .connection
                .prepare(
                    "SELECT id, rid, peer_kid, token_name, real_peer, record, sequence_mark, \
                     replay_high_water, access_token, observation_token, observation_piv, \
                     sticky FROM contexts ORDER BY id",
                )
                .map_err(|e| self.failed(e))?;
            let rows = statement
                .query_map([], |row| {
                    Ok(ContextRow {
                        id: row.get(0)?,
                        rid: row.get(1)?,
                        peer_kid: row.get(2)?,
                        token_name: row.get(3)?,
                        real_peer: row.get(4)?,
                        record: row.get(5)?,
                        sequence_mark: row.get(6)?,
                        replay_high_water: row.get(7)?,
                        access_token: row.get(8)?,
                        observation: (row.get(9)?, row.get(10)?),
                        sticky: row.get(11)?,
                    })
                })
                .map_err(|e| self.failed(e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|_| StoreError::Foreign(self.name.clone()))?
        };
        rows.into_iter()
            .map(|row| self.context_from_row(row))
            .collect()
    }

    fn put_context(&mut self, context: &StoredContext) -> Result<(), StoreError> {
        let id = context.id;
        let record = self
            .key
            .seal_at(&format!("contexts/{id}/record"), context.record.as_bytes())?;
        let access_token = context
            .access_token
            .as_ref()
            .map(|t| self.key.seal_at(&format!("contexts/{id}/access_token"), t))
            .transpose()?;
        self.connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.failed(e))?;
        let transaction = self
            .connection
            .unchecked_transaction()
            .map_err(|e| self.failed(e))?;
        transaction
            .execute(
                "DELETE FROM contexts WHERE peer_kid = ?1 OR rid = ?2 OR id = ?3",
                params![context.peer_kid, context.rid, integer(id)],
            )
            .map_err(|e| self.failed(e))?;
        transaction
            .execute(
                "INSERT INTO contexts (id, rid, peer_kid, token_name, real_peer, record, \
                 sequence_mark, replay_high_water, access_token, observation_token, \
                 observation_piv, sticky) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    integer(id),
                    context.rid,
                    context.peer_kid,
                    context.token_name,
                    context.real_peer.to_string(),
                    record,
                    integer(context.sequence_mark),
                    context.replay_high_water.map(integer),
                    access_token,
                    context.observation.as_ref().map(|(token, _)| token),
                    context.observation.as_ref().map(|(_, piv)| integer(*piv)),
                    context.sticky,
                ],
            )
            .map_err(|e| self.failed(e))?;
        transaction.commit().map_err(|e| self.failed(e))
    }

    fn reserve_sequence(&mut self, id: u64, mark: u64) -> Result<(), StoreError> {
        self.write(
            true,
            "UPDATE contexts SET sequence_mark = max(sequence_mark, ?2) WHERE id = ?1",
            params![integer(id), integer(mark)],
        )
        .map(drop)
    }

    fn accept_request(&mut self, id: u64, piv: u64) -> Result<(), StoreError> {
        self.write(
            false,
            "UPDATE contexts SET replay_high_water = max(coalesce(replay_high_water, -1), ?2) \
             WHERE id = ?1",
            params![integer(id), integer(piv)],
        )
        .map(drop)
    }

    fn observe(&mut self, id: u64, coap_token: &[u8], piv: u64) -> Result<(), StoreError> {
        self.write(
            false,
            "UPDATE contexts SET observation_token = ?2, observation_piv = ?3 WHERE id = ?1",
            params![integer(id), coap_token, integer(piv)],
        )
        .map(drop)
    }

    fn put_sticky(&mut self, id: u64, record: &[u8]) -> Result<(), StoreError> {
        self.write(
            false,
            "UPDATE contexts SET sticky = ?2 WHERE id = ?1",
            params![integer(id), record],
        )
        .map(drop)
    }

    fn bind_access_token(&mut self, id: u64, access_token: &[u8]) -> Result<(), StoreError> {
        let sealed = self
            .key
            .seal_at(&format!("contexts/{id}/access_token"), access_token)?;
        self.write(
            false,
            "UPDATE contexts SET access_token = ?2 WHERE id = ?1",
            params![integer(id), sealed],
        )
        .map(drop)
    }

    fn forget_context(&mut self, id: u64) -> Result<(), StoreError> {
        self.write(
            true,
            "DELETE FROM contexts WHERE id = ?1",
            params![integer(id)],
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests;
