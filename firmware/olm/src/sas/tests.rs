//! Known answers computed here from the specification's formulas (with the hkdf, hmac and
//! sha2 crates directly), and a differential check against vodozemac's SAS.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::keys::tests::hex32;

/// RFC 7748, section 6.1: Alice's and Bob's secret keys, whose shared secret is known.
const ALICE: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const BOB: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

const SAS_INFO: &str = "MATRIX_KEY_VERIFICATION_SAS|@alice:example.org|ALICEDEV|\
    hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo|@bob:example.org|BOBDEV|\
    3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08|txn1";

fn fixed(secret: &str) -> Sas {
    Sas {
        keypair: Curve25519Keypair::from_secret(&hex32(secret)),
    }
}

fn established() -> (EstablishedSas, EstablishedSas) {
    let (alice, bob) = (fixed(ALICE), fixed(BOB));
    let (alice_key, bob_key) = (alice.public_key(), bob.public_key());
    (
        alice.diffie_hellman(&bob_key).unwrap(),
        bob.diffie_hellman(&alice_key).unwrap(),
    )
}

/// The specification's formulas, on a string of bits.
fn bits(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:08b}")).collect()
}

fn spec_decimals(bytes: &[u8]) -> Vec<u16> {
    let bits = bits(bytes);
    (0..3)
        .map(|i| u16::from_str_radix(&bits[13 * i..13 * i + 13], 2).unwrap() + 1000)
        .collect()
}

fn spec_emoji(bytes: &[u8]) -> Vec<u8> {
    let bits = bits(bytes);
    (0..7)
        .map(|i| u8::from_str_radix(&bits[6 * i..6 * i + 6], 2).unwrap())
        .collect()
}

