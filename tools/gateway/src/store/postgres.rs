//! [`StateStore`] in a PostgreSQL database (`--database postgres://...`), in its own schema
//! `jeton_gateway`, made and updated by [`migrate`] (`jeton-gateway migrate`), never at start:
//! a gateway finds its tables at the version it reads, or stops with a sentence saying to
//! migrate. Secrets are sealed as in the SQLite file ([`SealingKey`]).
//!
//! The link calls the store synchronously from the gateway's event loop, which runs on a
//! tokio worker thread, and must not go on before a write is durable (a sequence number is
//! used only once its reservation is stored). The `postgres` client blocks on a runtime of its
//! own, which tokio forbids inside another runtime's thread, so one thread of its own holds the
//! connection and the store hands it each statement and waits for its answer: the event loop
//! waits for the database as it waits for SQLite's disk, from any thread, with or without a
//! runtime.
//!
//! Durability as in the SQLite file: the writes that guard a nonce (a new context, a sequence
//! reservation, forgetting a context) commit synchronously; the others (the replay mark, the
//! access token, the observation, the sticky state) with `synchronous_commit = off`, durable
//! against a crash of the gateway but not of the database server. One gateway at a time uses a
//! database: it holds a session advisory lock, which the server lets go when the connection
//! ends (the gateway died; a dead machine's connection within half a minute, by keepalives). A connection lost is made again, lock included, and the write that
//! found it lost is made on the new one.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jeton_link::ContextRecord;
use jeton_link::oscore::RECORD_LEN;
use postgres::error::{Severity, SqlState};
use postgres::{Client, NoTls};

use super::{SealingKey, StateStore, StoreError, StoredContext, integer};

/// The schema versions, each the statements that make it from the one before.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE jeton_gateway.meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
    CREATE TABLE jeton_gateway.contexts (
        id BIGINT PRIMARY KEY,
        rid BYTEA NOT NULL UNIQUE,
        peer_kid BYTEA NOT NULL,
        token_name TEXT NOT NULL,
        real_peer TEXT NOT NULL,
        record BYTEA NOT NULL,
        sequence_mark BIGINT NOT NULL,
        replay_high_water BIGINT,
        access_token BYTEA,
        observation_token BYTEA,
        observation_piv BIGINT,
        sticky BYTEA
    );"];
/// The schema version this gateway reads.
const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;
/// The advisory lock a gateway holds on its database ("jgws").
const LOCK: i64 = 0x6a67_7773;
/// How long a gateway waits for the lock: its predecessor's connection may still be closing.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long a statement may take before the store gives up on it (the event loop waits).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A value sealed in the database: it opens only under the identity that first used it.
const CHECK: &[u8] = b"jeton gateway state";

/// A `postgres://` or `postgresql://` URL; it may hold a password, so its `Debug` does not
/// show it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// `url` if it names a PostgreSQL database.
    pub fn new(url: &str) -> Option<Self> {
        (url.starts_with("postgres://") || url.starts_with("postgresql://"))
            .then(|| Self(url.to_owned()))
    }

    /// The connection settings, and the database's name for messages (no password).
    fn config(&self) -> Result<(postgres::Config, String), StoreError> {
        let mut config: postgres::Config = self.0.parse().map_err(|e| {
            StoreError::Database(format!(
                "the --database URL cannot be read: {e} (the form is postgres://USER:PASSWORD@HOST:PORT/DATABASE, or postgres:///DATABASE?host=/run/postgresql for a socket)"
            ))
        })?;
        // The event loop waits for each write: a server gone silent must fail it in seconds,
        // not after TCP's default hours (unless the URL says otherwise).
        config
            .application_name("jeton-gateway")
            .connect_timeout(STATEMENT_TIMEOUT)
            .keepalives(true);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(STATEMENT_TIMEOUT);
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(5));
        }
        let name = describe(&config);
        Ok((config, name))
    }
}

impl core::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

/// "the PostgreSQL database NAME on HOST as USER": what the messages call it.
fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => match config.get_ports().first() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        },
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".into(),
    };
    let user = config.get_user().unwrap_or("the default user");
    let database = config.get_dbname().unwrap_or(user);
    format!("the PostgreSQL database {database} on {host} as {user}")
}

/// What [`migrate`] did: the schema version before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version found (0: no gateway tables).
    pub from: i32,
    /// The version now.
    pub to: i32,
}

