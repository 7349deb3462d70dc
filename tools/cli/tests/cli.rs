//! Runs the `jeton` binary as a user would and checks stdout, stderr and the exit status.

use assert_cmd::Command;

/// MSC3079's test object and its canonical CBOR (the proposal's own example).
const HELLO_WORLD_JSON: &str = r#"{"type":"m.room.message","content":{"msgtype":"m.text","body":"Hello World"},"sender":"@alice:localhost","room_id":"!foo:localhost","unsigned":{"bool_value":true,"null_value":null}}"#;
const HELLO_WORLD_CBOR: &str = "a5026e6d2e726f6f6d2e6d65737361676503a2181b6b48656c6c6f20576f726c64181c666d2e74657874056e21666f6f3a6c6f63616c686f7374067040616c6963653a6c6f63616c686f737409a26a626f6f6c5f76616c7565f56a6e756c6c5f76616c7565f6";

fn jeton() -> Command {
    Command::cargo_bin("jeton").unwrap()
}

fn fails_with_one_line(mut command: Command, message: &str) {
    let output = command.assert().code(2).stdout("").get_output().clone();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(message),
        "{stderr:?} should contain {message:?}"
    );
}

#[test]
fn encode_hello_world_as_hex_matches_the_msc() {
    jeton()
        .args(["cbor", "encode", "--profile", "v1", "--hex"])
        .write_stdin(HELLO_WORLD_JSON)
        .assert()
        .success()
        .stdout(format!("{HELLO_WORLD_CBOR}\n"))
        .stderr("");
}

#[test]
fn encode_raw_and_decode_raw_round_trip() {
    let cbor = jeton()
        .args(["cbor", "encode", "--profile", "v2"])
        .write_stdin(HELLO_WORLD_JSON)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    // v2 codes the two well-known values: "m.room.message" as `e3`, "m.text" as `e7`.
    let v2_hex = HELLO_WORLD_CBOR
        .replacen("6e6d2e726f6f6d2e6d657373616765", "e3", 1)
        .replacen("666d2e74657874", "e7", 1);
    assert_eq!(hex::encode(&cbor), v2_hex);
    let output = jeton()
        .args(["cbor", "decode"])
        .write_stdin(cbor)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let decoded: serde_json::Value = serde_json::from_slice(&output).unwrap();
    let original: serde_json::Value = serde_json::from_str(HELLO_WORLD_JSON).unwrap();
    assert_eq!(decoded, original);
}

#[test]
fn decode_hex_expands_integer_keys_to_names() {
    jeton()
        .args(["cbor", "decode", "--hex", "--profile", "v1"])
        .write_stdin("a1 02 61 78\n")
        .assert()
        .success()
        .stdout("{\"type\":\"x\"}\n");
}

#[test]
fn v2_carries_megolm_ciphertext_as_bytes() {
    let json = r#"{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgAEhAA0T9gbB6oYvx9NYRAUgs"}"#;
    let v1 = jeton()
        .args(["cbor", "encode", "--profile", "v1", "--hex"])
        .write_stdin(json)
        .output()
        .unwrap();
    let v2 = jeton()
        .args(["cbor", "encode", "--profile", "v2", "--hex"])
        .write_stdin(json)
        .output()
        .unwrap();
    // 27 base64 characters are 20 bytes: 7 bytes saved, and the 2-byte text header becomes 1 byte;
    // the algorithm (1 + 20 bytes of text) becomes one well-known value byte.
    assert_eq!(v1.stdout.len() - v2.stdout.len(), 2 * (8 + 20));
}

#[test]
fn paths_compress_and_expand() {
    jeton()
        .args([
            "path",
            "compress",
            "/_matrix/client/v3/rooms/!room:server/send/m.room.encrypted/txn1",
        ])
        .assert()
        .success()
        .stdout("/we/!room:server/txn1\n");
    jeton()
        .args([
            "path",
            "expand",
            "/w/%21room%3Aserver/m.room.encrypted/txn1",
        ])
        .assert()
        .success()
        .stdout("/_matrix/client/v3/rooms/!room:server/send/m.room.encrypted/txn1\n");
    jeton()
        .args([
            "path",
            "compress",
            "--profile",
            "v1",
            "/_matrix/client/v3/sync",
        ])
        .assert()
        .success()
        .stdout("/_matrix/client/v3/sync\n");
}