fn spec_mac(shared: &[u8], input: &str, info: &str) -> Vec<u8> {
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(None, shared)
        .expand(info.as_bytes(), &mut key)
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn decimals_and_emoji_follow_the_specification_for_a_known_shared_secret() {
    let (alice, bob) = established();
    let mut expected = [0u8; 6];
    Hkdf::<Sha256>::new(None, &hex32(SHARED))
        .expand(SAS_INFO.as_bytes(), &mut expected)
        .unwrap();
    for side in [&alice, &bob] {
        let bytes = side.bytes(SAS_INFO.as_bytes());
        assert_eq!(bytes.0, expected);
        assert_eq!(bytes.decimals().to_vec(), spec_decimals(&expected));
        assert_eq!(bytes.emoji_indices().to_vec(), spec_emoji(&expected));
        assert!(bytes.decimals().iter().all(|d| (1000..=9191).contains(d)));
    }
    // Another info string gives other bytes.
    assert_ne!(
        alice.bytes(b"MATRIX_KEY_VERIFICATION_SAS|other").0,
        expected
    );
}

#[test]
fn the_extreme_bytes_give_the_extreme_strings() {
    assert_eq!(SasBytes([0; 6]).decimals(), [1000; 3]);
    assert_eq!(SasBytes([0xff; 6]).decimals(), [9191; 3]);
    assert_eq!(SasBytes([0xff; 6]).emoji_indices(), [63; 7]);
    assert_eq!(EMOJI[63].1, "Pin");
    assert_eq!(EMOJI[0].1, "Dog");
}

#[test]
fn macs_follow_the_specification_and_both_encodings_verify() {
    let (alice, bob) = established();
    let info = "MATRIX_KEY_VERIFICATION_MAC@alice:example.orgALICEDEV@bob:example.orgBOBDEVtxn1ed25519:ALICEDEV";
    let input = "2/LvSLbSKx1ldeWEcyNqSXq6XbSXEEPeM5qNx7A4Ktc";
    let expected = spec_mac(&hex32(SHARED), input, info);
    assert_eq!(
        alice.mac(input.as_bytes(), info.as_bytes()).to_vec(),
        expected
    );

    let mut text = [0u8; MAC_BASE64_LEN];
    let v2 = alice.mac_text(
        input.as_bytes(),
        info.as_bytes(),
        MacEncoding::Base64,
        &mut text,
    );
    let mut expected_text = [0u8; MAC_BASE64_LEN];
    assert_eq!(v2, base64::encode(&expected, &mut expected_text).unwrap());
    assert_eq!(
        bob.verify_mac(
            input.as_bytes(),
            info.as_bytes(),
            MacMethod::HkdfHmacSha256V2,
            v2
        ),
        Ok(MacEncoding::Base64)
    );
    assert_eq!(
        bob.verify_mac(
            b"other input",
            info.as_bytes(),
            MacMethod::HkdfHmacSha256V2,
            v2
        ),
        Err(SasError::MacMismatch)
    );

    let mut text = [0u8; MAC_BASE64_LEN];
    let legacy = alice.mac_text(
        input.as_bytes(),
        info.as_bytes(),
        MacEncoding::LibolmInPlace,
        &mut text,
    );
    assert_eq!(legacy.len(), MAC_BASE64_LEN);
    assert_ne!(
        legacy, v2,
        "the in-place encoding garbles all but the start"
    );
    assert_eq!(
        legacy[..4],
        v2[..4],
        "the first group is read before it is overwritten"
    );
    assert_eq!(
        bob.verify_mac(
            input.as_bytes(),
            info.as_bytes(),
            MacMethod::HkdfHmacSha256,
            legacy
        ),
        Ok(MacEncoding::LibolmInPlace)
    );
    // The legacy method also takes standard base64 (matrix-nio 0.26), the v2 method does
    // not take libolm's text.
    let v2 = {
        let mut t = [0u8; MAC_BASE64_LEN];
        alice
            .mac_text(
                input.as_bytes(),
                info.as_bytes(),
                MacEncoding::Base64,
                &mut t,
            )
            .to_owned()
    };
    assert_eq!(
        bob.verify_mac(
            input.as_bytes(),
            info.as_bytes(),
            MacMethod::HkdfHmacSha256,
            &v2
        ),
        Ok(MacEncoding::Base64)
    );
    assert_eq!(
        bob.verify_mac(
            input.as_bytes(),
            info.as_bytes(),
            MacMethod::HkdfHmacSha256V2,
            legacy
        ),
        Err(SasError::MacMismatch)
    );
}

#[test]
fn the_commitment_hashes_the_base64_key_then_the_canonical_start() {
    let key = fixed(BOB).public_key();
    let start = br#"{"from_device":"BOBDEV","method":"m.sas.v1","transaction_id":"txn1"}"#;
    let mut text = [0u8; 43];
    let mut hasher = Sha256::new();
    hasher.update(key.to_base64(&mut text).as_bytes());
    hasher.update(start);
    let expected: [u8; 32] = hasher.finalize().into();
    assert_eq!(commitment(&key, start), expected);
}

#[test]
fn a_low_order_key_is_refused_and_debug_prints_no_secret() {
    assert_eq!(
        fixed(ALICE)
            .diffie_hellman(&Curve25519PublicKey::from_bytes([0; 32]))
            .unwrap_err(),
        SasError::NonContributoryKey
    );
    let sas = Sas {
        keypair: Curve25519Keypair::from_secret(&[0x42; 32]),
    };
    let text = format!("{sas:?}");
    assert!(!text.contains("66, 66") && !text.contains("QkJC"), "{text}");
    let (alice, _) = established();
    let text = format!("{alice:?}");
    assert!(!text.contains("SwZdW6TOLe"), "{text}");
}

#[test]
fn method_names_round_trip() {
    for method in [MacMethod::HkdfHmacSha256V2, MacMethod::HkdfHmacSha256] {
        assert_eq!(MacMethod::from_name(method.name()), Some(method));
    }
    assert_eq!(MacMethod::from_name("hmac-sha256"), None);
}

/// Both sides of a verification, one jeton-olm and one vodozemac, from random keys.
fn against_vodozemac(seed: u64) -> (EstablishedSas, vodozemac::sas::EstablishedSas) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ours = Sas::new(&mut rng);
    let theirs = vodozemac::sas::Sas::new();
    let their_key = Curve25519PublicKey::from_bytes(theirs.public_key().to_bytes());
    let our_key = vodozemac::Curve25519PublicKey::from_bytes(ours.public_key().0);
    (
        ours.diffie_hellman(&their_key).unwrap(),
        theirs.diffie_hellman(our_key).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn strings_and_macs_match_vodozemac(seed: u64, info in "[ -~]{0,80}", input in "[ -~]{0,60}") {
        let (ours, theirs) = against_vodozemac(seed);
        let bytes = ours.bytes(info.as_bytes());
        let expected = theirs.bytes(&info);
        prop_assert_eq!(&bytes.0, expected.as_bytes());
        let (a, b, c) = expected.decimals();
        prop_assert_eq!(bytes.decimals(), [a, b, c]);
        prop_assert_eq!(bytes.emoji_indices(), expected.emoji_indices());

        let mut text = [0u8; MAC_BASE64_LEN];
        let v2 = ours.mac_text(input.as_bytes(), info.as_bytes(), MacEncoding::Base64, &mut text);
        prop_assert_eq!(v2, theirs.calculate_mac(&input, &info).to_base64());
        let mut text = [0u8; MAC_BASE64_LEN];
        let legacy = ours.mac_text(input.as_bytes(), info.as_bytes(), MacEncoding::LibolmInPlace, &mut text);
        prop_assert_eq!(legacy, theirs.calculate_mac_invalid_base64(&input, &info));

        // What vodozemac writes, we accept, and the reverse.
        let their_mac = theirs.calculate_mac(&input, &info).to_base64();
        prop_assert_eq!(
            ours.verify_mac(input.as_bytes(), info.as_bytes(), MacMethod::HkdfHmacSha256V2, &their_mac),
            Ok(MacEncoding::Base64)
        );
        let their_legacy = theirs.calculate_mac_invalid_base64(&input, &info);
        prop_assert_eq!(
            ours.verify_mac(input.as_bytes(), info.as_bytes(), MacMethod::HkdfHmacSha256, &their_legacy),
            Ok(MacEncoding::LibolmInPlace)
        );
        let our_mac = vodozemac::sas::Mac::from_base64(v2).unwrap();
        prop_assert!(theirs.verify_mac(&input, &info, &our_mac).is_ok());
    }
}
