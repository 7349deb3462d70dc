//! Property tests: JSON -> CBOR -> JSON is the identity for Matrix-shaped JSON under v1 and v2, the
//! CBOR is canonical, and v2 is never larger than v1. Well-known values appear as keys and values, in
//! and out of binary fields, exactly and nearly (a character more or less, other case).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use jeton_proto::TableVersion;
use jeton_proto::keys::CBOR_KEYS;
use jeton_proto::transcode::{MAX_SAFE_INTEGER, cbor_to_json, json_to_cbor};
use jeton_proto::values::WELL_KNOWN_VALUES;
use jeton_proto::view::Value as ViewValue;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Object keys: table names (v1 and v2), the binary-field names, and arbitrary text.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(CBOR_KEYS.iter().map(|(_, name)| *name).collect::<Vec<_>>())
            .prop_map(str::to_owned),
        2 => proptest::sample::select(vec![
            "ciphertext", "body", "session_id", "sender_key", "session_key", "signatures", "keys",
            "one_time_keys", "fallback_keys", "key", "mac", "hashes", "ed25519:DEV", "@u:s",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
        1 => well_known_or_nearly(),
    ]
}

/// A well-known value of the v2 table, or one a character longer or shorter, or in upper case.
fn well_known_or_nearly() -> impl Strategy<Value = String> {
    (proptest::sample::select(WELL_KNOWN_VALUES.to_vec()), 0..4u8).prop_map(|(text, variant)| {
        match variant {
            0 | 1 => text.to_owned(),
            2 => format!("{text}x"),
            _ if variant == 3 && text.len() > 1 => text[..text.len() - 1].to_owned(),
            _ => text.to_uppercase(),
        }
    })
}

/// Strings: unicode text, base64 of random bytes (canonical, so binary fields convert), and
/// base64-looking text that is not canonical.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|b| STANDARD_NO_PAD.encode(b)),
        proptest::collection::vec(any::<u8>(), 1..40)
            .prop_map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        "[A-Za-z0-9+/]{1,30}",
        well_known_or_nearly(),
    ]
}

fn matrix_json() -> impl Strategy<Value = Value> {
    let safe = MAX_SAFE_INTEGER as i64;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-safe..=safe).prop_map(Value::from),
        prop_oneof![
            Just(safe),
            Just(-safe),
            Just(0),
            Just(23),
            Just(24),
            Just(-25)
        ]
        .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(8, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_cbor_json_is_the_identity_and_v2_is_never_larger(json in matrix_json()) {
        let v1 = json_to_cbor(&json, TableVersion::V1).unwrap();
        let v2 = json_to_cbor(&json, TableVersion::V2).unwrap();
        prop_assert_eq!(cbor_to_json(&v1, TableVersion::V1).unwrap(), json.clone());
        prop_assert_eq!(cbor_to_json(&v2, TableVersion::V2).unwrap(), json.clone());
        // v2 is a superset: a v2 peer reads v1 CBOR.
        prop_assert_eq!(cbor_to_json(&v1, TableVersion::V2).unwrap(), json);
        prop_assert!(v2.len() <= v1.len(), "v2 {} bytes > v1 {} bytes", v2.len(), v1.len());
    }

    #[test]
    fn canonical_cbor_is_a_fixed_point(json in matrix_json()) {
        for version in [TableVersion::V1, TableVersion::V2] {
            let cbor = json_to_cbor(&json, version).unwrap();
            let again = json_to_cbor(&cbor_to_json(&cbor, version).unwrap(), version).unwrap();
            prop_assert_eq!(again, cbor);
        }
    }

    #[test]
    fn views_read_the_same_texts_as_the_transcoder(json in matrix_json()) {
        let v2 = json_to_cbor(&json, TableVersion::V2).unwrap();
        let view = ViewValue::parse(&v2, TableVersion::V2).unwrap();
        assert_view_matches(view, &json)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for version in [TableVersion::V1, TableVersion::V2] {
            let _ = cbor_to_json(&bytes, version);
        }
    }
}

/// The view of the v2 CBOR shows the JSON: every text (coded or not) as its text, binary fields as
/// their bytes.
fn assert_view_matches(view: ViewValue<'_>, json: &Value) -> Result<(), TestCaseError> {
    match (view, json) {
        (ViewValue::Null, Value::Null) => {}
        (ViewValue::Bool(a), Value::Bool(b)) => prop_assert_eq!(a, *b),
        (ViewValue::Integer(a), Value::Number(b)) => prop_assert_eq!(Some(a), b.as_i64()),
        (ViewValue::Text(a), Value::String(b)) => prop_assert_eq!(a, b.as_str()),
        (ViewValue::Bytes(a), Value::String(b)) => {
            prop_assert_eq!(STANDARD_NO_PAD.encode(a), b.as_str())
        }
        (ViewValue::Array(a), Value::Array(b)) => {
            prop_assert_eq!(a.len(), b.len() as u64);
            for (item, expected) in a.iter().zip(b) {
                assert_view_matches(item.unwrap(), expected)?;
            }
        }
        (ViewValue::Map(a), Value::Object(b)) => {
            prop_assert_eq!(a.len(), b.len() as u64);
            for entry in a.entries() {
                let (name, value) = entry.unwrap();
                assert_view_matches(value, &b[name])?;
            }
        }
        (view, json) => prop_assert!(false, "view {:?} for {}", view, json),
    }
    Ok(())
}
