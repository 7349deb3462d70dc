//! Pairing material: the token's provisioning file, which `jeton pair` writes.
//!
//! A [`KeyFile`] is what a token keeps secret, a CBOR map `{1: private key (32-byte bstr),
//! 2: own credential (bstr), 3: the gateway's credential (bstr)}`: its static key pair and
//! the gateway credential it pins. CBOR rather than text because a board stores it as it is,
//! in a flash record. (The gateway's side, its identity and the tokens it accepts, are TOML
//! files the gateway reads, see the gateway's `link_credentials`.)

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::credential::MAX_CREDENTIAL_LEN;
use crate::{Credential, HandshakeError, Identity};

/// A P-256 private scalar.
pub const PRIVATE_KEY_LEN: usize = 32;
/// The largest encoded [`KeyFile`].
pub const MAX_KEY_FILE_LEN: usize = 8 + PRIVATE_KEY_LEN + 2 * (3 + MAX_CREDENTIAL_LEN);

/// Why pairing material could not be written or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PairingError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The bytes are not a key file of the expected shape.
    Malformed,
    /// A credential in it is not a CCS with a P-256 key and a kid, or does not match the
    /// private key.
    Credential(HandshakeError),
}

impl fmt::Display for PairingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairingError::BufferTooSmall => {
                f.write_str("the buffer is too small for the pairing material")
            }
            PairingError::Malformed => f.write_str("the key file is malformed"),
            PairingError::Credential(error) => write!(f, "a credential is unusable: {error}"),
        }
    }
}

impl core::error::Error for PairingError {}

impl<E> From<minicbor::encode::Error<E>> for PairingError {
    fn from(_: minicbor::encode::Error<E>) -> Self {
        PairingError::BufferTooSmall
    }
}

impl From<minicbor::decode::Error> for PairingError {
    fn from(_: minicbor::decode::Error) -> Self {
        PairingError::Malformed
    }
}

impl From<HandshakeError> for PairingError {
    fn from(error: HandshakeError) -> Self {
        PairingError::Credential(error)
    }
}

/// One end's secret pairing material: its identity and, on the token, the gateway's
/// credential it pins. `Debug` shows the credentials, never the key.
#[derive(Clone, Debug)]
pub struct KeyFile {
    /// This end's private key and credential.
    pub identity: Identity,
    /// The peer's credential, pinned (the token's file has the gateway's).
    pub peer: Option<Credential>,
}

impl KeyFile {
    /// Writes the file into `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, PairingError> {
        let mut writer = minicbor::encode::write::Cursor::new(out);
        let mut e = minicbor::Encoder::new(&mut writer);
        e.map(if self.peer.is_some() { 3 } else { 2 })?;
        e.u8(1)?.bytes(self.identity.private_key())?;
        e.u8(2)?.bytes(self.identity.credential().as_bytes())?;
        if let Some(peer) = &self.peer {
            e.u8(3)?.bytes(peer.as_bytes())?;
        }
        Ok(writer.position())
    }

    /// Reads a file [`KeyFile::encode`] wrote: the credentials must be well formed and the
    /// private key must be the one of the own credential.
    pub fn decode(bytes: &[u8]) -> Result<KeyFile, PairingError> {
        let mut d = minicbor::Decoder::new(bytes);
        let mut private_key = Zeroizing([0u8; PRIVATE_KEY_LEN]);
        let mut has_key = false;
        let mut credential = None;
        let mut peer = None;
        for _ in 0..d.map()?.ok_or(PairingError::Malformed)? {
            match d.u8()? {
                1 => {
                    let key = d.bytes()?;
                    if key.len() != PRIVATE_KEY_LEN {
                        return Err(PairingError::Malformed);
                    }
                    private_key.0.copy_from_slice(key);
                    has_key = true;
                }
                2 => credential = Some(d.bytes()?),
                3 => peer = Some(Credential::parse(d.bytes()?)?),
                _ => return Err(PairingError::Malformed),
            }
        }
        if d.position() != bytes.len() || !has_key {
            return Err(PairingError::Malformed);
        }
        let credential = credential.ok_or(PairingError::Malformed)?;
        Ok(KeyFile {
            identity: Identity::new(private_key.0, credential)?,
            peer,
        })
    }
}

/// A private key on the stack, wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Zeroizing([u8; PRIVATE_KEY_LEN]);

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9529 §3.2 (the responder's credential of the EDHOC traces, method 3), hex.
    const RFC9529_CRED_R: &str = "a2026b6578616d706c652e65647508a101a501020241322001215820bbc34960526ea4d32e940cad2a234148ddc21791a12afbcbac93622046dd44f02258204519e257236b2a0ce2023f0931f1f386ca7afda64fcde0108c224c51eabf6072";
    /// RFC 9529 §3.2: the responder's private key for CRED_R.
    const RFC9529_SK_R: &str = "72cc4761dbd4c78f758931aa589d348d1ef874a7e303ede2f140dcf3e6aa4aac";

    #[test]
    fn a_key_file_round_trips_and_hides_its_key_in_debug() {
        let key: [u8; 32] = hex_to_vec(RFC9529_SK_R).try_into().unwrap();
        let credential = hex_to_vec(RFC9529_CRED_R);
        let file = KeyFile {
            identity: Identity::new(key, &credential).unwrap(),
            peer: Some(Credential::parse(&credential).unwrap()),
        };
        let mut out = [0u8; MAX_KEY_FILE_LEN];
        let len = file.encode(&mut out).unwrap();
        let read = KeyFile::decode(&out[..len]).unwrap();
        assert_eq!(read.identity.private_key(), &key);
        assert_eq!(read.identity.credential(), file.identity.credential());
        assert_eq!(read.peer, file.peer);
        assert!(!format!("{read:?}").to_lowercase().contains("72cc"));
        assert!(!format!("{read:?}").contains("114, 204"));
        assert_eq!(
            KeyFile::decode(&out[..len - 1]).unwrap_err(),
            PairingError::Malformed
        );
    }

    #[test]
    fn a_key_file_whose_key_is_not_its_credentials_is_refused() {
        let file = KeyFile {
            identity: Identity::generate([9; 32], b"\x07", "token").unwrap(),
            peer: None,
        };
        let mut out = [0u8; MAX_KEY_FILE_LEN];
        let len = file.encode(&mut out).unwrap();
        // Swap in RFC 9529's credential: the key no longer matches it.
        let mut tampered = out[..len].to_vec();
        let own = file.identity.credential().as_bytes();
        let at = tampered.windows(own.len()).position(|w| w == own).unwrap();
        let other = hex_to_vec(RFC9529_CRED_R);
        tampered.splice(at - 2..at + own.len(), {
            let mut header = vec![0x58, other.len() as u8];
            header.extend_from_slice(&other);
            header
        });
        assert!(matches!(
            KeyFile::decode(&tampered),
            Err(PairingError::Credential(_))
        ));
    }

    fn hex_to_vec(text: &str) -> std::vec::Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }
}
