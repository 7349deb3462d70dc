//! Short authentication strings (SAS) for Matrix device verification: the key agreement
//! `curve25519-hkdf-sha256`, the short strings (decimal and emoji), the MACs
//! `hkdf-hmac-sha256.v2` and `hkdf-hmac-sha256`, and the commitment of the `m.sas.v1`
//! method ([the specification](https://spec.matrix.org/latest/client-server-api/#short-authentication-string-sas-verification)).
//!
//! This module owns the cryptography only; the caller (jeton-core) builds the info strings
//! from the user ids, device ids, public keys and transaction id the specification names,
//! and runs the protocol.
//!
//! ```
//! use jeton_olm::sas::Sas;
//!
//! let mut rng = rand::rng();
//! let alice = Sas::new(&mut rng);
//! let bob = Sas::new(&mut rng);
//! let (alice_key, bob_key) = (alice.public_key(), bob.public_key());
//! let alice = alice.diffie_hellman(&bob_key)?;
//! let bob = bob.diffie_hellman(&alice_key)?;
//! let info = b"MATRIX_KEY_VERIFICATION_SAS|...";
//! assert_eq!(alice.bytes(info).decimals(), bob.bytes(info).decimals());
//! # Ok::<(), jeton_olm::sas::SasError>(())
//! ```

use core::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Curve25519PublicKey;
use crate::base64;
use crate::keys::Curve25519Keypair;
use crate::primitives::SharedSecret;

/// The length of a MAC's base64 text (32 bytes, unpadded).
pub const MAC_BASE64_LEN: usize = base64::encoded_len(32);

/// Why a SAS operation failed. Carries no key material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SasError {
    /// The other side's public key gives an all-zero shared secret (a low-order point).
    NonContributoryKey,
    /// A MAC did not match.
    MacMismatch,
}

impl fmt::Display for SasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SasError::NonContributoryKey => "the other side's SAS key is not contributory",
            SasError::MacMismatch => "the MAC does not match",
        })
    }
}

impl core::error::Error for SasError {}

/// The two MAC methods of `m.sas.v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacMethod {
    /// `hkdf-hmac-sha256.v2`: HMAC-SHA-256 under an HKDF-derived key, in unpadded base64.
    HkdfHmacSha256V2,
    /// `hkdf-hmac-sha256`: the same MAC, in the base64 libolm wrote by encoding in place
    /// (vodozemac's `calculate_mac_invalid_base64`). Some implementations (matrix-nio 0.26)
    /// write and expect standard base64 under this name instead; [`EstablishedSas::verify_mac`]
    /// accepts both forms for this method.
    HkdfHmacSha256,
}

impl MacMethod {
    /// The method's name in `m.key.verification.*` events.
    pub const fn name(self) -> &'static str {
        match self {
            MacMethod::HkdfHmacSha256V2 => "hkdf-hmac-sha256.v2",
            MacMethod::HkdfHmacSha256 => "hkdf-hmac-sha256",
        }
    }

    /// The method named `name`, if it is one of the two.
    pub fn from_name(name: &str) -> Option<Self> {
        [MacMethod::HkdfHmacSha256V2, MacMethod::HkdfHmacSha256]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// How a MAC's 32 bytes are written as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacEncoding {
    /// Unpadded standard base64.
    Base64,
    /// libolm's base64 written over its own input (see [`MacMethod::HkdfHmacSha256`]).
    LibolmInPlace,
}

/// An ephemeral X25519 key pair for one verification. Its secret is wiped on drop, and
/// [`Sas::diffie_hellman`] consumes it, so it is used once.
pub struct Sas {
    keypair: Curve25519Keypair,
}

impl Sas {
    /// A fresh ephemeral key pair.
    pub fn new<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Sas {
            keypair: Curve25519Keypair::generate(rng),
        }
    }

    /// The public key, sent in `m.key.verification.key`.
    pub const fn public_key(&self) -> Curve25519PublicKey {
        self.keypair.public_key()
    }

    /// Agrees on the shared secret with the other side's public key.
    pub fn diffie_hellman(
        self,
        their_public_key: &Curve25519PublicKey,
    ) -> Result<EstablishedSas, SasError> {
        let shared = self
            .keypair
            .diffie_hellman(their_public_key)
            .ok_or(SasError::NonContributoryKey)?;
        Ok(EstablishedSas {
            shared,
            our_public_key: self.keypair.public_key(),
            their_public_key: *their_public_key,
        })
    }
}

impl fmt::Debug for Sas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sas")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// The shared secret of a verification, from which the short string and the MAC keys are
/// derived. Wiped on drop.
#[derive(ZeroizeOnDrop)]
pub struct EstablishedSas {
    shared: SharedSecret,
    #[zeroize(skip)]
    our_public_key: Curve25519PublicKey,
    #[zeroize(skip)]
    their_public_key: Curve25519PublicKey,
}

