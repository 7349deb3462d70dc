//! `jeton pair`: provisions a token for a gateway.
//!
//! Makes a fresh static P-256 key pair for the token, the gateway's key pair when its key file
//! does not exist yet, writes the token's provisioning file (its private key, its credential,
//! the gateway's credential it pins) and appends the token's credential to the gateway's
//! authorised credentials file. The formats are those of `jeton_link::pairing`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use jeton_link::Identity;
use jeton_link::pairing::{KeyFile, MAX_KEY_FILE_LEN, parse_authorised_line};

use crate::BadInput;

/// What the command was asked to do.
#[derive(Debug)]
pub(crate) struct PairRequest {
    pub(crate) token_out: PathBuf,
    pub(crate) gateway_key: PathBuf,
    pub(crate) gateway_credentials: PathBuf,
    pub(crate) subject: String,
    pub(crate) gateway_subject: String,
}

/// Runs the pairing and returns the summary line printed on stdout.
pub(crate) fn pair(request: &PairRequest) -> Result<String, BadInput> {
    if request.token_out.exists() {
        return Err(BadInput(format!(
            "{} exists: a token is paired once (remove the file to pair it again with a new key)",
            request.token_out.display()
        )));
    }
    let (gateway, gateway_made) = gateway_key(request)?;
    let taken = authorised_kids(&request.gateway_credentials)?;
    let kid = fresh_kid(&taken)?;
    let token = KeyFile {
        identity: identity(&request.subject, &kid)?,
        peer: Some(*gateway.identity.credential()),
    };
    write_secret(&request.token_out, &encoded(&token)?)?;
    let mut line = format!("# {} kid {}\n", request.subject, hex::encode(&kid));
    line.push_str(&hex::encode(token.identity.credential().as_bytes()));
    line.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&request.gateway_credentials)
        .and_then(|mut file| {
            file.write_all(line.as_bytes())?;
            file.sync_all()
        })
        .map_err(|error| {
            BadInput(format!(
                "cannot append to {}: {error}",
                request.gateway_credentials.display()
            ))
        })?;
    let gateway_kid = hex::encode(gateway.identity.credential().kid());
    Ok(format!(
        "paired {} (kid {}) with gateway kid {gateway_kid}{}: token material in {}, credential added to {}\n",
        request.subject,
        hex::encode(&kid),
        if gateway_made {
            " (new gateway key)"
        } else {
            ""
        },
        request.token_out.display(),
        request.gateway_credentials.display(),
    ))
}

/// The gateway's key file, made first when it does not exist; true when it was made.
fn gateway_key(request: &PairRequest) -> Result<(KeyFile, bool), BadInput> {
    let path = &request.gateway_key;
    match std::fs::read(path) {
        Ok(bytes) => {
            let file = KeyFile::decode(&bytes).map_err(|error| {
                BadInput(format!(
                    "{} is not a gateway key file: {error}",
                    path.display()
                ))
            })?;
            Ok((file, false))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let file = KeyFile {
                identity: identity(&request.gateway_subject, &[random_byte()?])?,
                peer: None,
            };
            write_secret(path, &encoded(&file)?)?;
            Ok((file, true))
        }
        Err(error) => Err(BadInput(format!("cannot read {}: {error}", path.display()))),
    }
}

/// The key ids already in the authorised credentials file (none when it does not exist).
fn authorised_kids(path: &Path) -> Result<Vec<Vec<u8>>, BadInput> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(BadInput(format!("cannot read {}: {error}", path.display()))),
    };
    let mut kids = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let credential = parse_authorised_line(line).map_err(|error| {
            BadInput(format!("{} line {}: {error}", path.display(), number + 1))
        })?;
        if let Some(credential) = credential {
            kids.push(credential.kid().to_vec());
        }
    }
    Ok(kids)
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
        .map_err(|error| BadInput(format!("the subject {subject:?}: {error}")))
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
