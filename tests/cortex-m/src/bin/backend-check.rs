//! Holds jeton-olm's active curve backend (with the `cortex-m4-asm` feature: salty's
//! Cortex-M4 assembly, which the host tests never run) against x25519-dalek and
//! ed25519-dalek on the device itself: RFC 7748 and RFC 8032 known answers, the low-order
//! points, and keys and messages from a fixed-seed generator; verification against
//! `verify_strict` for valid and tampered signatures, small-order keys and `s` past ℓ. Any
//! difference fails the run.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use jeton_cortex_m::{FixedSeedRng, fail_with, pass};
use jeton_olm::primitives::device_check as ours;
use rand_core::Rng;

jeton_cortex_m::panic_handler!(report);

/// Random cases after the known answers; each runs four operations on both sides.
const CASES: u32 = 24;

fn hex<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        let digit = |c: u8| match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        };
        *byte = match pair {
            [hi, lo] => digit(*hi) << 4 | digit(*lo),
            _ => 0,
        };
    }
    out
}

fn x25519_dalek_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

fn x25519_dalek(secret: &[u8; 32], public: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = x25519_dalek::StaticSecret::from(*secret)
        .diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    shared.was_contributory().then(|| *shared.as_bytes())
}

fn ed25519_dalek(seed: &[u8; 32], message: &[u8]) -> ([u8; 32], [u8; 64]) {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(seed);
    (key.verifying_key().to_bytes(), key.sign(message).to_bytes())
}

fn ed25519_dalek_verify(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(public).is_ok_and(|key| {
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    })
}

/// The eight points of small order (curve25519-dalek's `EIGHT_TORSION`), compressed.
const SMALL_ORDER: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
];

/// ℓ, the order of the base point, little-endian.
const ELL: &str = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010";

/// Verification on both sides: valid, another message, a flipped bit, a small-order key and
/// `R`, and `s + ℓ`.
fn check_verify(case: u32, public: &[u8; 32], message: &[u8], signature: &[u8; 64]) {
    let both = |what, public: &[u8; 32], message: &[u8], signature: &[u8; 64]| {
        check(
            what,
            case,
            ours::ed25519_verify(public, message, signature),
            ed25519_dalek_verify(public, message, signature),
        );
    };
    if !ours::ed25519_verify(public, message, signature) {
        fail_with(format_args!(
            "FAILED: a valid signature was refused, case {case}"
        ));
    }
    both("Ed25519 verify", public, message, signature);
    both("Ed25519 verify, other message", public, b"other", signature);
    let mut flipped = *signature;
    if let Some(byte) = flipped.get_mut(case as usize % 64) {
        *byte ^= 1 << (case % 8);
    }
    both("Ed25519 verify, a bit flipped", public, message, &flipped);
    let small = hex::<32>(SMALL_ORDER[case as usize % SMALL_ORDER.len()]);
    both(
        "Ed25519 verify, small-order key",
        &small,
        message,
        signature,
    );
    let mut small_r = *signature;
    small_r[..32].copy_from_slice(&small);
    both("Ed25519 verify, small-order R", public, message, &small_r);
    let mut s_past_ell = *signature;
    let mut carry = 0u16;
    for (byte, add) in s_past_ell[32..].iter_mut().zip(hex::<32>(ELL)) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    both("Ed25519 verify, s + ℓ", public, message, &s_past_ell);
}

fn check<T: PartialEq + core::fmt::Debug>(what: &str, case: u32, ours: T, dalek: T) {
    if ours != dalek {
        fail_with(format_args!(
            "FAILED: {what}, case {case}: jeton-olm {ours:02x?}, dalek {dalek:02x?}"
        ));
    }
}

#[entry]
fn main() -> ! {
    // RFC 7748, section 6.1, and section 5.2 (a non-canonical u with its top bit set).
    let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let bob_public = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    check(
        "RFC 7748 public key",
        0,
        ours::x25519_public_key(&alice),
        hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
    );
    check(
        "RFC 7748 shared secret",
        0,
        ours::x25519(&alice, &bob_public),
        Some(hex(
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        )),
    );
    check(
        "RFC 7748 non-canonical u",
        0,
        ours::x25519(
            &hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
            &hex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
        ),
        Some(hex(
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        )),
    );
    // RFC 8032, section 7.1, TEST 2.
    let seed = hex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
    check(
        "RFC 8032 public key",
        0,
        ours::ed25519_public_key(&seed),
        hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"),
    );
    let rfc8032_signature = hex::<64>(
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
         085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    );
    check(
        "RFC 8032 signature",
        0,
        ours::ed25519_sign(&seed, &[0x72]),
        rfc8032_signature,
    );
    check_verify(
        0,
        &hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"),
        &[0x72],
        &rfc8032_signature,
    );
    // Points of order 1, 2, 4, 8 and non-canonical encodings: no contribution on either side.
    for (i, u) in [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ]
    .into_iter()
    .enumerate()
    {
        let u = hex(u);
        check("low-order point", i as u32, ours::x25519(&alice, &u), None);
        check(
            "low-order point (dalek)",
            i as u32,
            x25519_dalek(&alice, &u),
            None,
        );
    }

    let mut rng = FixedSeedRng(0x6a65_746f_6e00_0002);
    for case in 1..=CASES {
        let mut secret = [0u8; 32];
        let mut peer = [0u8; 32];
        let mut message = [0u8; 128];
        rng.fill_bytes(&mut secret);
        rng.fill_bytes(&mut peer);
        rng.fill_bytes(&mut message);
        let len = (rng.next_u64() % 129) as usize;
        let message = message.get(..len).unwrap_or_default();
        check(
            "X25519 public key",
            case,
            ours::x25519_public_key(&secret),
            x25519_dalek_public(&secret),
        );
        check(
            "X25519 shared secret",
            case,
            ours::x25519(&secret, &peer),
            x25519_dalek(&secret, &peer),
        );
        let (public, signature) = ed25519_dalek(&secret, message);
        check(
            "Ed25519 public key",
            case,
            ours::ed25519_public_key(&secret),
            public,
        );
        check(
            "Ed25519 signature",
            case,
            ours::ed25519_sign(&secret, message),
            signature,
        );
        check_verify(case, &public, message, &signature);
    }
    hprintln!(
        "backend-check: RFC 7748/8032 vectors, 5 low-order points and {} random cases (keys, signatures, verification) agree with x25519-dalek and ed25519-dalek",
        CASES
    );
    pass()
}