impl EstablishedSas {
    /// Our ephemeral public key.
    pub const fn our_public_key(&self) -> Curve25519PublicKey {
        self.our_public_key
    }

    /// The other side's ephemeral public key.
    pub const fn their_public_key(&self) -> Curve25519PublicKey {
        self.their_public_key
    }

    fn expand(&self, info: &[u8], out: &mut [u8]) {
        // Expanding at most 8160 bytes never fails; 6 and 32 are asked for.
        let _ = Hkdf::<Sha256>::new(None, self.shared.as_bytes()).expand(info, out);
    }

    /// The six SAS bytes for `info` (`MATRIX_KEY_VERIFICATION_SAS|...`).
    pub fn bytes(&self, info: &[u8]) -> SasBytes {
        let mut bytes = [0u8; 6];
        self.expand(info, &mut bytes);
        SasBytes(bytes)
    }

    /// HMAC-SHA-256 of `input` under the key HKDF derives for `info`.
    pub fn mac(&self, input: &[u8], info: &[u8]) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.expand(info, &mut key);
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key);
        key.zeroize();
        match mac {
            Ok(mut mac) => {
                mac.update(input);
                mac.finalize().into_bytes().into()
            }
            // A 32-byte key is always accepted.
            Err(_) => [0u8; 32],
        }
    }

    /// The MAC of `input` as `encoding` writes it into `out`.
    pub fn mac_text<'o>(
        &self,
        input: &[u8],
        info: &[u8],
        encoding: MacEncoding,
        out: &'o mut [u8; MAC_BASE64_LEN],
    ) -> &'o str {
        encode_mac(&self.mac(input, info), encoding, out)
    }

    /// Checks the MAC text `tag` of `input` for `method`, in constant time. Returns the
    /// encoding it was written in (always [`MacEncoding::Base64`] for the v2 method).
    pub fn verify_mac(
        &self,
        input: &[u8],
        info: &[u8],
        method: MacMethod,
        tag: &str,
    ) -> Result<MacEncoding, SasError> {
        let mac = self.mac(input, info);
        let encodings: &[MacEncoding] = match method {
            MacMethod::HkdfHmacSha256V2 => &[MacEncoding::Base64],
            MacMethod::HkdfHmacSha256 => &[MacEncoding::LibolmInPlace, MacEncoding::Base64],
        };
        let mut found = None;
        for encoding in encodings {
            let mut expected = [0u8; MAC_BASE64_LEN];
            let expected = encode_mac(&mac, *encoding, &mut expected);
            let equal: bool = expected.as_bytes().ct_eq(tag.as_bytes()).into();
            if equal && found.is_none() {
                found = Some(*encoding);
            }
        }
        found.ok_or(SasError::MacMismatch)
    }
}

impl fmt::Debug for EstablishedSas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EstablishedSas")
            .field("our_public_key", &self.our_public_key)
            .field("their_public_key", &self.their_public_key)
            .finish_non_exhaustive()
    }
}

fn encode_mac<'o>(
    mac: &[u8; 32],
    encoding: MacEncoding,
    out: &'o mut [u8; MAC_BASE64_LEN],
) -> &'o str {
    match encoding {
        MacEncoding::Base64 => base64::encode(mac, out).unwrap_or_default(),
        MacEncoding::LibolmInPlace => libolm_in_place_base64(mac, out),
    }
}

/// libolm encoded the MAC into the buffer that held it: each group of three input bytes is
/// read after the previous groups' output (four bytes per group) has overwritten part of
/// it. This replays that on a 43-byte buffer.
fn libolm_in_place_base64<'o>(mac: &[u8; 32], out: &'o mut [u8; MAC_BASE64_LEN]) -> &'o str {
    out.fill(0);
    for (slot, byte) in out.iter_mut().zip(mac) {
        *slot = *byte;
    }
    let mut group = [0u8; 4];
    for index in 0..11 {
        let read = index * 3;
        let len = if index < 10 { 3 } else { 2 };
        let mut input = [0u8; 3];
        for (at, byte) in input.iter_mut().enumerate().take(len) {
            *byte = out.get(read + at).copied().unwrap_or(0);
        }
        let Ok(encoded) = base64::encode(input.get(..len).unwrap_or_default(), &mut group) else {
            return "";
        };
        let write = index * 4;
        for (at, byte) in encoded.bytes().enumerate() {
            if let Some(slot) = out.get_mut(write + at) {
                *slot = byte;
            }
        }
    }
    core::str::from_utf8(out).unwrap_or_default()
}

/// The six bytes the short strings are made of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SasBytes(pub [u8; 6]);

