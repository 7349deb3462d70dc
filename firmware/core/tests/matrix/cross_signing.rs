//! Cross-signing set up on the token (`Token::cross_sign`): the keys it publishes and their
//! signatures, checked with vodozemac's Ed25519 against serde_json's canonical JSON; the
//! homeserver's user-interactive auth with the password, or none (MSC3967); a refused
//! password said in words; the same keys published again after a reboot.

use serde_json::{Value, json};

use super::gateway::{TOKEN_USER, UIA_SESSION};
use super::{World, canonical, verify};

/// The one Ed25519 key of a cross-signing key object: its id after `ed25519:`, and the key.
fn ed25519_key(object: &Value) -> String {
    let keys = object["keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1, "{object}");
    let (id, key) = keys.iter().next().unwrap();
    assert_eq!(id.strip_prefix("ed25519:"), key.as_str(), "{object}");
    key.as_str().unwrap().to_string()
}

/// The signature of `object` by `signer` (a key id after `ed25519:`).
fn signature_by(object: &Value, signer: &str) -> String {
    object["signatures"][TOKEN_USER][format!("ed25519:{signer}")]
        .as_str()
        .unwrap_or_else(|| panic!("no signature by {signer}: {object}"))
        .to_string()
}

/// A logged-in token that bootstraps cross-signing with `password`, run until it is done.
fn cross_signed(seed: u64, uia: bool, password: &str) -> World {
    let mut world = World::logged_in(seed);
    world.gw.hs.cross_signing_uia = uia;
    let now = world.instant();
    let (up, down) = (world.bytes_up, world.bytes_down);
    world.token().cross_sign(password, now).unwrap();
    world.run_until(30_000, |w| {
        w.screen()
            .iter()
            .any(|l| l.starts_with("cross-signed") || l.starts_with("error"))
    });
    println!(
        "cross-signing bootstrap (auth asked: {uia}): {} B up, {} B down on the link",
        world.bytes_up - up,
        world.bytes_down - down
    );
    world
}

/// Checks what the token published, and returns the master key.
fn check_published(world: &World) -> String {
    let keys = world
        .gw
        .hs
        .cross_signing_keys
        .clone()
        .expect("keys published");
    let master = &keys["master_key"];
    assert_eq!(master["user_id"], TOKEN_USER);
    assert_eq!(master["usage"], json!(["master"]));
    let master_key = ed25519_key(master);
    for (name, usage) in [
        ("self_signing_key", "self_signing"),
        ("user_signing_key", "user_signing"),
    ] {
        let subkey = &keys[name];
        assert_eq!(subkey["user_id"], TOKEN_USER);
        assert_eq!(subkey["usage"], json!([usage]));
        let signature = signature_by(subkey, &master_key);
        assert!(
            verify(&master_key, subkey, &signature),
            "{name} signed by the master key"
        );
        // The token's canonical JSON is serde_json's.
        let public = ed25519_key(subkey);
        let public = jeton_olm::Ed25519PublicKey::from_base64(&public).unwrap();
        let mut out = [0u8; 256];
        let ours = jeton_core::matrix::cross_signing_key_json(&mut out, TOKEN_USER, usage, &public)
            .unwrap();
        assert_eq!(std::str::from_utf8(ours).unwrap(), canonical(subkey));
    }

    // The device keys as the homeserver holds them, signed by the self-signing key.
    let self_signing = ed25519_key(&keys["self_signing_key"]);
    let device = world.token_device();
    let [upload] = world.gw.hs.signature_uploads.as_slice() else {
        panic!("one signature upload: {:?}", world.gw.hs.signature_uploads);
    };
    assert_eq!(upload.as_object().unwrap().len(), 1);
    let signed = &upload[TOKEN_USER][&device];
    let stored = &world.gw.hs.device_keys[&(TOKEN_USER.to_string(), device.clone())];
    assert_eq!(
        canonical(signed),
        canonical(stored),
        "the device keys as uploaded"
    );
    let signature = signature_by(signed, &self_signing);
    assert!(
        verify(&self_signing, signed, &signature),
        "the device signed by the self-signing key"
    );
    assert!(
        world.saw(&format!("cross-signed {TOKEN_USER} master {master_key}")),
        "{:?}",
        world.screen()
    );
    master_key
}

#[test]
fn cross_signing_with_the_password_publishes_keys_signed_by_the_master_and_signs_the_device() {
    let world = cross_signed(71, true, "secret");
    check_published(&world);
    // First without auth, as the spec's user-interactive auth begins; then with the password
    // and the session the challenge gave.
    let uploads = &world.gw.hs.device_signing_uploads;
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads[0].get("auth").is_none());
    assert_eq!(uploads[1]["auth"]["session"], UIA_SESSION);
    assert!(
        !world.screen().iter().any(|l| l.starts_with("error")),
        "{:?}",
        world.screen()
    );
}

#[test]
fn a_homeserver_that_takes_first_keys_without_auth_gets_them_once() {
    let world = cross_signed(72, false, "secret");
    check_published(&world);
    assert_eq!(world.gw.hs.device_signing_uploads.len(), 1);
}

#[test]
fn a_refused_password_ends_the_bootstrap_in_words_and_signs_nothing() {
    let mut world = cross_signed(73, true, "wrong");
    assert!(
        world.saw(
            "error cross-signing failed: the homeserver did not accept the password: run xsign \
             again with the right one"
        ),
        "{:?}",
        world.screen()
    );
    assert!(world.gw.hs.cross_signing_keys.is_none());
    assert!(world.gw.hs.signature_uploads.is_empty());
    // The token carries on, and the person may try again.
    world.run_for(5_000);
    let now = world.instant();
    world.token().cross_sign("secret", now).unwrap();
    world.run_until(30_000, |w| {
        w.screen().iter().any(|l| l.starts_with("cross-signed"))
    });
    check_published(&world);
}

#[test]
fn a_bootstrap_after_a_reboot_publishes_the_same_keys_and_one_at_a_time() {
    let mut world = cross_signed(74, false, "secret");
    let master = check_published(&world);
    let now = world.instant();
    world.power_cycle();
    world.token().cross_sign("secret", now).unwrap();
    assert!(
        world.token().cross_sign("secret", now).is_err(),
        "one at a time"
    );
    world.run_until(30_000, |w| w.gw.hs.signature_uploads.len() == 2);
    let keys = world.gw.hs.cross_signing_keys.clone().unwrap();
    assert_eq!(ed25519_key(&keys["master_key"]), master);
}
