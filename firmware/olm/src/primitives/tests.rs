//! Known answers from RFC 7748 and RFC 8032 for every backend built, and — with the
//! `cortex-m4-asm` feature — property tests that the salty backend gives the very bytes the
//! dalek backend gives for random keys and messages, and accepts and refuses the very
//! signatures and keys ed25519-dalek's `verify_strict` does.

use super::dalek;

fn hex<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    assert_eq!(text.len(), 2 * N, "{text}");
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// The operations under test, as plain functions, so one check runs against each backend.
struct Backend {
    name: &'static str,
    x25519_public_key: fn(&[u8; 32]) -> [u8; 32],
    x25519: fn(&[u8; 32], &[u8; 32]) -> Option<[u8; 32]>,
    ed25519_public_key: fn(&[u8; 32]) -> [u8; 32],
    ed25519_sign: fn(&[u8; 32], &[u8]) -> [u8; 64],
    ed25519_verify: fn(&[u8; 32], &[u8], &[u8; 64]) -> bool,
}

macro_rules! backend {
    ($module:ident) => {
        Backend {
            name: stringify!($module),
            x25519_public_key: $module::x25519_public_key,
            x25519: |secret, public| $module::x25519(secret, public).map(|s| *s.as_bytes()),
            ed25519_public_key: |seed| $module::Ed25519Secret::from_seed(seed).public_key(),
            ed25519_sign: |seed, message| $module::Ed25519Secret::from_seed(seed).sign(message),
            ed25519_verify: $module::ed25519_verify,
        }
    };
}

fn backends() -> Vec<Backend> {
    #[allow(unused_mut)]
    let mut all = vec![backend!(dalek)];
    #[cfg(feature = "cortex-m4-asm")]
    all.push({
        use super::salty;
        backend!(salty)
    });
    all
}

#[test]
fn rfc7748_x25519_vectors() {
    // RFC 7748, section 5.2; the second input u is non-canonical and has its top bit set.
    let vectors = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for backend in backends() {
        for (scalar, u, out) in vectors {
            assert_eq!(
                (backend.x25519)(&hex(scalar), &hex(u)),
                Some(hex(out)),
                "{}",
                backend.name
            );
        }
    }
}

#[test]
fn rfc7748_x25519_iterated_1000_times() {
    // RFC 7748, section 5.2: k = u = 9, then k, u = X25519(k, u), k.
    for backend in backends() {
        let mut k: [u8; 32] =
            hex("0900000000000000000000000000000000000000000000000000000000000000");
        let mut u = k;
        for round in 1..=1000 {
            let next = (backend.x25519)(&k, &u).unwrap();
            u = k;
            k = next;
            if round == 1 {
                assert_eq!(
                    k,
                    hex("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"),
                    "{}",
                    backend.name
                );
            }
        }
        assert_eq!(
            k,
            hex("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"),
            "{}",
            backend.name
        );
    }
}

#[test]
fn rfc7748_diffie_hellman_and_public_keys() {
    // RFC 7748, section 6.1.
    let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let shared: [u8; 32] = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    for backend in backends() {
        let alice_public = (backend.x25519_public_key)(&alice);
        let bob_public = (backend.x25519_public_key)(&bob);
        assert_eq!(
            alice_public,
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            bob_public,
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        assert_eq!((backend.x25519)(&alice, &bob_public), Some(shared));
        assert_eq!((backend.x25519)(&bob, &alice_public), Some(shared));
    }
}

#[test]
fn low_order_points_are_non_contributory() {
    // The u-coordinates of the points of order 1, 2, 4 and 8 and their non-canonical
    // encodings (p - 1, p, p + 1), with and without the top bit that X25519 ignores.
    let low_order = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    let secret = [0x5a; 32];
    for backend in backends() {
        for u in low_order {
            let mut u: [u8; 32] = hex(u);
            assert_eq!(
                (backend.x25519)(&secret, &u),
                None,
                "{} {u:02x?}",
                backend.name
            );
            u[31] |= 0x80;
            assert_eq!(
                (backend.x25519)(&secret, &u),
                None,
                "{} {u:02x?}",
                backend.name
            );
        }
    }
}

#[test]
fn rfc8032_ed25519_vectors() {
    // RFC 8032, section 7.1, TEST 1, 2 and 3: (secret key, public key, message, signature).
    let vectors = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            &[][..],
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            &[0x72][..],
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            &[0xaf, 0x82][..],
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac\
             18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];
    for backend in backends() {
        for (seed, public, message, signature) in vectors {
            let seed = hex(seed);
            assert_eq!(
                (backend.ed25519_public_key)(&seed),
                hex(public),
                "{}",
                backend.name
            );
            assert_eq!(
                (backend.ed25519_sign)(&seed, message),
                hex::<64>(signature),
                "{}",
                backend.name
            );
            let signature = hex::<64>(signature);
            assert!(
                (backend.ed25519_verify)(&hex(public), message, &signature),
                "{}",
                backend.name
            );
            assert!(
                !(backend.ed25519_verify)(&hex(public), b"other", &signature),
                "{}",
                backend.name
            );
        }
    }
}

#[cfg(feature = "cortex-m4-asm")]
mod salty_against_dalek {
    use curve25519_dalek::Scalar;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use proptest::prelude::*;
    use sha2::{Digest, Sha512};

    use super::super::{dalek, salty};

