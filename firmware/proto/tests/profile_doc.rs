//! PROFILE.md must list exactly the code's tables, in order, and its examples must be what the code
//! produces: the document is a specification a third party implements from.

use jeton_proto::TableVersion;
use jeton_proto::binary::BINARY_FIELDS;
use jeton_proto::keys::{CBOR_KEYS, LAST_V1_KEY};
use jeton_proto::path::{COAP_PATHS, V1_PATH_COUNT, compress};
use jeton_proto::transcode::{cbor_to_json, json_to_cbor};
use jeton_proto::values::{WELL_KNOWN_VALUES, simple_for_index};

const PROFILE: &str = include_str!("../PROFILE.md");

/// The cells of the markdown table rows of PROFILE.md, backticks removed.
fn rows(columns: usize) -> Vec<Vec<String>> {
    PROFILE
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| ---"))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.len() == columns)
        .collect()
}

fn version_of(is_v1: bool) -> &'static str {
    if is_v1 { "v1" } else { "v2" }
}

#[test]
fn key_table_in_the_document_matches_the_code() {
    let documented: Vec<Vec<String>> = rows(3)
        .into_iter()
        .filter(|cells| {
            cells[0].parse::<u16>().is_ok()
                && !cells[1].starts_with('/')
                && matches!(cells[2].as_str(), "v1" | "v2")
        })
        .collect();
    let code: Vec<Vec<String>> = CBOR_KEYS
        .iter()
        .map(|(key, name)| {
            vec![
                key.to_string(),
                name.to_string(),
                version_of(*key <= LAST_V1_KEY).into(),
            ]
        })
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn path_table_in_the_document_matches_the_code() {
    let documented: Vec<Vec<String>> = rows(3)
        .into_iter()
        .filter(|cells| cells[1].starts_with("/_matrix/"))
        .collect();
    let code: Vec<Vec<String>> = COAP_PATHS
        .iter()
        .enumerate()
        .map(|(index, (code, template))| {
            vec![
                code.to_string(),
                template.to_string(),
                version_of(index < V1_PATH_COUNT).into(),
            ]
        })
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn binary_field_table_in_the_document_matches_the_code() {
    let documented: Vec<String> = rows(1)
        .into_iter()
        .map(|cells| cells[0].clone())
        .filter(|cell| cell != "binary field path suffix")
        .collect();
    let code: Vec<String> = BINARY_FIELDS
        .iter()
        .map(|suffix| suffix.join("."))
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn value_table_in_the_document_matches_the_code_and_encodes_as_shown() {
    let documented: Vec<Vec<String>> = rows(3)
        .into_iter()
        .filter(|cells| cells[0].parse::<u8>().is_ok() && !matches!(cells[2].as_str(), "v1" | "v2"))
        .collect();
    assert_eq!(documented.len(), WELL_KNOWN_VALUES.len());
    for (index, (cells, text)) in documented.iter().zip(WELL_KNOWN_VALUES).enumerate() {
        let simple = simple_for_index(index).unwrap();
        assert_eq!(cells[0], simple.to_string());
        assert_eq!(&cells[2], text);
        let encoded = json_to_cbor(&serde_json::json!(text), TableVersion::V2).unwrap();
        assert_eq!(cells[1].replace(' ', ""), hex::encode(&encoded), "{text}");
        assert_eq!(cbor_to_json(&encoded, TableVersion::V2).unwrap(), *text);
    }
    // The inline examples of section 3.3.
    for (json, hex_v2) in [
        (r#"{"membership": "join"}"#, "a1 1819 e8"),
        (r#"{"algorithm": "m.megolm.v1.aes-sha2"}"#, "a1 1854 e1"),
        (r#""knock""#, "f8 20"),
    ] {
        assert!(PROFILE.contains(&format!("`{hex_v2}`")), "{hex_v2}");
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let v2 = json_to_cbor(&value, TableVersion::V2).unwrap();
        assert_eq!(hex::encode(v2), hex_v2.replace(' ', ""), "{json}");
    }
    let v1 = json_to_cbor(&serde_json::json!({"membership": "join"}), TableVersion::V1).unwrap();
    assert!(PROFILE.contains("`a1 1819 646a6f696e`"));
    assert_eq!(hex::encode(v1), "a11819646a6f696e");
}

/// The lines of the fenced block after the marker comment.
fn block_after(marker: &str) -> Vec<&'static str> {
    let start = PROFILE
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} missing"));
    PROFILE[start..]
        .lines()
        .skip(2)
        .take_while(|line| !line.starts_with("```"))
        .collect()
}

#[test]
fn hex_examples_are_what_the_transcoder_produces() {
    let names = [
        "hello-world",
        "megolm-send",
        "olm-send-to-device",
        "send-response",
        "sync-subset",
    ];
    for name in names {
        let lines = block_after(&format!("<!-- example {name} -->"));
        let field = |prefix: &str| {
            lines
                .iter()
                .find_map(|line| line.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("{name}: no {prefix}"))
                .trim()
        };
        let json: serde_json::Value = serde_json::from_str(field("json ")).unwrap();
        let v1 = json_to_cbor(&json, TableVersion::V1).unwrap();
        let v2 = json_to_cbor(&json, TableVersion::V2).unwrap();
        assert_eq!(field("v1 "), hex::encode(v1), "{name} v1");
        assert_eq!(field("v2 "), hex::encode(v2), "{name} v2");
    }
    assert_eq!(PROFILE.matches("<!-- example ").count(), names.len());
    // The MSC's own hex appears verbatim.
    assert!(PROFILE.contains("a5026e6d2e726f6f6d2e6d65737361676503a2181b6b48656c6c6f20576f726c64"));
}

#[test]
fn path_examples_are_what_compress_produces() {
    let lines = block_after("<!-- path examples -->");
    assert!(lines.len() >= 5);
    for line in lines {
        let (full, short) = line
            .strip_prefix("compress ")
            .and_then(|rest| rest.split_once(" -> "))
            .unwrap();
        let mut out = String::new();
        compress(full, TableVersion::V2, &mut out).unwrap();
        assert_eq!(out, short, "{full}");
    }
}
