//! What only the PostgreSQL store does; what every store does is in [`super::super::contract`].

use super::*;

use crate::store::contract::{context, key};

#[test]
fn a_database_without_tables_says_to_migrate_and_migrating_twice_is_harmless() {
    let Some(url) = cluster::fresh_database("unmigrated") else {
        return;
    };
    let error = PostgresStore::connect(&url, key()).unwrap_err();
    assert!(matches!(error, StoreError::NotMigrated(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("run `jeton-gateway migrate --database URL`"),
        "{error}"
    );
    assert_eq!(
        migrate(&url).unwrap(),
        Migrated {
            from: 0,
            to: SCHEMA_VERSION
        }
    );
    assert_eq!(
        migrate(&url).unwrap(),
        Migrated {
            from: SCHEMA_VERSION,
            to: SCHEMA_VERSION
        }
    );
    let mut store = PostgresStore::connect(&url, key()).unwrap();
    assert!(store.contexts().unwrap().is_empty());
}

#[test]
fn tables_of_a_newer_gateway_are_left_alone() {
    let Some(url) = cluster::fresh_database("newer") else {
        return;
    };
    migrate(&url).unwrap();
    cluster::client(&url)
        .batch_execute("UPDATE jeton_gateway.schema_version SET version = 99")
        .unwrap();
    for error in [
        PostgresStore::connect(&url, key()).map(drop).unwrap_err(),
        migrate(&url).map(drop).unwrap_err(),
    ] {
        assert!(error.to_string().contains("newer jeton-gateway"), "{error}");
    }
}

#[test]
fn a_server_that_is_not_there_gets_a_sentence_without_the_password() {
    let url = DatabaseUrl::new("postgres://gateway:hunter2@127.0.0.1:1/jeton").unwrap();
    let error = PostgresStore::connect(&url, key()).unwrap_err().to_string();
    assert!(error.contains("could not be reached"), "{error}");
    assert!(
        error.contains("the PostgreSQL database jeton on 127.0.0.1:1 as gateway"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
    assert!(!format!("{url:?}").contains("hunter2"));
}

/// The gateway calls the store from its event loop, a tokio worker thread, where the
/// `postgres` client's own runtime may not block.
#[test]
fn the_store_works_from_inside_an_async_runtime() {
    let Some(url) = cluster::fresh_database("in_runtime") else {
        return;
    };
    migrate(&url).unwrap();
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread().build().unwrap(),
    ] {
        let url = url.clone();
        runtime.block_on(async move {
            let mut store = PostgresStore::connect(&url, key()).unwrap();
            store.put_context(&context(1, b"\x0a")).unwrap();
            store.reserve_sequence(1, 200).unwrap();
            assert_eq!(store.contexts().unwrap()[0].sequence_mark, 200);
        });
    }
}

#[test]
fn a_write_that_finds_its_connection_lost_is_made_on_a_new_one_with_the_lock() {
    let Some(url) = cluster::fresh_database("reconnect") else {
        return;
    };
    migrate(&url).unwrap();
    let mut store = PostgresStore::connect(&url, key()).unwrap();
    store.put_context(&context(1, b"\x0a")).unwrap();
    let mut admin = cluster::client(&url);
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'jeton-gateway' AND datname = current_database() \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ended, 1);
    store.reserve_sequence(1, 192).unwrap();
    assert_eq!(store.contexts().unwrap()[0].sequence_mark, 192);
    let error = PostgresStore::connect(&url, key()).map(drop).unwrap_err();
    assert!(
        matches!(error, StoreError::InUse(_)),
        "the new connection holds the lock: {error:?}"
    );
}
