use super::*;

use jeton_link::SecurityContext;

/// A fresh directory for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("jeton-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key() -> SealingKey {
    SealingKey::from_identity(&[9; 32])
}

fn context(id: u64, kid: &[u8]) -> StoredContext {
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

#[test]
fn what_is_stored_comes_back_after_reopening_and_secrets_are_not_in_clear() {
    let dir = scratch("roundtrip");
    let path = dir.join("state.sqlite3");
    let mut store = SqliteStore::open(&path, key()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "only the gateway's user reads the state"
        );
    }
    store.put_context(&context(1, b"\x0a")).unwrap();
    store.reserve_sequence(1, 128).unwrap();
    store.reserve_sequence(1, 96).unwrap();
    store.accept_request(1, 41).unwrap();
    store.accept_request(1, 7).unwrap();
    store.bind_access_token(1, b"syt_kitchen_secret").unwrap();
    store.observe(1, b"ob", 40).unwrap();
    store.put_sticky(1, b"{\"rooms\":[]}").unwrap();
    drop(store);

    let mut store = SqliteStore::open(&path, key()).unwrap();
    let stored = store.contexts().unwrap();
    assert_eq!(stored.len(), 1);
    let c = &stored[0];
    assert_eq!(
        (c.id, c.rid.as_slice(), c.token_name.as_str()),
        (1, &[1u8][..], "kitchen")
    );
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

    // A new handshake of the same token replaces its context.
    store.put_context(&context(2, b"\x0a")).unwrap();
    let ids: Vec<u64> = store.contexts().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, [2]);
    store.forget_context(2).unwrap();
    assert!(store.contexts().unwrap().is_empty());
    drop(store);

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let secret = context(1, b"\x0a").record.as_bytes()[1..17].to_vec();
    assert!(
        !bytes.windows(16).any(|w| w == secret),
        "OSCORE key in clear"
    );
    assert!(
        !bytes.windows(10).any(|w| w == b"syt_kitche"),
        "access token in clear"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_foreign_or_damaged_file_or_another_identity_gets_a_sentence() {
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

    let ours = dir.join("ours.sqlite3");
    let mut holder = SqliteStore::open(&ours, key()).unwrap();
    holder.put_context(&context(1, b"\x0a")).unwrap();
    let error = SqliteStore::open(&ours, key()).unwrap_err();
    assert!(matches!(error, StoreError::InUse(_)), "{error:?}");
    assert!(
        error.to_string().contains("another jeton-gateway"),
        "{error}"
    );
    drop(holder);
    let error = SqliteStore::open(&ours, SealingKey::from_identity(&[8; 32])).unwrap_err();
    assert!(matches!(error, StoreError::WrongIdentity(_)), "{error:?}");
    assert!(error.to_string().contains("another identity"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_in_memory_store_needs_no_file() {
    let mut store = SqliteStore::in_memory(key()).unwrap();
    store.put_context(&context(3, b"\x0c")).unwrap();
    assert_eq!(store.contexts().unwrap().len(), 1);
}
