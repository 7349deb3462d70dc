//! What v2 saves over v1 on the E2EE traffic of the fuzz corpus (real-shaped Matrix bodies).
//! Prints the figures: `cargo test -p jeton-proto --test wire_sizes -- --nocapture`.

use std::path::Path;

use jeton_proto::TableVersion;
use jeton_proto::transcode::json_to_cbor;

fn sizes(name: &str) -> (usize, usize, usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/proto/corpus/transcoder")
        .join(name);
    let text = std::fs::read(path).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let v1 = json_to_cbor(&json, TableVersion::V1).unwrap().len();
    let v2 = json_to_cbor(&json, TableVersion::V2).unwrap().len();
    (text.len(), v1, v2)
}

#[test]
fn v2_saves_bytes_on_e2ee_bodies() {
    println!(
        "{:<34} {:>6} {:>6} {:>6} {:>7}",
        "body", "JSON", "v1", "v2", "saved"
    );
    for (name, at_least_saved) in [
        ("megolm_send_body.json", 100),
        ("megolm_timeline_event.json", 100),
        ("send_to_device_olm.json", 300),
        ("keys_upload.json", 250),
        ("keys_claim_response.json", 30),
        ("sync_response.json", 300),
    ] {
        let (json, v1, v2) = sizes(name);
        println!("{name:<34} {json:>6} {v1:>6} {v2:>6} {:>7}", v1 - v2);
        assert!(v1 < json, "{name}");
        assert!(v1 - v2 >= at_least_saved, "{name}: v1 {v1}, v2 {v2}");
    }
}
