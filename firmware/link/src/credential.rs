//! Static credentials: a CCS (CWT Claims Set, RFC 8392) holding a P-256 public key and a kid,
//! the form EDHOC method 3 authenticates (RFC 9528 §3.5.2), and an endpoint's own identity
//! (its credential and private key). Peers reference credentials by kid only.

use lakers::BufferCred;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::HandshakeError;
use crate::seeded_rng::SeededRng;

/// The longest CCS the link accepts.
pub const MAX_CREDENTIAL_LEN: usize = 192;
/// The longest kid.
pub const MAX_KID_LEN: usize = 16;

/// A peer's static credential: a CCS with a P-256 key and a kid.
#[derive(Clone, Copy, PartialEq)]
pub struct Credential {
    pub(crate) inner: lakers::Credential,
}

impl core::fmt::Debug for Credential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credential")
            .field("kid", &Kid::new(self.kid()).ok())
            .finish()
    }
}

impl Credential {
    /// Reads a CCS: `{2: subject, 8: {1: COSE_Key}}` with kty EC2, crv P-256 and a kid.
    pub fn parse(ccs: &[u8]) -> Result<Credential, HandshakeError> {
        let inner =
            lakers::Credential::parse_ccs(ccs).map_err(|_| HandshakeError::MalformedCredential)?;
        if inner.kid.is_none() || inner.public_key().is_none() {
            return Err(HandshakeError::MalformedCredential);
        }
        Ok(Credential { inner })
    }

    /// The key id peers name this credential by.
    pub fn kid(&self) -> &[u8] {
        self.inner.kid.as_ref().map_or(&[][..], |k| k.as_slice())
    }

    /// The encoded CCS.
    pub fn as_bytes(&self) -> &[u8] {
        self.inner.bytes.as_slice()
    }
}

/// A kid: up to [`MAX_KID_LEN`] bytes naming a credential.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Kid {
    len: u8,
    bytes: [u8; MAX_KID_LEN],
}

impl Kid {
    /// The kid with these bytes.
    pub fn new(bytes: &[u8]) -> Result<Kid, HandshakeError> {
        let mut kid = Kid::default();
        kid.bytes
            .get_mut(..bytes.len())
            .ok_or(HandshakeError::MalformedCredential)?
            .copy_from_slice(bytes);
        kid.len = bytes.len() as u8;
        Ok(kid)
    }

    /// The kid's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl core::fmt::Debug for Kid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Kid(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// An endpoint's own static identity: its private key and its credential.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Identity {
    private_key: [u8; 32],
    #[zeroize(skip)]
    credential: Credential,
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Identity")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from a stored private key (32-byte P-256 scalar) and its CCS.
    pub fn new(private_key: [u8; 32], ccs: &[u8]) -> Result<Identity, HandshakeError> {
        let credential = Credential::parse(ccs)?;
        let (x, _) =
            crate::p256::public_key(&private_key).ok_or(HandshakeError::MalformedCredential)?;
        let matches = credential
            .inner
            .public_key()
            .is_some_and(|key| key.iter().eq(x.iter()));
        if !matches {
            return Err(HandshakeError::MalformedCredential);
        }
        Ok(Identity {
            private_key,
            credential,
        })
    }

    /// A fresh identity for provisioning: a new P-256 key pair from `seed` (32 bytes from a
    /// CSPRNG) and a CCS naming it by `kid`, with `subject` as its subject claim.
    pub fn generate(seed: [u8; 32], kid: &[u8], subject: &str) -> Result<Identity, HandshakeError> {
        let (mut private_key, x, y) = crate::p256::generate(&mut SeededRng::new(seed));
        match ccs(kid, subject, &x, &y) {
            Ok(credential) => Ok(Identity {
                private_key,
                credential,
            }),
            Err(error) => {
                private_key.zeroize();
                Err(error)
            }
        }
    }

    /// This endpoint's credential, to give to the peer at provisioning.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The private key, for the provisioning tool to store. Never log it.
    pub fn private_key(&self) -> &[u8; 32] {
        &self.private_key
    }

    pub(crate) fn private_key_array(&self) -> [u8; 32] {
        self.private_key
    }
}

/// The CCS `{2: subject, 8: {1: COSE_Key}}` of a P-256 public key `(x, y)` named by `kid`.
fn ccs(
    kid: &[u8],
    subject: &str,
    x: &[u8; 32],
    y: &[u8; 32],
) -> Result<Credential, HandshakeError> {
    if kid.len() > MAX_KID_LEN || kid.len() > 23 || subject.len() > 255 {
        return Err(HandshakeError::MalformedCredential);
    }
    let mut ccs = BufferCred::new();
    let mut push = |bytes: &[u8]| {
        ccs.extend_from_slice(bytes)
            .map_err(|_| HandshakeError::MalformedCredential)
    };
    push(&[0xA2, 0x02])?;
    if subject.len() < 24 {
        push(&[0x60 | subject.len() as u8])?;
    } else {
        push(&[0x78, subject.len() as u8])?;
    }
    push(subject.as_bytes())?;
    push(&[
        0x08,
        0xA1,
        0x01,
        0xA5,
        0x01,
        0x02,
        0x02,
        0x40 | kid.len() as u8,
    ])?;
    push(kid)?;
    push(&[0x20, 0x01, 0x21, 0x58, 0x20])?;
    push(x)?;
    push(&[0x22, 0x58, 0x20])?;
    push(y)?;
    Credential::parse(ccs.as_slice())
}
