//! The gateway's side of pairing: its own EDHOC identity and the file of authorised token
//! credentials, both TOML with hex-encoded CBOR.
//!
//! Identity file (`--link-identity`, keep it private, mode 0600):
//!
//! ```toml
//! private_key = "…64 hex digits…"      # P-256 scalar
//! credential = "a202…"                  # its CCS, hex; tokens pin this
//! ```
//!
//! Authorised tokens (`--link-tokens`), one table per token, named for the logs:
//!
//! ```toml
//! [[token]]
//! name = "alice-token"
//! credential = "a202…"                  # the token's CCS, hex (its kid must be unique)
//! ```

use std::collections::HashMap;
use std::path::Path;

use jeton_link::{Credential, Identity};
use serde::Deserialize;

/// Why the link's files cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkFileError {
    /// A file could not be read.
    Read(String),
    /// A file is not valid TOML of the documented shape.
    Parse(String),
    /// A key or credential in a file is malformed.
    Credential(String),
}

impl core::fmt::Display for LinkFileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Read(why) => write!(f, "a link file could not be read: {why}"),
            Self::Parse(why) => write!(f, "a link file is not valid: {why}"),
            Self::Credential(why) => write!(f, "a link credential is unusable: {why}"),
        }
    }
}

impl std::error::Error for LinkFileError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    private_key: String,
    credential: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    credential: String,
}

/// A token the gateway accepts: its credential and the name the logs use.
#[derive(Debug, Clone)]
pub struct AuthorisedToken {
    /// The operator's name for the token.
    pub name: String,
    /// Its credential.
    pub credential: Credential,
}

/// The link settings: the gateway's identity and the tokens it accepts, by kid.
#[derive(Debug, Clone)]
pub struct LinkCredentials {
    /// The gateway's own key pair and credential.
    pub identity: Identity,
    /// Authorised tokens by kid.
    pub tokens: HashMap<Vec<u8>, AuthorisedToken>,
}

fn read(path: &Path) -> Result<String, LinkFileError> {
    std::fs::read_to_string(path)
        .map_err(|e| LinkFileError::Read(format!("{}: {e}", path.display())))
}

fn unhex(what: &str, text: &str) -> Result<Vec<u8>, LinkFileError> {
    hex::decode(text.trim()).map_err(|e| LinkFileError::Credential(format!("{what}: {e}")))
}

impl LinkCredentials {
    /// Reads the identity file and the authorised-tokens file.
    pub fn load(identity: &Path, tokens: &Path) -> Result<Self, LinkFileError> {
        let file: IdentityFile = toml::from_str(&read(identity)?)
            .map_err(|e| LinkFileError::Parse(format!("{}: {e}", identity.display())))?;
        let key: [u8; 32] = unhex("private_key", &file.private_key)?
            .try_into()
            .map_err(|_| LinkFileError::Credential("private_key: not 32 bytes".into()))?;
        let identity = Identity::new(key, &unhex("credential", &file.credential)?)
            .map_err(|e| LinkFileError::Credential(format!("the gateway identity: {e}")))?;
        Ok(LinkCredentials {
            identity,
            tokens: Self::load_tokens(tokens)?,
        })
    }

    /// Reads the authorised-tokens file alone (again, on SIGHUP): the tokens by kid.
    pub fn load_tokens(tokens: &Path) -> Result<HashMap<Vec<u8>, AuthorisedToken>, LinkFileError> {
        let file: TokensFile = toml::from_str(&read(tokens)?)
            .map_err(|e| LinkFileError::Parse(format!("{}: {e}", tokens.display())))?;
        let mut by_kid = HashMap::new();
        for entry in file.token {
            let credential = Credential::parse(&unhex(&entry.name, &entry.credential)?)
                .map_err(|e| LinkFileError::Credential(format!("token {:?}: {e}", entry.name)))?;
            let kid = credential.kid().to_vec();
            if let Some(other) = by_kid.insert(
                kid.clone(),
                AuthorisedToken {
                    name: entry.name.clone(),
                    credential,
                },
            ) {
                return Err(LinkFileError::Credential(format!(
                    "tokens {:?} and {:?} share the kid {}",
                    other.name,
                    entry.name,
                    hex::encode(kid)
                )));
            }
        }
        Ok(by_kid)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn files_load_and_bad_ones_are_refused_with_a_sentence() {
        let dir = std::env::temp_dir().join(format!("jeton-link-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gateway = Identity::generate([2; 32], b"\x0b", "gateway").unwrap();
        let token = Identity::generate([1; 32], b"\x0a", "token").unwrap();
        let identity = write(
            &dir,
            "identity.toml",
            &format!(
                "private_key = \"{}\"\ncredential = \"{}\"\n",
                hex::encode(gateway.private_key()),
                hex::encode(gateway.credential().as_bytes())
            ),
        );
        let entry = |name: &str| {
            format!(
                "[[token]]\nname = \"{name}\"\ncredential = \"{}\"\n",
                hex::encode(token.credential().as_bytes())
            )
        };
        let tokens = write(&dir, "tokens.toml", &entry("alice"));
        let loaded = LinkCredentials::load(&identity, &tokens).unwrap();
        assert_eq!(loaded.identity.credential(), gateway.credential());
        assert_eq!(loaded.tokens[&b"\x0a".to_vec()].name, "alice");
        assert!(
            !format!("{loaded:?}").contains(&hex::encode(gateway.private_key())),
            "Debug shows no private key"
        );

        let twice = write(&dir, "twice.toml", &(entry("alice") + &entry("bob")));
        let err = LinkCredentials::load(&identity, &twice).unwrap_err();
        assert!(err.to_string().contains("share the kid 0a"), "{err}");

        let bad_hex = write(
            &dir,
            "bad.toml",
            "[[token]]\nname = \"x\"\ncredential = \"zz\"\n",
        );
        assert!(matches!(
            LinkCredentials::load(&identity, &bad_hex),
            Err(LinkFileError::Credential(_))
        ));
        let wrong_key = write(
            &dir,
            "wrong.toml",
            &format!(
                "private_key = \"{}\"\ncredential = \"{}\"\n",
                hex::encode(token.private_key()),
                hex::encode(gateway.credential().as_bytes())
            ),
        );
        assert!(
            LinkCredentials::load(&wrong_key, &tokens)
                .unwrap_err()
                .to_string()
                .contains("gateway identity")
        );
        assert!(matches!(
            LinkCredentials::load(&dir.join("missing.toml"), &tokens),
            Err(LinkFileError::Read(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
