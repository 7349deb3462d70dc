//! What every [`StateStore`] promises, one function per property, run against each
//! implementation: SQLite in a temporary file, and PostgreSQL on a throwaway cluster
//! ([`super::postgres::cluster`]; skipped, loudly, where PostgreSQL is not installed).

use jeton_link::SecurityContext;

use super::postgres::cluster;
use super::{
    DatabaseUrl, PostgresStore, SealingKey, SqliteStore, StateStore, StoreError, StoredContext,
};

/// One implementation, with a place of its own for one test.
trait Backend {
    /// Opens the store at this place.
    fn open(&self, key: SealingKey) -> Result<Box<dyn StateStore>, StoreError>;
    /// Every byte stored there, as it lies at rest.
    fn at_rest(&self) -> Vec<u8>;
}

struct Sqlite {
    dir: std::path::PathBuf,
}

impl Sqlite {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("jeton-contract-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Sqlite { dir }
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Backend for Sqlite {
    fn open(&self, key: SealingKey) -> Result<Box<dyn StateStore>, StoreError> {
        Ok(Box::new(SqliteStore::open(
            &self.dir.join("state.sqlite3"),
            key,
        )?))
    }

    fn at_rest(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        bytes
    }
}

struct Postgres {
    url: DatabaseUrl,
}

impl Postgres {
    /// A fresh migrated database, or `None` without PostgreSQL.
    fn new(test: &str) -> Option<Self> {
        let url = cluster::fresh_database(test)?;
        super::migrate(&url).unwrap();
        Some(Postgres { url })
    }
}

impl Backend for Postgres {
    fn open(&self, key: SealingKey) -> Result<Box<dyn StateStore>, StoreError> {
        Ok(Box::new(PostgresStore::connect(&self.url, key)?))
    }

    fn at_rest(&self) -> Vec<u8> {
        let mut client = cluster::client(&self.url);
        let mut bytes = Vec::new();
        for row in client
            .query(
                "SELECT rid, peer_kid, convert_to(token_name, 'UTF8'), record, \
                 coalesce(access_token, ''), coalesce(sticky, '') FROM jeton_gateway.contexts \
                 UNION ALL SELECT value, '', '', '', '', '' FROM jeton_gateway.meta",
                &[],
            )
            .unwrap()
        {
            for column in 0..6 {
                bytes.extend(row.get::<_, Vec<u8>>(column));
            }
        }
        bytes
    }
}

/// The identity's key the tests seal with.
pub(super) fn key() -> SealingKey {
    SealingKey::from_identity(&[9; 32])
}

/// A context numbered `id` of the token with credential kid `kid`.
pub(super) fn context(id: u64, kid: &[u8]) -> StoredContext {
    let oscore = SecurityContext::derive(b"master secret 16", b"salt", b"\x01", kid).unwrap();
    StoredContext {
        id,
        rid: vec![id as u8],
        peer_kid: kid.to_vec(),
        token_name: "kitchen".into(),
        real_peer: "127.0.0.1:5000".parse().unwrap(),
        record: oscore.to_record(),
        sequence_mark: 64,
        replay_high_water: None,
        access_token: None,
        observation: None,
        sticky: None,
    }
}

fn what_is_stored_comes_back_after_reopening(backend: &dyn Backend) {
    let mut store = backend.open(key()).unwrap();
    store.put_context(&context(1, b"\x0a")).unwrap();
    store.reserve_sequence(1, 128).unwrap();
    store.reserve_sequence(1, 96).unwrap();
    store.accept_request(1, 41).unwrap();
    store.accept_request(1, 7).unwrap();
    store.bind_access_token(1, b"syt_kitchen_secret").unwrap();
    store.observe(1, b"ob", 40).unwrap();
    store.put_sticky(1, b"{\"rooms\":[]}").unwrap();
    drop(store);

    let mut store = backend.open(key()).unwrap();
    let stored = store.contexts().unwrap();
    assert_eq!(stored.len(), 1);
    let c = &stored[0];
    assert_eq!(
        (c.id, c.rid.as_slice(), c.token_name.as_str()),
        (1, &[1u8][..], "kitchen")
    );
    assert_eq!(c.real_peer, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(c.sequence_mark, 128, "a reservation never goes down");
    assert_eq!(
        c.replay_high_water,
        Some(41),
        "the replay mark never goes down"
    );
    assert_eq!(
        c.access_token.as_deref().map(Vec::as_slice),
        Some(&b"syt_kitchen_secret"[..])
    );
    assert_eq!(c.record.as_bytes(), context(1, b"\x0a").record.as_bytes());
    assert_eq!(c.observation, Some((b"ob".to_vec(), 40)));
    assert_eq!(c.sticky.as_deref(), Some(&b"{\"rooms\":[]}"[..]));
    assert!(!format!("{c:?}").contains("syt_"), "Debug shows no secret");
}

fn a_new_handshake_replaces_the_tokens_context_and_a_revoked_one_goes(backend: &dyn Backend) {
    let mut store = backend.open(key()).unwrap();
    store.put_context(&context(1, b"\x0a")).unwrap();
    store.put_context(&context(2, b"\x0b")).unwrap();
    store.put_context(&context(3, b"\x0a")).unwrap();
    let ids = |store: &mut Box<dyn StateStore>| -> Vec<u64> {
        store.contexts().unwrap().iter().map(|c| c.id).collect()
    };
    assert_eq!(ids(&mut store), [2, 3]);
    store.forget_context(2).unwrap();
    assert_eq!(ids(&mut store), [3]);
    drop(store);
    assert_eq!(ids(&mut backend.open(key()).unwrap()), [3]);
}

fn secrets_are_sealed_at_rest(backend: &dyn Backend) {
    let mut store = backend.open(key()).unwrap();
    store.put_context(&context(1, b"\x0a")).unwrap();
    store.bind_access_token(1, b"syt_kitchen_secret").unwrap();
    drop(store);
    let bytes = backend.at_rest();
    assert!(
        bytes.windows(7).any(|w| w == b"kitchen"),
        "the test reads what is stored"
    );
    let secret = context(1, b"\x0a").record.as_bytes()[1..17].to_vec();
    assert!(
        !bytes.windows(16).any(|w| w == secret),
        "OSCORE key in clear"
    );
    assert!(
        !bytes.windows(10).any(|w| w == b"syt_kitche"),
        "access token in clear"
    );
}

fn another_identity_cannot_read_it(backend: &dyn Backend) {
    let mut store = backend.open(key()).unwrap();
    store.put_context(&context(1, b"\x0a")).unwrap();
    drop(store);
    let error = backend
        .open(SealingKey::from_identity(&[8; 32]))
        .map(drop)
        .unwrap_err();
    assert!(matches!(error, StoreError::WrongIdentity(_)), "{error:?}");
    assert!(error.to_string().contains("another identity"), "{error}");
}

fn one_gateway_at_a_time(backend: &dyn Backend) {
    let mut holder = backend.open(key()).unwrap();
    holder.put_context(&context(1, b"\x0a")).unwrap();
    let error = backend.open(key()).map(drop).unwrap_err();
    assert!(matches!(error, StoreError::InUse(_)), "{error:?}");
    assert!(
        error.to_string().contains("another jeton-gateway"),
        "{error}"
    );
    drop(holder);
    assert_eq!(backend.open(key()).unwrap().contexts().unwrap().len(), 1);
}

/// One test per property and implementation: `sqlite::NAME` and `postgres::NAME`.
macro_rules! for_each_backend {
    ($($property:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $property() {
                super::$property(&super::Sqlite::new(stringify!($property)));
            })*
        }
        mod postgres {
            $(#[test]
            fn $property() {
                if let Some(backend) = super::Postgres::new(stringify!($property)) {
                    super::$property(&backend);
                }
            })*
        }
    };
}

for_each_backend!(
    what_is_stored_comes_back_after_reopening,
    a_new_handshake_replaces_the_tokens_context_and_a_revoked_one_goes,
    secrets_are_sealed_at_rest,
    another_identity_cannot_read_it,
    one_gateway_at_a_time,
);

/// What the event loop waits for per request (the replay mark) and per block of 64 responses
/// (a sequence reservation), on each store: `cargo test -p jeton-gateway --lib
/// the_cost_of_writes -- --ignored --nocapture` (PostgreSQL on the local socket).
#[test]
#[ignore = "a measurement, not a check"]
fn the_cost_of_writes() {
    fn measure(name: &str, backend: &dyn Backend) {
        const N: u64 = 2000;
        let mut store = backend.open(key()).unwrap();
        store.put_context(&context(1, b"\x0a")).unwrap();
        let started = std::time::Instant::now();
        for piv in 0..N {
            store.accept_request(1, piv).unwrap();
        }
        let replay = started.elapsed() / N as u32;
        let started = std::time::Instant::now();
        for block in 0..N / 10 {
            store.reserve_sequence(1, 64 * (block + 2)).unwrap();
        }
        let reserve = started.elapsed() / (N / 10) as u32;
        println!(
            "{name}: replay mark {replay:?} per request, sequence reservation {reserve:?} per block"
        );
    }
    measure("SQLite", &Sqlite::new("cost"));
    match Postgres::new("cost") {
        Some(backend) => measure("PostgreSQL", &backend),
        None => println!("PostgreSQL: skipped (not installed)"),
    }
}
