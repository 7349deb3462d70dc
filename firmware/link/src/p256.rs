//! The P-256 operations the link needs — a key pair from random bytes, a public key from a
//! private one, whether 32 bytes are the x-coordinate of a point, and ECDH on x-coordinates
//! (RFC 9528 sends only x: the shared secret is the same for either y) — and which crate
//! computes them.
//!
//! Two backends give the same results: RustCrypto's `p256` (the default, and every build that
//! is not for a Cortex-M4), and with the `cortex-m4-asm` feature on `thumbv7em` and
//! `thumbv8m.main`, `p256-cortex-m4` (Emil Lenngren's P256-Cortex-M4 assembly, a fraction of
//! the flash and instructions). The Cortex-M4 tier holds the device's results against the
//! host's (`device_check`, and the handshake bytes the host recorded).

use crate::seeded_rng::SeededRng;

/// A P-256 private key: a big-endian scalar in `1..n`.
pub(crate) type Secret = [u8; 32];
/// A big-endian coordinate.
pub(crate) type Coordinate = [u8; 32];

/// A fresh private key and its public x-coordinate. The scalar is drawn as RustCrypto's
/// `SecretKey::random` draws it (32 bytes, big-endian, again until it lies in `1..n`), so a
/// seed gives the same key under either backend.
pub(crate) fn generate(rng: &mut SeededRng) -> (Secret, Coordinate, Coordinate) {
    let mut secret = [0u8; 32];
    loop {
        rng.fill_bytes(&mut secret);
        if let Some((x, y)) = backend::public_key(&secret) {
            return (secret, x, y);
        }
    }
}

/// The public key `(x, y)` of `secret`; `None` when it is not a scalar in `1..n`.
pub(crate) fn public_key(secret: &Secret) -> Option<(Coordinate, Coordinate)> {
    backend::public_key(secret)
}

/// Whether `x` is the x-coordinate of a point on the curve.
pub(crate) fn is_x_coordinate(x: &Coordinate) -> bool {
    backend::is_x_coordinate(x)
}

/// The x-coordinate of `secret` times the point with x-coordinate `peer_x`; `None` when
/// `secret` is not a scalar in `1..n` or `peer_x` is not on the curve.
pub(crate) fn ecdh(secret: &Secret, peer_x: &Coordinate) -> Option<Coordinate> {
    backend::ecdh(secret, peer_x)
}

/// The point with x-coordinate `x` and an odd y, as SEC 1 compressed bytes.
#[cfg_attr(
    not(all(feature = "cortex-m4-asm", target_arch = "arm")),
    allow(dead_code)
)]
fn compressed(x: &Coordinate) -> [u8; 33] {
    let mut sec1 = [0x03; 33];
    if let Some(rest) = sec1.get_mut(1..) {
        rest.copy_from_slice(x);
    }
    sec1
}

#[cfg(not(all(feature = "cortex-m4-asm", target_arch = "arm")))]
mod backend {
    //! RustCrypto's `p256`.

    use p256::elliptic_curve::point::DecompressPoint;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    use super::{Coordinate, Secret};

    pub(super) fn public_key(secret: &Secret) -> Option<(Coordinate, Coordinate)> {
        let secret = p256::SecretKey::from_bytes(secret.into()).ok()?;
        let point = secret.public_key().to_encoded_point(false);
        Some(((*point.x()?).into(), (*point.y()?).into()))
    }

    fn point(x: &Coordinate) -> Option<p256::AffinePoint> {
        p256::AffinePoint::decompress(x.into(), 1.into()).into()
    }

    pub(super) fn is_x_coordinate(x: &Coordinate) -> bool {
        point(x).is_some()
    }

    pub(super) fn ecdh(secret: &Secret, peer_x: &Coordinate) -> Option<Coordinate> {
        let secret = p256::SecretKey::from_bytes(secret.into()).ok()?;
        let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), point(peer_x)?);
        Some((*shared.raw_secret_bytes()).into())
    }
}

#[cfg(all(feature = "cortex-m4-asm", target_arch = "arm"))]
mod backend {
    //! `p256-cortex-m4`: P256-Cortex-M4's assembly field arithmetic (UMAAL).

    use p256_cortex_m4::{PublicKey, SecretKey};
    use zeroize::Zeroize;

    use super::{Coordinate, Secret, compressed};

    pub(super) fn public_key(secret: &Secret) -> Option<(Coordinate, Coordinate)> {
        let mut secret = SecretKey::from_bytes(secret).ok()?;
        let public = secret.public_key();
        secret.zeroize();
        Some((public.x(), public.y()))
    }

    pub(super) fn is_x_coordinate(x: &Coordinate) -> bool {
        PublicKey::from_sec1_bytes(&compressed(x)).is_ok()
    }

    pub(super) fn ecdh(secret: &Secret, peer_x: &Coordinate) -> Option<Coordinate> {
        let public = PublicKey::from_sec1_bytes(&compressed(peer_x)).ok()?;
        let mut secret = SecretKey::from_bytes(secret).ok()?;
        let mut shared = secret.agree(&public);
        secret.zeroize();
        let out = *shared.as_bytes();
        shared.zeroize();
        Some(out)
    }
}

/// What the Cortex-M image needs to check the active backend against known answers on the
/// device itself (the host tests cover RustCrypto's). Not a stable API.
#[doc(hidden)]
pub mod device_check {
    /// The public key `(x, y)` of a private key; `None` outside `1..n`.
    pub fn p256_public_key(secret: &[u8; 32]) -> Option<([u8; 32], [u8; 32])> {
        super::public_key(secret)
    }

    /// Whether 32 bytes are the x-coordinate of a point on P-256.
    pub fn p256_is_x_coordinate(x: &[u8; 32]) -> bool {
        super::is_x_coordinate(x)
    }

    /// ECDH of a private key and a peer's x-coordinate.
    pub fn p256_ecdh(secret: &[u8; 32], peer_x: &[u8; 32]) -> Option<[u8; 32]> {
        super::ecdh(secret, peer_x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(text: &str) -> [u8; 32] {
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }

    include!("rfc9529_p256.rs");

    #[test]
    fn rfc9529_keys_and_shared_secret() {
        assert_eq!(public_key(&hex32(X)).unwrap().0, hex32(G_X));
        assert_eq!(
            public_key(&hex32(SK_I)).unwrap(),
            (hex32(G_I_X), hex32(G_I_Y))
        );
        assert_eq!(ecdh(&hex32(X), &hex32(G_Y)), Some(hex32(G_XY)));
        assert!(is_x_coordinate(&hex32(G_Y)));
    }

    #[test]
    fn out_of_range_keys_and_points_off_the_curve_are_refused() {
        assert_eq!(public_key(&hex32(N)), None);
        assert_eq!(public_key(&[0; 32]), None);
        // p itself is no coordinate.
        let p = hex32("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        for x in [hex32(NOT_X), p] {
            assert!(!is_x_coordinate(&x));
            assert_eq!(ecdh(&hex32(X), &x), None);
        }
    }

    #[test]
    fn generated_keys_are_the_drawn_bytes() {
        let mut rng = SeededRng::new([7; 32]);
        let (secret, x, y) = generate(&mut rng);
        let mut again = SeededRng::new([7; 32]);
        let mut drawn = [0u8; 32];
        again.fill_bytes(&mut drawn);
        assert_eq!(secret, drawn, "the first draw is in range");
        assert_eq!(public_key(&secret), Some((x, y)));
    }
}