impl SasBytes {
    /// Three numbers from 1000 to 9191: the first 39 bits in groups of 13, plus 1000.
    pub fn decimals(&self) -> [u16; 3] {
        let [b0, b1, b2, b3, b4, _] = self.0.map(u16::from);
        [
            (b0 << 5 | b1 >> 3) + 1000,
            ((b1 & 0x7) << 10 | b2 << 2 | b3 >> 6) + 1000,
            ((b3 & 0x3f) << 7 | b4 >> 1) + 1000,
        ]
    }

    /// Seven indices into [`EMOJI`]: the first 42 bits in groups of 6.
    pub fn emoji_indices(&self) -> [u8; 7] {
        let bits = self
            .0
            .iter()
            .fold(0u64, |acc, byte| acc << 8 | u64::from(*byte));
        core::array::from_fn(|i| ((bits >> (42 - 6 * i)) & 63) as u8)
    }
}

/// The commitment an accepting device sends in `m.key.verification.accept`: unpadded
/// base64 of SHA-256 over its public key in base64 followed by the canonical JSON of the
/// `m.key.verification.start` content.
pub fn commitment(public_key: &Curve25519PublicKey, canonical_start: &[u8]) -> [u8; 32] {
    let mut key = [0u8; base64::encoded_len(32)];
    let key = public_key.to_base64(&mut key);
    Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update(canonical_start)
        .finalize()
        .into()
}

/// The emoji of the SAS method `emoji` and their English names, by index
/// ([the specification's table](https://spec.matrix.org/latest/client-server-api/#sas-method-emoji)).
pub const EMOJI: [(&str, &str); 64] = [
    ("\u{1F436}", "Dog"),
    ("\u{1F431}", "Cat"),
    ("\u{1F981}", "Lion"),
    ("\u{1F40E}", "Horse"),
    ("\u{1F984}", "Unicorn"),
    ("\u{1F437}", "Pig"),
    ("\u{1F418}", "Elephant"),
    ("\u{1F430}", "Rabbit"),
    ("\u{1F43C}", "Panda"),
    ("\u{1F413}", "Rooster"),
    ("\u{1F427}", "Penguin"),
    ("\u{1F422}", "Turtle"),
    ("\u{1F41F}", "Fish"),
    ("\u{1F419}", "Octopus"),
    ("\u{1F98B}", "Butterfly"),
    ("\u{1F337}", "Flower"),
    ("\u{1F333}", "Tree"),
    ("\u{1F335}", "Cactus"),
    ("\u{1F344}", "Mushroom"),
    ("\u{1F30F}", "Globe"),
    ("\u{1F319}", "Moon"),
    ("\u{2601}\u{FE0F}", "Cloud"),
    ("\u{1F525}", "Fire"),
    ("\u{1F34C}", "Banana"),
    ("\u{1F34E}", "Apple"),
    ("\u{1F353}", "Strawberry"),
    ("\u{1F33D}", "Corn"),
    ("\u{1F355}", "Pizza"),
    ("\u{1F382}", "Cake"),
    ("\u{2764}\u{FE0F}", "Heart"),
    ("\u{1F600}", "Smiley"),
    ("\u{1F916}", "Robot"),
    ("\u{1F3A9}", "Hat"),
    ("\u{1F453}", "Glasses"),
    ("\u{1F527}", "Spanner"),
    ("\u{1F385}", "Santa"),
    ("\u{1F44D}", "Thumbs Up"),
    ("\u{2602}\u{FE0F}", "Umbrella"),
    ("\u{231B}", "Hourglass"),
    ("\u{23F0}", "Clock"),
    ("\u{1F381}", "Gift"),
    ("\u{1F4A1}", "Light Bulb"),
    ("\u{1F4D5}", "Book"),
    ("\u{270F}\u{FE0F}", "Pencil"),
    ("\u{1F4CE}", "Paperclip"),
    ("\u{2702}\u{FE0F}", "Scissors"),
    ("\u{1F512}", "Lock"),
    ("\u{1F511}", "Key"),
    ("\u{1F528}", "Hammer"),
    ("\u{260E}\u{FE0F}", "Telephone"),
    ("\u{1F3C1}", "Flag"),
    ("\u{1F682}", "Train"),
    ("\u{1F6B2}", "Bicycle"),
    ("\u{2708}\u{FE0F}", "Aeroplane"),
    ("\u{1F680}", "Rocket"),
    ("\u{1F3C6}", "Trophy"),
    ("\u{26BD}", "Ball"),
    ("\u{1F3B8}", "Guitar"),
    ("\u{1F3BA}", "Trumpet"),
    ("\u{1F514}", "Bell"),
    ("\u{2693}", "Anchor"),
    ("\u{1F3A7}", "Headphones"),
    ("\u{1F4C1}", "Folder"),
    ("\u{1F4CC}", "Pin"),
];

#[cfg(test)]
mod tests;
