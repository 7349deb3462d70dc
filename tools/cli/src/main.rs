//! `jeton`: the operator tool of the jeton wire profile.
//!
//! # Usage
//!
//! ```text
//! jeton cbor encode --profile v2 --hex < event.json     # JSON -> canonical CBOR (hex)
//! jeton cbor decode --hex < event.hex                    # CBOR (or hex) -> JSON
//! jeton path compress /_matrix/client/v3/sync            # -> /v
//! jeton path expand /w/%21room%3Aserver/m.room.encrypted/txn1
//! jeton pair --token-out kitchen.link --gateway-identity gateway-identity.toml \
//!     --gateway-tokens gateway-tokens.toml --name kitchen
//! ```
//!
//! Bad input gives one line on stderr saying what is wrong and where (a byte offset), exit status 2, and
//! nothing on stdout. The profile is described in `firmware/proto/PROFILE.md`.

mod input_check;
mod pair;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jeton_proto::TableVersion;
use jeton_proto::path;
use jeton_proto::transcode::{cbor_to_json, json_to_cbor};

#[derive(Debug, Parser)]
#[command(name = "jeton", version, about = "jeton wire-profile tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Transcode between Matrix JSON and the profile's CBOR.
    #[command(subcommand)]
    Cbor(CborCommand),
    /// Translate between full Matrix paths and MSC3079 short paths.
    #[command(subcommand)]
    Path(PathCommand),
    /// Pair a token with a gateway: a fresh key pair for the token, its provisioning file,
    /// the gateway's identity if it has none, and the token added to the gateway's
    /// authorised tokens.
    Pair {
        /// Where to write the token's provisioning file (jeton-sim --link FILE).
        #[arg(long)]
        token_out: PathBuf,
        /// The gateway's identity file (its --link-identity); made when it does not exist.
        #[arg(long)]
        gateway_identity: PathBuf,
        /// The gateway's authorised tokens file (its --link-tokens); the token is appended.
        #[arg(long)]
        gateway_tokens: PathBuf,
        /// The token's name: its credential's subject and its name in the gateway's logs.
        #[arg(long, default_value = "jeton-token")]
        name: String,
        /// The gateway's name, when its identity is made.
        #[arg(long, default_value = "jeton-gateway")]
        gateway_name: String,
    },
}

#[derive(Debug, Subcommand)]
enum CborCommand {
    /// JSON on stdin -> canonical CBOR on stdout.
    Encode {
        /// CBOR table version (CoAP option 257).
        #[arg(long, value_enum, default_value_t = Profile::V2)]
        profile: Profile,
        /// Write lower-case hex on one line instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
    /// CBOR (or hex with --hex) on stdin -> JSON on stdout, integer keys expanded to names.
    Decode {
        /// CBOR table version (CoAP option 257); v2 also reads all of v1.
        #[arg(long, value_enum, default_value_t = Profile::V2)]
        profile: Profile,
        /// Read hex text instead of raw bytes (whitespace ignored); error offsets count CBOR bytes.
        #[arg(long)]
        hex: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PathCommand {
    /// Full HTTP path (percent-encoded) -> short path; unknown paths are printed unchanged.
    Compress {
        path: String,
        #[arg(long, value_enum, default_value_t = Profile::V2)]
        profile: Profile,
    },
    /// Short path -> full HTTP path; a first segment that is not an enum is printed unchanged.
    Expand {
        short_path: String,
        #[arg(long, value_enum, default_value_t = Profile::V2)]
        profile: Profile,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Profile {
    /// MSC3079 version 1.
    V1,
    /// jeton version 2 (superset of v1).
    V2,
}

impl From<Profile> for TableVersion {
    fn from(profile: Profile) -> Self {
        match profile {
            Profile::V1 => TableVersion::V1,
            Profile::V2 => TableVersion::V2,
        }
    }
}

/// A problem with the user's input: printed as one line, exit status 2.
#[derive(Debug)]
struct BadInput(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(output) => match std::io::stdout().write_all(&output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: cannot write the output: {error}");
                ExitCode::FAILURE
            }
        },
        Err(BadInput(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn stdin_bytes() -> Result<Vec<u8>, BadInput> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|error| BadInput(format!("cannot read stdin: {error}")))?;
    Ok(input)
}

/// Runs a command and returns what it prints on stdout.
fn run(command: Command) -> Result<Vec<u8>, BadInput> {
    match command {
        Command::Cbor(CborCommand::Encode { profile, hex }) => {
            let input = stdin_bytes()?;
            let text = std::str::from_utf8(&input).map_err(|error| {
                BadInput(format!(
                    "the input is not UTF-8 (at byte {})",
                    error.valid_up_to()
                ))
            })?;
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|error| BadInput(input_check::json_syntax(text, &error)))?;
            input_check::json_values(text).map_err(BadInput)?;
            let cbor =
                json_to_cbor(&json, profile.into()).map_err(|error| BadInput(error.to_string()))?;
            Ok(if hex {
                format!("{}\n", ::hex::encode(cbor)).into_bytes()
            } else {
                cbor
            })
        }
        Command::Cbor(CborCommand::Decode { profile, hex }) => {
            let input = stdin_bytes()?;
            let cbor = if hex {
                input_check::hex_text(&input).map_err(BadInput)?
            } else {
                input
            };
            let json =
                cbor_to_json(&cbor, profile.into()).map_err(|error| BadInput(error.to_string()))?;
            Ok(format!("{json}\n").into_bytes())
        }
        Command::Path(PathCommand::Compress { path, profile }) => {
            let mut out = String::new();
            path::compress(&path, profile.into(), &mut out)
                .map_err(|error| BadInput(error.to_string()))?;
            out.push('\n');
            Ok(out.into_bytes())
        }
        Command::Path(PathCommand::Expand {
            short_path,
            profile,
        }) => {
            let mut out = String::new();
            path::expand(&short_path, profile.into(), &mut out)
                .map_err(|error| BadInput(error.to_string()))?;
            out.push('\n');
            Ok(out.into_bytes())
        }
        Command::Pair {
            token_out,
            gateway_identity,
            gateway_tokens,
            name,
            gateway_name,
        } => pair::pair(&pair::PairRequest {
            token_out,
            gateway_identity,
            gateway_tokens,
            name,
            gateway_name,
        })
        .map(String::into_bytes),
    }
}