/// Makes or updates the gateway's tables in the database at `url`, in one transaction
/// (another migration at the same time waits). Blocks: call it outside an async runtime.
pub fn migrate(url: &DatabaseUrl) -> Result<Migrated, StoreError> {
    let (config, name) = url.config()?;
    let mut client = config.connect(NoTls).map_err(|e| failed(&name, &e))?;
    let mut transaction = client.transaction().map_err(|e| failed(&name, &e))?;
    transaction
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({LOCK}); \
             CREATE SCHEMA IF NOT EXISTS jeton_gateway; \
             CREATE TABLE IF NOT EXISTS jeton_gateway.schema_version (version INTEGER NOT NULL);"
        ))
        .map_err(|e| failed(&name, &e))?;
    let from: i32 = transaction
        .query_opt("SELECT version FROM jeton_gateway.schema_version", &[])
        .map_err(|e| failed(&name, &e))?
        .map_or(0, |row| row.get(0));
    if from > SCHEMA_VERSION {
        return Err(newer(&name, from));
    }
    for step in MIGRATIONS.iter().skip(usize::try_from(from).unwrap_or(0)) {
        transaction
            .batch_execute(step)
            .map_err(|e| failed(&name, &e))?;
    }
    transaction
        .batch_execute(&format!(
            "DELETE FROM jeton_gateway.schema_version; \
             INSERT INTO jeton_gateway.schema_version VALUES ({SCHEMA_VERSION});"
        ))
        .map_err(|e| failed(&name, &e))?;
    transaction.commit().map_err(|e| failed(&name, &e))?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

fn newer(name: &str, found: i32) -> StoreError {
    StoreError::Database(format!(
        "{name} holds gateway tables of version {found}, made by a newer jeton-gateway (this one reads version {SCHEMA_VERSION}): run that version or a newer one"
    ))
}

/// The error in the operator's words, saying what to do.
fn failed(name: &str, error: &postgres::Error) -> StoreError {
    let Some(db) = error.as_db_error() else {
        let cause = std::error::Error::source(error).map_or(String::new(), |c| format!(": {c}"));
        return StoreError::Database(format!(
            "{name} could not be reached: {error}{cause} (is the server running, and are the host and port in --database right?)"
        ));
    };
    let code = db.code();
    if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::INVALID_SCHEMA_NAME {
        StoreError::NotMigrated(name.to_owned())
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        StoreError::Database(format!(
            "{name} does not exist: create it (createdb, or CREATE DATABASE), then run `jeton-gateway migrate --database URL`"
        ))
    } else if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        StoreError::Database(format!(
            "{name} refused the login: {} (check the user and password in --database, and the server's pg_hba.conf)",
            db.message()
        ))
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        StoreError::Database(format!(
            "{name}: {} (the gateway's user needs to own the jeton_gateway schema, or run `jeton-gateway migrate` as that user)",
            db.message()
        ))
    } else if *code == SqlState::QUERY_CANCELED {
        StoreError::Database(format!(
            "{name} did not answer within {} s: {} (is the server overloaded, or a lock held?)",
            STATEMENT_TIMEOUT.as_secs(),
            db.message()
        ))
    } else {
        StoreError::Database(format!("{name}: {error}"))
    }
}

/// The connection, on the store's own thread; made again when it was lost.
struct Session {
    config: postgres::Config,
    name: String,
    client: Option<Client>,
}

impl Session {
    /// The connection, made (the lock taken, the schema checked) if there is none.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        match &mut self.client {
            Some(client) => Ok(client),
            slot @ None => {
                let client = connect(&self.config, &self.name)?;
                Ok(slot.insert(client))
            }
        }
    }

    /// Runs `work` on the connection. A connection found lost is made again and `work` run
    /// once more: every write is idempotent (marks only go up, a context is replaced whole).
    fn run<T>(
        &mut self,
        work: impl Fn(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        match work(self.client()?) {
            Err(e) if lost(&e) => {
                tracing::warn!(database = %self.name, error = %e, "connection to PostgreSQL lost: connecting again");
                self.client = None;
                work(self.client()?).map_err(|e| {
                    if lost(&e) {
                        self.client = None;
                    }
                    failed(&self.name, &e)
                })
            }
            result => result.map_err(|e| failed(&self.name, &e)),
        }
    }
}

/// Whether `error` ended the connection (the server went away, or ended the session).
fn lost(error: &postgres::Error) -> bool {
    match error.as_db_error() {
        None => true,
        Some(db) => {
            error.is_closed()
                || matches!(
                    db.parsed_severity(),
                    Some(Severity::Fatal | Severity::Panic)
                )
        }
    }
}

