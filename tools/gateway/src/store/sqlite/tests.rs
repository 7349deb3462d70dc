//! What only the SQLite file does; what every store does is in [`super::super::contract`].

use super::*;

use crate::store::contract::{context, key};

/// A fresh directory for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("jeton-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(unix)]
#[test]
fn only_the_gateways_user_reads_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("mode");
    let path = dir.join("state.sqlite3");
    drop(SqliteStore::open(&path, key()).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_foreign_or_damaged_file_gets_a_sentence_and_is_left_alone() {
    let dir = scratch("foreign");
    let garbage = dir.join("garbage.sqlite3");
    std::fs::write(&garbage, vec![0x42; 4096]).unwrap();
    let error = SqliteStore::open(&garbage, key()).unwrap_err();
    assert!(matches!(error, StoreError::Foreign(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("is not a jeton gateway state database"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![0x42; 4096],
        "left as it was"
    );

    let other = dir.join("other.sqlite3");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE users (name TEXT)")
        .unwrap();
    let error = SqliteStore::open(&other, key()).unwrap_err();
    assert!(matches!(error, StoreError::Foreign(_)), "{error:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_in_memory_store_needs_no_file() {
    let mut store = SqliteStore::in_memory(key()).unwrap();
    store.put_context(&context(3, b"\x0c")).unwrap();
    assert_eq!(store.contexts().unwrap().len(), 1);
}
