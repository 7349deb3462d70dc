//! `jeton pair`: provisions a token for a gateway.
//!
//! Makes a fresh static P-256 key pair for the token, the gateway's identity when its file
//! does not exist yet, writes the token's provisioning file (its private key, its credential,
//! the gateway's credential it pins; `jeton_link::pairing::KeyFile`) and appends the token to
//! the gateway's authorised tokens. The gateway's two files are the TOML files its
//! `--link-identity` and `--link-tokens` read:
//!
//! ```toml
//! # identity (mode 0600)
//! private_key = "…64 hex digits…"
//! credential = "a202…"
//!
//! # tokens
//! [[token]]
//! name = "kitchen"
//! credential = "a202…"
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use jeton_link::Identity;
use jeton_link::pairing::{KeyFile, MAX_KEY_FILE_LEN};
use serde::Deserialize;

use crate::BadInput;

/// What the command was asked to do.
#[derive(Debug)]
pub(crate) struct PairRequest {
    pub(crate) token_out: PathBuf,
    pub(crate) gateway_identity: PathBuf,
    pub(crate) gateway_tokens: PathBuf,
    pub(crate) name: String,
    pub(crate) gateway_name: String,
}

#[derive(Deserialize)]
struct IdentityFile {
    private_key: String,
    credential: String,
}

#[derive(Deserialize, Default)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
struct TokenEntry {
    name: String,
    credential: String,
}

/// Runs the pairing and returns the summary line printed on stdout.
pub(crate) fn pair(request: &PairRequest) -> Result<String, BadInput> {
    if request.token_out.exists() {
        return Err(BadInput(format!(
            "{} exists: a token is paired once (remove the file to pair it again with a new key)",
            request.token_out.display()
        )));
    }
    let tokens = authorised_tokens(&request.gateway_tokens)?;
    if tokens.iter().any(|(name, _)| *name == request.name) {
        return Err(BadInput(format!(
            "{} already lists a token named {:?}",
            request.gateway_tokens.display(),
            request.name
        )));
    }
    let (gateway, gateway_made) = gateway_identity(request)?;
    let kids: Vec<Vec<u8>> = tokens.into_iter().map(|(_, kid)| kid).collect();
    let kid = fresh_kid(&kids)?;
    let token = KeyFile {
        identity: identity(&request.name, &kid)?,
        peer: Some(*gateway.credential()),
    };
    write_secret(&request.token_out, &encoded(&token)?)?;
    let entry = format!(
        "\n[[token]]\nname = {}\ncredential = \"{}\"\n",
        toml_string(&request.name),
        hex::encode(token.identity.credential().as_bytes())
    );
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&request.gateway_tokens)
        .and_then(|mut file| {
            file.write_all(entry.as_bytes())?;
            file.sync_all()
        })
        .map_err(|error| {
            BadInput(format!(
                "cannot append to {}: {error}",
                request.gateway_tokens.display()
            ))
        })?;
    Ok(format!(
        "paired {} (kid {}) with gateway kid {}{}: token material in {}, token added to {}\n",
        request.name,
        hex::encode(&kid),
        hex::encode(gateway.credential().kid()),
        if gateway_made {
            " (new gateway identity)"
        } else {
            ""
        },
        request.token_out.display(),
        request.gateway_tokens.display(),
    ))
}

/// The gateway's identity, made first when its file does not exist; true when it was made.
fn gateway_identity(request: &PairRequest) -> Result<(Identity, bool), BadInput> {
    let path = &request.gateway_identity;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bad = |why: String| {
                BadInput(format!(
                    "{} is not a gateway identity: {why}",
                    path.display()
                ))
            };
            let file: IdentityFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            let key: [u8; 32] = hex::decode(file.private_key.trim())
                .map_err(|e| bad(e.to_string()))?
                .try_into()
                .map_err(|_| bad("the private key is not 32 bytes".into()))?;
            let credential = hex::decode(file.credential.trim()).map_err(|e| bad(e.to_string()))?;
            let identity = Identity::new(key, &credential).map_err(|e| bad(e.to_string()))?;
            Ok((identity, false))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let identity = identity(&request.gateway_name, &[random_byte()?])?;
            let text = format!(
                "# jeton gateway link identity (jeton pair): keep it private\nprivate_key = \"{}\"\ncredential = \"{}\"\n",
                hex::encode(identity.private_key()),
                hex::encode(identity.credential().as_bytes())
            );
            write_secret(path, text.as_bytes())?;
            Ok((identity, true))
        }
        Err(error) => Err(BadInput(format!("cannot read {}: {error}", path.display()))),
    }
}

/// The names and key ids of the tokens already authorised (none when the file does not
/// exist).
fn authorised_tokens(path: &Path) -> Result<Vec<(String, Vec<u8>)>, BadInput> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(BadInput(format!("cannot read {}: {error}", path.display()))),
    };
    let bad = |why: String| BadInput(format!("{}: {why}", path.display()));
    let file: TokensFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    file.token
        .into_iter()
        .map(|entry| {
            let bytes = hex::decode(entry.credential.trim()).map_err(|e| bad(e.to_string()))?;
            let credential = jeton_link::Credential::parse(&bytes)
                .map_err(|e| bad(format!("token {:?}: {e}", entry.name)))?;
            Ok((entry.name, credential.kid().to_vec()))
        })
        .collect()
}

/// A random one-byte key id no authorised token has (two bytes once 256 are taken).
fn fresh_kid(taken: &[Vec<u8>]) -> Result<Vec<u8>, BadInput> {
    let len = if taken.iter().filter(|kid| kid.len() == 1).count() >= 256 {
        2
    } else {
        1
    };
    loop {
        let mut kid = vec![0u8; len];
        fill_random(&mut kid)?;
        if !taken.contains(&kid) {
            return Ok(kid);
        }
    }
}

/// A fresh P-256 identity named `subject` with key id `kid`.
fn identity(subject: &str, kid: &[u8]) -> Result<Identity, BadInput> {
    let mut seed = [0u8; 32];
    fill_random(&mut seed)?;
    Identity::generate(seed, kid, subject)
        .map_err(|error| BadInput(format!("the name {subject:?}: {error}")))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn encoded(file: &KeyFile) -> Result<Vec<u8>, BadInput> {
    let mut out = [0u8; MAX_KEY_FILE_LEN];
    let len = file
        .encode(&mut out)
        .map_err(|error| BadInput(error.to_string()))?;
    Ok(out[..len].to_vec())
}

/// Writes a new file only its owner can read.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), BadInput> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(|error| BadInput(format!("cannot write {}: {error}", path.display())))
}

fn random_byte() -> Result<u8, BadInput> {
    let mut byte = [0u8; 1];
    fill_random(&mut byte)?;
    Ok(byte[0])
}

fn fill_random(dest: &mut [u8]) -> Result<(), BadInput> {
    getrandom::fill(dest)
        .map_err(|error| BadInput(format!("the OS random number generator failed: {error}")))
}