/// A connection holding the gateway's lock on the database, its schema checked.
fn connect(config: &postgres::Config, name: &str) -> Result<Client, StoreError> {
    let mut client = config.connect(NoTls).map_err(|e| failed(name, &e))?;
    // The server's keepalives on this session: when the gateway's machine dies without closing
    // the connection, the server ends it, and so lets go of the lock, within half a minute
    // (its default waits for hours), for the gateway started again on another machine.
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}; SET synchronous_commit = off; \
             SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
             SET tcp_keepalives_count = 3;",
            STATEMENT_TIMEOUT.as_millis()
        ))
        .map_err(|e| failed(name, &e))?;
    let version: Option<i32> = client
        .query_opt("SELECT version FROM jeton_gateway.schema_version", &[])
        .map_err(|e| failed(name, &e))?
        .map(|row| row.get(0));
    match version {
        Some(SCHEMA_VERSION) => {}
        Some(found) if found > SCHEMA_VERSION => return Err(newer(name, found)),
        _ => return Err(StoreError::NotMigrated(name.to_owned())),
    }
    let started = Instant::now();
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK])
            .map_err(|e| failed(name, &e))?
            .get(0);
        if locked {
            return Ok(client);
        }
        if started.elapsed() > LOCK_WAIT {
            return Err(StoreError::InUse(name.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The PostgreSQL store.
pub struct PostgresStore {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    key: SealingKey,
    name: String,
}

impl core::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (migrated, not in use by another gateway), its
    /// secrets sealed with `key`; the first gateway to use it marks it with its identity.
    pub fn connect(url: &DatabaseUrl, key: SealingKey) -> Result<Self, StoreError> {
        let (config, name) = url.config()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut session = Session {
            config,
            name: name.clone(),
            client: None,
        };
        let worker = std::thread::Builder::new()
            .name("jeton-gateway-postgres".into())
            .spawn(move || {
                for job in queue {
                    job(&mut session);
                }
            })
            .map_err(|e| StoreError::Database(format!("no thread for {name}: {e}")))?;
        let store = PostgresStore {
            jobs: Some(jobs),
            worker: Some(worker),
            key,
            name,
        };
        store.check_identity()?;
        Ok(store)
    }

    /// What the messages call the database (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's check value opens under this identity (stored first if there is none).
    fn check_identity(&self) -> Result<(), StoreError> {
        let fresh = self.key.seal_at("meta/check", CHECK)?;
        let stored: Vec<u8> = self.call(move |client| {
            client.execute(
                "INSERT INTO jeton_gateway.meta (name, value) VALUES ('check', $1) \
                 ON CONFLICT (name) DO NOTHING",
                &[&fresh],
            )?;
            client
                .query_one(
                    "SELECT value FROM jeton_gateway.meta WHERE name = 'check'",
                    &[],
                )
                .map(|row| row.get(0))
        })?;
        match self.key.open(b"meta/check", &stored) {
            Some(value) if value.as_slice() == CHECK => Ok(()),
            _ => Err(StoreError::WrongIdentity(self.name.clone())),
        }
    }

    /// Runs `work` on the store's thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        work: impl Fn(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let gone = || StoreError::Database(format!("the connection thread of {} ended", self.name));
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |session| {
            let _ = answer.send(session.run(work));
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        answered.recv().map_err(|_| gone())?
    }

    /// Runs `sql` (numbers only, written into it) in one round trip, committed synchronously
    /// when `synced`.
    fn write(&self, synced: bool, sql: String) -> Result<(), StoreError> {
        let batch = if synced {
            format!("BEGIN; SET LOCAL synchronous_commit = on; {sql}; COMMIT;")
        } else {
            sql
        };
        self.call(move |client| client.batch_execute(&batch))
    }

    fn context_from_row(&self, row: &postgres::Row) -> Result<StoredContext, StoreError> {
        let foreign = || StoreError::Foreign(self.name.clone());
        let number = |n: i64| u64::try_from(n).map_err(|_| foreign());
        let id = number(row.get("id"))?;
        let record = self.key.open_at(
            &self.name,
            &format!("contexts/{id}/record"),
            row.get::<_, &[u8]>("record"),
        )?;
        let record: &[u8; RECORD_LEN] = record.as_slice().try_into().map_err(|_| foreign())?;
        let access_token = row
            .get::<_, Option<&[u8]>>("access_token")
            .map(|sealed| {
                self.key
                    .open_at(&self.name, &format!("contexts/{id}/access_token"), sealed)
            })
            .transpose()?;
        let real_peer: SocketAddr = row
            .get::<_, &str>("real_peer")
            .parse()
            .map_err(|_| foreign())?;
        let observation = match (
            row.get::<_, Option<Vec<u8>>>("observation_token"),
            row.get::<_, Option<i64>>("observation_piv"),
        ) {
            (Some(token), Some(piv)) => Some((token, number(piv)?)),
            _ => None,
        };
        Ok(StoredContext {
            id,
            rid: row.get("rid"),
            peer_kid: row.get("peer_kid"),
            token_name: row.get("token_name"),
            real_peer,
            record: ContextRecord::from_bytes(record),
            sequence_mark: number(row.get("sequence_mark"))?,
            replay_high_water: row
                .get::<_, Option<i64>>("replay_high_water")
                .map(number)
                .transpose()?,
            access_token,
            observation,
            sticky: row.get("sticky"),
        })
    }
}

impl Drop for PostgresStore {
    /// Ends the connection (and so lets go of the lock) before returning.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl StateStore for PostgresStore {
    fn contexts(&mut self) -> Result<Vec<StoredContext>, StoreError> {
        let rows = self.call(|client| {
            client.query(
                "SELECT id, rid, peer_kid, token_name, real_peer, record, sequence_mark, \
                 replay_high_water, access_token, observation_token, observation_piv, sticky \
                 FROM jeton_gateway.contexts ORDER BY id",
                &[],
            )
        })?;
        rows.iter().map(|row| self.context_from_row(row)).collect()
    }

    fn put_context(&mut self, context: &StoredContext) -> Result<(), StoreError> {
        let id = integer(context.id);
        let record = self.key.seal_at(
            &format!("contexts/{}/record", context.id),
            context.record.as_bytes(),
        )?;
        let access_token = context
            .access_token
            .as_ref()
            .map(|t| {
                self.key
                    .seal_at(&format!("contexts/{}/access_token", context.id), t)
            })
            .transpose()?;
        let (rid, peer_kid) = (context.rid.clone(), context.peer_kid.clone());
        let token_name = context.token_name.clone();
        let real_peer = context.real_peer.to_string();
        let sequence_mark = integer(context.sequence_mark);
        let replay_high_water = context.replay_high_water.map(integer);
        let observation_token = context.observation.as_ref().map(|(token, _)| token.clone());
        let observation_piv = context.observation.as_ref().map(|(_, piv)| integer(*piv));
        let sticky = context.sticky.clone();
        self.call(move |client| {
            let mut transaction = client.transaction()?;
            transaction.batch_execute("SET LOCAL synchronous_commit = on")?;
            transaction.execute(
                "DELETE FROM jeton_gateway.contexts WHERE peer_kid = $1 OR rid = $2 OR id = $3",
                &[&peer_kid, &rid, &id],
            )?;
            transaction.execute(
                "INSERT INTO jeton_gateway.contexts (id, rid, peer_kid, token_name, real_peer, \
                 record, sequence_mark, replay_high_water, access_token, observation_token, \
                 observation_piv, sticky) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &id,
                    &rid,
                    &peer_kid,
                    &token_name,
                    &real_peer,
                    &record,
                    &sequence_mark,
                    &replay_high_water,
                    &access_token,
                    &observation_token,
                    &observation_piv,
                    &sticky,
                ],
            )?;
            transaction.commit()
        })
    }

    fn reserve_sequence(&mut self, id: u64, mark: u64) -> Result<(), StoreError> {
        self.write(
            true,
            format!(
                "UPDATE jeton_gateway.contexts SET sequence_mark = GREATEST(sequence_mark, {}) \
                 WHERE id = {}",
                integer(mark),
                integer(id)
            ),
        )
    }

    fn accept_request(&mut self, id: u64, piv: u64) -> Result<(), StoreError> {
        self.write(
            false,
            format!(
                "UPDATE jeton_gateway.contexts \
                 SET replay_high_water = GREATEST(replay_high_water, {}) WHERE id = {}",
                integer(piv),
                integer(id)
            ),
        )
    }

    fn observe(&mut self, id: u64, coap_token: &[u8], piv: u64) -> Result<(), StoreError> {
        let (id, coap_token, piv) = (integer(id), coap_token.to_vec(), integer(piv));
        self.call(move |client| {
            client.execute(
                "UPDATE jeton_gateway.contexts SET observation_token = $2, observation_piv = $3 \
                 WHERE id = $1",
                &[&id, &coap_token, &piv],
            )
        })
        .map(drop)
    }

    fn put_sticky(&mut self, id: u64, record: &[u8]) -> Result<(), StoreError> {
        let (id, record) = (integer(id), record.to_vec());
        self.call(move |client| {
            client.execute(
                "UPDATE jeton_gateway.contexts SET sticky = $2 WHERE id = $1",
                &[&id, &record],
            )
        })
        .map(drop)
    }

    fn bind_access_token(&mut self, id: u64, access_token: &[u8]) -> Result<(), StoreError> {
        let sealed = self
            .key
            .seal_at(&format!("contexts/{id}/access_token"), access_token)?;
        let id = integer(id);
        self.call(move |client| {
            client.execute(
                "UPDATE jeton_gateway.contexts SET access_token = $2 WHERE id = $1",
                &[&id, &sealed],
            )
        })
        .map(drop)
    }

    fn forget_context(&mut self, id: u64) -> Result<(), StoreError> {
        self.write(
            true,
            format!(
                "DELETE FROM jeton_gateway.contexts WHERE id = {}",
                integer(id)
            ),
        )
    }
}

#[cfg(test)]
pub(super) mod cluster;

#[cfg(test)]
mod tests;
