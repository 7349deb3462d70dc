// The properties the fuzz targets check, shared by the targets (`fuzz_targets/*.rs`) and by the
// corpus replay test of jeton-proto (`firmware/proto/tests/fuzz_corpus.rs`), which `include!` this file.

use jeton_proto::TableVersion;
use jeton_proto::transcode::{cbor_to_json, json_to_cbor};

/// Any bytes from the air: decoding never panics, and whatever decodes re-encodes to canonical CBOR
/// that is a fixed point (decode, encode again: the same bytes and the same JSON).
pub fn check_decoder(data: &[u8]) {
    for version in [TableVersion::V1, TableVersion::V2] {
        let Ok(json) = cbor_to_json(data, version) else {
            continue;
        };
        let canonical = json_to_cbor(&json, version).expect("decoded JSON re-encodes");
        let again = cbor_to_json(&canonical, version).expect("canonical CBOR decodes");
        assert_eq!(again, json);
        assert_eq!(json_to_cbor(&again, version).expect("re-encodes"), canonical);
    }
}

/// Any JSON: both versions accept or reject it alike, round trips are the identity, and v2 is never
/// larger than v1.
pub fn check_transcoder(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match (
        json_to_cbor(&json, TableVersion::V1),
        json_to_cbor(&json, TableVersion::V2),
    ) {
        (Ok(v1), Ok(v2)) => {
            assert_eq!(cbor_to_json(&v1, TableVersion::V1).expect("v1 decodes"), json);
            assert_eq!(cbor_to_json(&v2, TableVersion::V2).expect("v2 decodes"), json);
            assert_eq!(cbor_to_json(&v1, TableVersion::V2).expect("v2 reads v1"), json);
            assert!(v2.len() <= v1.len(), "v2 {} > v1 {}", v2.len(), v1.len());
        }
        (Err(v1), Err(v2)) => assert_eq!(v1.kind(), v2.kind()),
        (v1, v2) => panic!("versions disagree: {v1:?} vs {v2:?}"),
    }
}