#[test]
fn bad_input_is_one_line_on_stderr_with_exit_status_2() {
    let mut float = jeton();
    float
        .args(["cbor", "encode", "--profile", "v1"])
        .write_stdin(r#"{"age": 12, "x": 1.5}"#);
    fails_with_one_line(
        float,
        "floating-point numbers are not allowed in Matrix JSON: 1.5 (at byte 17)",
    );

    let mut big = jeton();
    big.args(["cbor", "encode"])
        .write_stdin("[9007199254740992]");
    fails_with_one_line(big, "outside the range ±(2^53-1) (at byte 1)");

    let mut syntax = jeton();
    syntax
        .args(["cbor", "encode"])
        .write_stdin("{\"a\":\n tru}");
    fails_with_one_line(
        syntax,
        "invalid JSON: expected ident (at byte 10, line 2 column 5)",
    );

    let mut truncated = jeton();
    truncated
        .args(["cbor", "decode", "--hex"])
        .write_stdin("a20201");
    fails_with_one_line(
        truncated,
        "a declared length is larger than the rest of the input (at byte 0)",
    );

    let mut tag = jeton();
    tag.args(["cbor", "decode"])
        .write_stdin(vec![0xa1, 0x02, 0xc1, 0x01]);
    fails_with_one_line(tag, "CBOR tags are not allowed (at byte 2)");

    let mut not_hex = jeton();
    not_hex
        .args(["cbor", "decode", "--hex"])
        .write_stdin("a1 0g");
    fails_with_one_line(not_hex, "non-hex character 'g' (at byte 4)");

    let mut bad_percent = jeton();
    bad_percent.args(["path", "expand", "/K/%2"]);
    fails_with_one_line(
        bad_percent,
        "'%' is not followed by two hex digits (at byte 3)",
    );

    let mut wrong_count = jeton();
    wrong_count.args(["path", "expand", "/9/room"]);
    fails_with_one_line(wrong_count, "takes 3 parameter(s) but the short path has 1");
}

/// A fresh temporary directory for one test's files.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("jeton-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn pair_writes_both_sides_and_a_second_token_shares_the_gateway_identity() {
    use jeton_link::pairing::KeyFile;
    use jeton_link::{Credential, Identity};

    let dir = scratch_dir("pair");
    let (identity, tokens_file) = (dir.join("identity.toml"), dir.join("tokens.toml"));
    let pair = |name: &str| {
        let mut command = jeton();
        command
            .arg("pair")
            .arg("--token-out")
            .arg(dir.join(format!("{name}.link")))
            .arg("--gateway-identity")
            .arg(&identity)
            .arg("--gateway-tokens")
            .arg(&tokens_file)
            .args(["--name", name]);
        command
    };
    let mut tokens = Vec::new();
    for name in ["kitchen", "hall"] {
        let output = pair(name).assert().success().get_output().stdout.clone();
        let summary = String::from_utf8(output).unwrap();
        assert!(
            summary.starts_with(&format!("paired {name} (kid ")),
            "{summary}"
        );
        assert_eq!(
            summary.contains("(new gateway identity)"),
            name == "kitchen",
            "{summary}"
        );
        let bytes = std::fs::read(dir.join(format!("{name}.link"))).unwrap();
        tokens.push(KeyFile::decode(&bytes).unwrap());
    }
    // The gateway's files, read the way the gateway reads them.
    let identity_toml: toml::Table = std::fs::read_to_string(&identity).unwrap().parse().unwrap();
    let field = |table: &toml::Table, key: &str| hex::decode(table[key].as_str().unwrap()).unwrap();
    let gateway = Identity::new(
        field(&identity_toml, "private_key").try_into().unwrap(),
        &field(&identity_toml, "credential"),
    )
    .unwrap();
    let tokens_toml: toml::Table = std::fs::read_to_string(&tokens_file)
        .unwrap()
        .parse()
        .unwrap();
    let listed = tokens_toml["token"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for ((token, entry), name) in tokens.iter().zip(listed).zip(["kitchen", "hall"]) {
        let entry = entry.as_table().unwrap();
        assert_eq!(entry["name"].as_str(), Some(name));
        let credential = Credential::parse(&field(entry, "credential")).unwrap();
        // Each token pins the one gateway identity, and the gateway lists each token.
        assert_eq!(token.peer.as_ref(), Some(gateway.credential()));
        assert_eq!(token.identity.credential(), &credential);
    }
    assert_ne!(
        tokens[0].identity.credential().kid(),
        tokens[1].identity.credential().kid()
    );
    #[cfg(unix)]
    for secret in [dir.join("kitchen.link"), identity.clone()] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is readable by others",
            secret.display()
        );
    }
    // Pairing the same token file again is refused rather than overwriting its key.
    fails_with_one_line(pair("kitchen"), "a token is paired once");
    std::fs::remove_dir_all(&dir).unwrap();
}
