//! jeton-sim's flags, and what they name: the password, the link material, the gateway's
//! address; [`Usage`] for flags that cannot work.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, bail};

use jeton_core::link::KeyFile;

/// A simulated jeton token: a Matrix E2EE device speaking CoAP to a jeton gateway.
///
/// It reads the commands below from stdin, one per line. Received files are saved under
/// <state-dir>/files/ (or --files-dir).
///
/// Without a terminal it reads its commands from stdin and, once they end, waits for what
/// they started (a login, messages to send, a transfer), then exits: 0 when all went well,
/// 1 after a refused command or a failure (the login, no gateway, a message or file not
/// sent), 2 for unusable flags.
#[derive(clap::Parser, Debug)]
#[command(name = "jeton-sim", version)]
pub(crate) struct Args {
    /// The gateway's UDP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub(crate) gateway: String,
    /// The Matrix user to log in as (localpart or full user id).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// The password (visible in the process list: prefer --password-file).
    #[arg(long)]
    pub(crate) password: Option<String>,
    /// A file whose first line is the password.
    #[arg(long)]
    pub(crate) password_file: Option<PathBuf>,
    /// Where the token keeps its records and storage key (its "flash").
    #[arg(long, default_value = "jeton-sim-state")]
    pub(crate) state_dir: PathBuf,
    /// The device display name given at the first login.
    #[arg(long, default_value = "jeton-sim")]
    pub(crate) device_name: String,
    /// Accept invites from this user without asking (repeatable).
    #[arg(long = "auto-join-from")]
    pub(crate) auto_join_from: Vec<String>,
    /// Log in at start with --user and the password.
    #[arg(long)]
    pub(crate) login: bool,
    /// Register the /sync observation again after this long without a notification. Longer
    /// than the gateway's --observe-keepalive-secs (1200 s by default), so an idle token
    /// stays with the keepalives and does not pay for registrations.
    #[arg(long, default_value_t = 1500)]
    pub(crate) observe_silence_secs: u64,
    /// Share room keys only with devices verified by SAS (`verify`, `confirm`); the others are
    /// told the key is withheld (`m.room_key.withheld`, `m.unverified`).
    #[arg(long)]
    pub(crate) share_keys_only_with_verified: bool,
    /// Bytes of received files the token may keep in its files directory.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub(crate) files_quota: u64,
    /// Where received files are saved. [default: <state-dir>/files]
    #[arg(long, value_name = "DIR")]
    pub(crate) files_dir: Option<PathBuf>,
    /// The token's link provisioning file (`jeton pair --token-out`): EDHOC and OSCORE to
    /// the gateway. Without it, `link.cbor` in the state directory is used if present.
    #[arg(long, value_name = "FILE")]
    pub(crate) link: Option<PathBuf>,
    /// Speak plain CoAP, without the protected link: sends your password and access token
    /// in clear. Only for a gateway in its plain-MSC3079 compatibility mode
    /// (--compat-plain-msc3079 true); without it or a link file jeton-sim does not start.
    #[arg(long, conflicts_with = "link")]
    pub(crate) plain_coap_in_clear: bool,
}

/// What jeton-sim says when it has no link file and no --plain-coap-in-clear.
pub(crate) const NO_LINK: &str = "no link to the gateway: pair the token with \
`jeton pair --token-out FILE` (README, \"Pairing a token with a gateway\") and pass --link FILE, \
or pass --plain-coap-in-clear for a gateway in compatibility mode (it sends your password and \
access token in clear)";

/// The link provisioning material the flags or the state directory name, if any.
pub(crate) fn link_material(args: &Args) -> anyhow::Result<Option<KeyFile>> {
    if args.plain_coap_in_clear {
        return Ok(None);
    }
    let path = match &args.link {
        Some(path) => path.clone(),
        None => {
            let path = args.state_dir.join("link.cbor");
            if !path.exists() {
                return Ok(None);
            }
            path
        }
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let material = KeyFile::decode(&bytes).map_err(|e| {
        anyhow::anyhow!("{} is not link provisioning material: {e}", path.display())
    })?;
    if material.peer.is_none() {
        bail!("{} holds no gateway credential to pin", path.display());
    }
    Ok(Some(material))
}

/// Flags that cannot work: said in one line, exit status 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The password from the flags: `--password`, or the first line of `--password-file`.
pub(crate) fn password(args: &Args) -> anyhow::Result<Option<String>> {
    let (None, Some(file)) = (&args.password, &args.password_file) else {
        return Ok(args.password.clone());
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        Usage(format!(
            "cannot read the password file {}: {e}",
            file.display()
        ))
    })?;
    let first = text.lines().next().unwrap_or_default();
    if first.is_empty() {
        bail!(Usage(format!(
            "the password file {} is empty (its first line is the password)",
            file.display()
        )));
    }
    Ok(Some(first.to_string()))
}

/// The gateway's address from `--gateway`, resolved.
pub(crate) fn gateway_address(args: &Args) -> anyhow::Result<SocketAddr> {
    let gateway = args
        .gateway
        .to_socket_addrs()
        .map_err(|e| {
            Usage(format!(
                "cannot resolve the gateway address {}: {e}",
                args.gateway
            ))
        })?
        .next()
        .ok_or_else(|| {
            Usage(format!(
                "the gateway address {} resolves to nothing",
                args.gateway
            ))
        })?;
    Ok(gateway)
}