    /// ℓ, the order of the base point, little-endian.
    const ELL: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// `a + b` of two little-endian 256-bit integers, wrapping.
    fn add(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            let sum = u16::from(*x) + u16::from(*y) + carry;
            *o = sum as u8;
            carry = sum >> 8;
        }
        out
    }

    /// The y-coordinate `p + excess` (a non-canonical encoding), with or without the sign bit.
    fn non_canonical(excess: u8, sign: bool) -> [u8; 32] {
        let mut bytes = [0xff; 32];
        bytes[0] = 0xed + excess;
        bytes[31] = if sign { 0xff } else { 0x7f };
        bytes
    }

    /// A signature whose key and `R` may carry a small-order component (`EIGHT_TORSION`), and
    /// whose `s` may be pushed past ℓ: valid when neither does and `s` stays below ℓ.
    fn signed_with_torsion(
        secret: [u8; 32],
        nonce: [u8; 32],
        message: &[u8],
        key_torsion: usize,
        r_torsion: usize,
        s_past_ell: bool,
    ) -> ([u8; 32], [u8; 64]) {
        let a = Scalar::from_bytes_mod_order(secret);
        let r = Scalar::from_bytes_mod_order(nonce);
        let key = (a * ED25519_BASEPOINT_POINT + EIGHT_TORSION[key_torsion])
            .compress()
            .to_bytes();
        let r_bytes = (r * ED25519_BASEPOINT_POINT + EIGHT_TORSION[r_torsion])
            .compress()
            .to_bytes();
        let hash: [u8; 64] = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(key)
            .chain_update(message)
            .finalize()
            .into();
        let mut s = (r + Scalar::from_bytes_mod_order_wide(&hash) * a).to_bytes();
        if s_past_ell {
            s = add(&s, &ELL);
        }
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r_bytes);
        signature[32..].copy_from_slice(&s);
        (key, signature)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn x25519_public_keys_agree(secret in any::<[u8; 32]>()) {
            prop_assert_eq!(salty::x25519_public_key(&secret), dalek::x25519_public_key(&secret));
        }

        /// Any 32 bytes as the peer's key: non-canonical values and the ignored top bit too.
        #[test]
        fn x25519_shared_secrets_agree(secret in any::<[u8; 32]>(), public in any::<[u8; 32]>()) {
            prop_assert_eq!(
                salty::x25519(&secret, &public).map(|s| *s.as_bytes()),
                dalek::x25519(&secret, &public).map(|s| *s.as_bytes())
            );
        }

        /// The 19 non-canonical encodings p … 2^255 - 1, with and without the top bit, which
        /// random bytes almost never hit.
        #[test]
        fn x25519_non_canonical_points_agree(
            secret in any::<[u8; 32]>(),
            excess in 0u8..19,
            top_bit in any::<bool>(),
        ) {
            let mut public = [0xff; 32];
            public[0] = 0xed + excess;
            public[31] = if top_bit { 0xff } else { 0x7f };
            prop_assert_eq!(
                salty::x25519(&secret, &public).map(|s| *s.as_bytes()),
                dalek::x25519(&secret, &public).map(|s| *s.as_bytes())
            );
        }

        #[test]
        fn ed25519_keys_and_signatures_agree(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let ours = salty::Ed25519Secret::from_seed(&seed);
            let theirs = dalek::Ed25519Secret::from_seed(&seed);
            prop_assert_eq!(ours.public_key(), theirs.public_key());
            prop_assert_eq!(ours.seed(), theirs.seed());
            prop_assert_eq!(ours.sign(&message), theirs.sign(&message));
        }
    }

    proptest! {
        // Verification is the slowest of these on the host (both sides unoptimised).
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Valid signatures, signatures over another message, keys and `R` with a small-order
        /// part, and `s` past ℓ: the same verdict as `verify_strict` every time.
        #[test]
        fn ed25519_verdicts_agree(
            secret in any::<[u8; 32]>(),
            nonce in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..100),
            key_torsion in prop_oneof![4 => Just(0usize), 1 => 1usize..8],
            r_torsion in prop_oneof![4 => Just(0usize), 1 => 1usize..8],
            s_past_ell in prop::bool::weighted(0.2),
            other_message in prop::bool::weighted(0.2),
        ) {
            let (key, signature) =
                signed_with_torsion(secret, nonce, &message, key_torsion, r_torsion, s_past_ell);
            let message: &[u8] = if other_message { b"other" } else { &message };
            let ours = salty::ed25519_verify(&key, message, &signature);
            prop_assert_eq!(ours, dalek::ed25519_verify(&key, message, &signature));
            if key_torsion == 0 && r_torsion == 0 && !s_past_ell && !other_message {
                prop_assert!(ours, "a valid signature was refused");
            }
        }

        /// Any bytes as a key or a signature, the small-order points themselves as either, and
        /// non-canonical y-coordinates (p … 2^255 - 1, with and without the sign bit).
        #[test]
        fn ed25519_keys_and_arbitrary_signatures_agree(
            key in prop_oneof![
                any::<[u8; 32]>(),
                (0usize..8).prop_map(|t| EIGHT_TORSION[t].compress().to_bytes()),
                (0u8..19, any::<bool>()).prop_map(|(e, s)| non_canonical(e, s)),
            ],
            r in prop_oneof![
                any::<[u8; 32]>(),
                (0usize..8).prop_map(|t| EIGHT_TORSION[t].compress().to_bytes()),
                (0u8..19, any::<bool>()).prop_map(|(e, s)| non_canonical(e, s)),
            ],
            s in prop_oneof![any::<[u8; 32]>(), Just([0u8; 32]), Just(ELL)],
            message in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            prop_assert_eq!(salty::ed25519_is_point(&key), dalek::ed25519_is_point(&key));
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&r);
            signature[32..].copy_from_slice(&s);
            prop_assert_eq!(
                salty::ed25519_verify(&key, &message, &signature),
                dalek::ed25519_verify(&key, &message, &signature)
            );
        }
    }
}
