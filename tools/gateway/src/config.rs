//! Settings: command-line flags, `JETON_GATEWAY_*` environment variables and a TOML file.
//!
//! Precedence, highest first: flag, environment variable, config file, built-in default. The
//! TOML keys are the long flag names with `_` for `-` (for example `max_observers = 10000`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::limits::Limits;
use crate::source::Sources;

/// Command line, environment and (deserialised from TOML) the config file. Every value is
/// optional so that each source fills only what the ones above it left open; defaults are
/// applied last and named in each help text.
#[derive(Debug, Default, Parser, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[command(
    name = "jeton-gateway",
    version,
    about = "CoAP/CBOR (MSC3079 superset) to Matrix Client-Server API gateway",
    long_about = "Translates the compact CBOR-over-CoAP Matrix profile spoken by jeton tokens and MSC3079 \
clients to HTTP+JSON for any Matrix homeserver.\n\n\
Settings come from, highest precedence first: command-line flags, JETON_GATEWAY_* environment \
variables, the TOML file given by --config (keys are the long flag names with '_' for '-', e.g. \
max_observers = 10000), built-in defaults.\n\n\
The gateway holds no Matrix state: only per-peer transport state (sticky access token, duplicate \
cache, blockwise buffers, observers), each bounded by the limits below."
)]
pub struct Cli {
    /// TOML config file.
    #[arg(long, global = true, env = "JETON_GATEWAY_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// UDP address the CoAP server listens on. [default: [::]:5683]
    #[arg(long, env = "JETON_GATEWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Homeserver base URL (http:// or https://), e.g. https://matrix.example.org. Required.
    #[arg(long, env = "JETON_GATEWAY_HOMESERVER", value_name = "URL")]
    pub homeserver: Option<String>,
    /// TCP address of the Prometheus metrics endpoint (GET /metrics); "off" disables it.
    /// [default: 127.0.0.1:9464]
    #[arg(long, env = "JETON_GATEWAY_METRICS_LISTEN", value_name = "ADDR|off")]
    pub metrics_listen: Option<String>,
    /// Largest CoAP block in bytes (16, 32, ..., 1024); responses larger than this go out with
    /// Block2, and clients may ask for smaller blocks. [default: 1024]
    #[arg(long, env = "JETON_GATEWAY_BLOCK_SIZE", value_name = "BYTES")]
    pub block_size: Option<usize>,
    /// How long a confirmable request waits for the homeserver before the gateway sends an
    /// empty ACK and later a separate CON response. [default: 1000]
    #[arg(long, env = "JETON_GATEWAY_PIGGYBACK_WAIT_MS", value_name = "MS")]
    pub piggyback_wait_ms: Option<u64>,
    /// Initial retransmission timeout of the gateway's CON messages (separate responses,
    /// notifications), randomised up to 1.5x and doubled per retry, 4 retries (RFC 7252).
    /// [default: 2000]
    #[arg(long, env = "JETON_GATEWAY_ACK_TIMEOUT_MS", value_name = "MS")]
    pub ack_timeout_ms: Option<u64>,
    /// Timeout of one homeserver request; on expiry the client gets 5.04. [default: 60000]
    #[arg(long, env = "JETON_GATEWAY_UPSTREAM_TIMEOUT_MS", value_name = "MS")]
    pub upstream_timeout_ms: Option<u64>,
    /// The `timeout` of the /sync long-polls the gateway makes for observers. [default: 30000]
    #[arg(long, env = "JETON_GATEWAY_OBSERVE_POLL_TIMEOUT_MS", value_name = "MS")]
    pub observe_poll_timeout_ms: Option<u64>,
    /// An observer with nothing new still gets a notification this often, so dead clients are
    /// found and NAT bindings stay open. [default: 1200]
    #[arg(
        long,
        env = "JETON_GATEWAY_OBSERVE_KEEPALIVE_SECS",
        value_name = "SECS"
    )]
    pub observe_keepalive_secs: Option<u64>,
    /// Observers across all peers; beyond it a registration is served as a plain GET.
    /// [default: 20000]
    #[arg(long, env = "JETON_GATEWAY_MAX_OBSERVERS", value_name = "N")]
    pub max_observers: Option<usize>,
    /// Observers per peer. [default: 4]
    #[arg(long, env = "JETON_GATEWAY_MAX_OBSERVERS_PER_PEER", value_name = "N")]
    pub max_observers_per_peer: Option<usize>,
    /// Plain peers (UDP source addresses that proved themselves) with state; a new one beyond
    /// it gets 5.03. Tokens on the link (OSCORE contexts) are bounded by the tokens file
    /// instead. [default: 50000]
    #[arg(long, env = "JETON_GATEWAY_MAX_PEERS", value_name = "N")]
    pub max_peers: Option<usize>,
    /// Plain peers with state per source prefix (IPv4 /24, IPv6 /48); a new one beyond it gets
    /// 5.03. [default: 1024]
    #[arg(long, env = "JETON_GATEWAY_MAX_PEERS_PER_PREFIX", value_name = "N")]
    pub max_peers_per_prefix: Option<usize>,
    /// Source prefixes whose addresses cannot be forged (loopback, a radio network behind a
    /// border router that drops spoofed sources), comma-separated, or "none". Their peers need
    /// not prove their address; every other address proves it with an RFC 9175 Echo round trip
    /// (or EDHOC) before the gateway keeps state for it or sends it more than three times what
    /// it sent. [default: none]
    #[arg(
        long,
        env = "JETON_GATEWAY_VALIDATED_PREFIXES",
        value_name = "PREFIXES"
    )]
    pub validated_prefixes: Option<String>,
    /// Homeserver requests in flight per peer; beyond it 5.03 with Max-Age 1. [default: 8]
    #[arg(long, env = "JETON_GATEWAY_MAX_IN_FLIGHT_PER_PEER", value_name = "N")]
    pub max_in_flight_per_peer: Option<usize>,
    /// Sustained requests per second per peer; beyond it 4.29 with Max-Age 1. [default: 20]
    #[arg(long, env = "JETON_GATEWAY_PEER_RATE", value_name = "PER_SEC")]
    pub peer_rate: Option<f64>,
    /// Requests a peer may send in a burst above the rate. [default: 50]
    #[arg(long, env = "JETON_GATEWAY_PEER_BURST", value_name = "N")]
    pub peer_burst: Option<u32>,
    /// Largest request body after Block1 assembly; beyond it 4.13 with Size1. [default: 262144]
    #[arg(long, env = "JETON_GATEWAY_MAX_BODY", value_name = "BYTES")]
    pub max_body: Option<usize>,
    /// Largest homeserver response relayed; beyond it 5.02. [default: 4194304]
    #[arg(long, env = "JETON_GATEWAY_MAX_RESPONSE_BODY", value_name = "BYTES")]
    pub max_response_body: Option<usize>,
    /// Incomplete Block1 uploads and stored Block2 bodies expire after this. [default: 60]
    #[arg(
        long,
        env = "JETON_GATEWAY_BLOCKWISE_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub blockwise_timeout_secs: Option<u64>,
    /// Exchanges remembered per peer for duplicate detection (each for EXCHANGE_LIFETIME,
    /// 247 s). [default: 32]
    #[arg(long, env = "JETON_GATEWAY_DEDUP_PER_PEER", value_name = "N")]
    pub dedup_per_peer: Option<usize>,
    /// Blockwise transfers held per peer (uploads being assembled plus bodies being fetched).
    /// [default: 2]
    #[arg(long, env = "JETON_GATEWAY_BLOCKWISE_PER_PEER", value_name = "N")]
    pub blockwise_per_peer: Option<usize>,
    /// Memory the gateway's state may hold: a fixed share per peer (4 KiB) and per observer
    /// (21 KiB, its upstream connection included), and the bytes of block-wise uploads and of
    /// bodies stored for Block2 (media included). When full, a new plain peer gets 5.03 with
    /// Max-Age 30, a Block1 block 5.03 with Max-Age 1, an Observe registration a plain answer,
    /// and a large answer is not stored (its later blocks are fetched again); tokens on the
    /// link are counted but never refused. Leave room beside it for the process itself.
    /// [default: 268435456 (256 MiB, for a 512 MiB machine)]
    #[arg(long, env = "JETON_GATEWAY_MEMORY_BUDGET", value_name = "BYTES")]
    pub memory_budget: Option<usize>,
    /// Largest media upload (after Block1 assembly) and media download relayed; a media upload
    /// beyond it gets 4.13 with Size1, a download 5.02. The media config a client reads
    /// (m.upload.size) is lowered to it. Each transfer in progress holds its file in memory, at
    /// most blockwise-per-peer of them per peer. [default: 16777216]
    #[arg(long, env = "JETON_GATEWAY_MAX_MEDIA_BODY", value_name = "BYTES")]
    pub max_media_body: Option<usize>,
    /// On SIGINT/SIGTERM, wait at most this long for in-flight requests. [default: 10]
    #[arg(long, env = "JETON_GATEWAY_SHUTDOWN_GRACE_SECS", value_name = "SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "jeton_gateway=debug". Logs never
    /// contain access tokens or bodies. [default: info]
    #[arg(long, env = "JETON_GATEWAY_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: "text" or "json". [default: text]
    #[arg(long, env = "JETON_GATEWAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Colours in the text log: "auto" colours it only when it goes to a terminal and
    /// NO_COLOR is unset or empty; "always" and "never" say so. [default: auto]
    #[arg(long, env = "JETON_GATEWAY_COLOR", value_name = "auto|always|never")]
    pub color: Option<ColorChoice>,
    /// The gateway's EDHOC identity: a TOML file with `private_key` and `credential` (hex).
    /// With --link-tokens it turns on the protected link (EDHOC + OSCORE, see README
    /// "Pairing"). Keep it private.
    #[arg(long, env = "JETON_GATEWAY_LINK_IDENTITY", value_name = "FILE")]
    pub link_identity: Option<PathBuf>,
    /// The tokens allowed to run EDHOC: a TOML file of `[[token]]` tables with `name` and
    /// `credential` (the token's CCS, hex). An unknown token is refused and logged. Read
    /// again on SIGHUP (`jeton pair` appends to it; delete a table to revoke a token).
    #[arg(long, env = "JETON_GATEWAY_LINK_TOKENS", value_name = "FILE")]
    pub link_tokens: Option<PathBuf>,
    /// Accept plain (unprotected) CoAP requests that carry the Matrix access token (option
    /// 256), as stock MSC3079 clients send them. The token then crosses the air in clear;
    /// a warning is logged at start when on. [default: false]
    #[arg(
        long,
        env = "JETON_GATEWAY_COMPAT_PLAIN_MSC3079",
        value_name = "true|false"
    )]
    pub compat_plain_msc3079: Option<bool>,
    /// Where the OSCORE contexts outlive a restart (an SQLite file, made if missing; its
    /// secrets sealed with a key from the identity), or "off" to keep them in RAM only.
    /// Only with the protected link. [default: next to --link-identity, its name with
    /// `.state.sqlite3` in place of `.toml`]
    #[arg(long, env = "JETON_GATEWAY_STATE", value_name = "FILE|off")]
    pub state: Option<String>,
    /// Keep the OSCORE contexts in this PostgreSQL database instead of the --state file,
    /// e.g. postgres://gateway:PASSWORD@db.example.org/jeton (make its tables first with
    /// `jeton-gateway migrate --database URL`). Only with the protected link.
    #[arg(
        long,
        global = true,
        env = "JETON_GATEWAY_DATABASE",
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// What to do instead of running the gateway.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,
}

/// What `jeton-gateway` can do besides running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Make or update the gateway's tables in the PostgreSQL database given by --database
    /// (or `database` in the --config file), then exit.
    Migrate,
}

impl Cli {
    /// The PostgreSQL database to migrate: the flag's, or the config file's.
    pub fn database_to_migrate(&self) -> Result<crate::store::DatabaseUrl, ConfigError> {
        let from_file = match &self.config {
            Some(path) => Config::read_file(path)?.database,
            None => None,
        };
        let url = self.database.clone().or(from_file).ok_or(ConfigError::Invalid(
            "database (migrate needs --database postgres://... or `database` in the --config file)",
        ))?;
        database_url(&url)
    }
}

fn database_url(url: &str) -> Result<crate::store::DatabaseUrl, ConfigError> {
    crate::store::DatabaseUrl::new(url).ok_or(ConfigError::Invalid(
        "database (a postgres:// or postgresql:// URL)",
    ))
}

/// Settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    Read(String),
    /// The config file is not valid TOML for these settings.
    Parse(String),
    /// No homeserver URL in any source.
    MissingHomeserver,
    /// A value is not valid (out of range, or not one of the accepted forms).
    Invalid(&'static str),
    /// The link's identity or token file is unusable.
    Link(String),
    /// A validated prefix is not one.
    Prefix(String),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Read(why) => write!(f, "the config file could not be read: {why}"),
            Self::Parse(why) => write!(f, "the config file is not valid: {why}"),
            Self::MissingHomeserver => {
                f.write_str("no homeserver URL was given (--homeserver, JETON_GATEWAY_HOMESERVER or `homeserver` in the config file)")
            }
            Self::Invalid(what) => write!(f, "the setting {what} is not valid"),
            Self::Link(why) => f.write_str(why),
            Self::Prefix(why) => write!(f, "the setting validated_prefixes is not valid: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// When the text log has colours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ColorChoice {
    /// Only on a terminal, and only if `NO_COLOR` is unset or empty (no-color.org).
    #[default]
    Auto,
    /// Always, even into files and pipes.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour output that goes to a terminal or not (`is_terminal`), with
    /// `no_color` the value of the `NO_COLOR` environment variable.
    pub fn colours(self, is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Homeserver base URL.
    pub homeserver: String,
    /// Metrics endpoint, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Transport limits.
    pub limits: Limits,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Colours in the text log.
    pub color: ColorChoice,
    /// EDHOC/OSCORE credentials; `None`: the protected link is off.
    pub link: Option<crate::link_credentials::LinkCredentials>,
    /// The authorised tokens file the credentials came from, read again on SIGHUP.
    pub link_tokens_file: Option<PathBuf>,
    /// Plain requests may carry the access token.
    pub compat_plain_msc3079: bool,
    /// Which source addresses count as proven without an Echo round trip.
    pub sources: Sources,
    /// The state file of the protected link's contexts; `None`: in RAM only, or in `database`.
    pub state: Option<PathBuf>,
    /// The PostgreSQL database of the protected link's contexts, in place of `state`.
    pub database: Option<crate::store::DatabaseUrl>,
}

impl Config {
    fn read_file(path: &std::path::Path) -> Result<Cli, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(format!("{}: {e}", path.display())))?;
        toml::from_str::<Cli>(&text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Merges flags/environment over the file over defaults.
    pub fn resolve(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => Self::read_file(path)?,
            None => Cli::default(),
        };
        let limits = merged_limits(&cli, &file);
        check_limits(&limits)?;
        let metrics_listen = metrics_listen(cli.metrics_listen.or(file.metrics_listen).as_deref())?;
        let sources = match cli.validated_prefixes.or(file.validated_prefixes) {
            Some(list) => Sources::parse(&list).map_err(|e| ConfigError::Prefix(e.to_string()))?,
            None => Sources::default(),
        };
        let log_format = match cli.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(ConfigError::Invalid("log_format (\"text\" or \"json\")")),
        };
        let link = LinkSettings::resolve(
            cli.link_identity.or(file.link_identity),
            cli.link_tokens.or(file.link_tokens),
            cli.database.or(file.database).as_deref(),
            cli.state.or(file.state).as_deref(),
        )?;
        Ok(Self {
            state: link.state,
            database: link.database,
            link: link.link,
            link_tokens_file: link.link_tokens_file,
            color: cli.color.or(file.color).unwrap_or_default(),
            compat_plain_msc3079: cli
                .compat_plain_msc3079
                .or(file.compat_plain_msc3079)
                .unwrap_or(false),
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5683))),
            homeserver: cli
                .homeserver
                .or(file.homeserver)
                .ok_or(ConfigError::MissingHomeserver)?,
            metrics_listen,
            limits,
            shutdown_grace: secs(
                cli.shutdown_grace_secs.or(file.shutdown_grace_secs),
                Duration::from_secs(10),
            ),
            log: cli.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
            log_format,
            sources,
        })
    }
}

/// The protected link's settings and where its contexts are kept, resolved together because
/// each is only valid in combination with the others.
struct LinkSettings {
    state: Option<PathBuf>,
    database: Option<crate::store::DatabaseUrl>,
    link: Option<crate::link_credentials::LinkCredentials>,
    link_tokens_file: Option<PathBuf>,
}

impl LinkSettings {
    /// Loads the link credentials and picks the context store: `--database` if given, else the
    /// state file (by default next to the identity). Refuses a store without a link, since it
    /// would keep nothing, and a link half configured.
    fn resolve(
        link_identity: Option<PathBuf>,
        link_tokens_file: Option<PathBuf>,
        database: Option<&str>,
        state: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let database = database.map(database_url).transpose()?;
        let state = match (state, &link_identity) {
            (Some("off"), _) | (None, None) => None,
            (None, Some(_)) if database.is_some() => None,
            (Some(_), _) if database.is_some() => {
                return Err(ConfigError::Invalid(
                    "state / database (the contexts go to one of them: give --state FILE or --database URL)",
                ));
            }
            (Some(path), _) => Some(PathBuf::from(path)),
            (None, Some(identity)) => Some(identity.with_extension("state.sqlite3")),
        };
        let link = match (link_identity, &link_tokens_file) {
            (Some(identity), Some(tokens)) => Some(
                crate::link_credentials::LinkCredentials::load(&identity, tokens)
                    .map_err(|e| ConfigError::Link(e.to_string()))?,
            ),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "link_identity / link_tokens (give both or neither)",
                ));
            }
        };
        if database.is_some() && link.is_none() {
            return Err(ConfigError::Invalid(
                "database (it keeps the protected link's contexts: give --link-identity and --link-tokens)",
            ));
        }
        if state.is_some() && link.is_none() {
            return Err(ConfigError::Invalid(
                "state (it keeps the protected link's contexts: give --link-identity and --link-tokens, or --state off)",
            ));
        }
        Ok(Self {
            state,
            database,
            link,
            link_tokens_file,
        })
    }
}

/// The metrics endpoint's address: the given one, none for "off", else the local default.
fn metrics_listen(value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    Ok(match value {
        Some("off") => None,
        Some(addr) => Some(
            addr.parse()
                .map_err(|_| ConfigError::Invalid("metrics_listen (an address or \"off\")"))?,
        ),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
    })
}

/// Each limit from the flag, else the file, else its default.
fn merged_limits(cli: &Cli, file: &Cli) -> Limits {
    let d = Limits::default();
    Limits {
        block_size: cli.block_size.or(file.block_size).unwrap_or(d.block_size),
        piggyback_wait: ms(
            cli.piggyback_wait_ms.or(file.piggyback_wait_ms),
            d.piggyback_wait,
        ),
        ack_timeout: ms(cli.ack_timeout_ms.or(file.ack_timeout_ms), d.ack_timeout),
        upstream_timeout: ms(
            cli.upstream_timeout_ms.or(file.upstream_timeout_ms),
            d.upstream_timeout,
        ),
        observe_poll_timeout: ms(
            cli.observe_poll_timeout_ms.or(file.observe_poll_timeout_ms),
            d.observe_poll_timeout,
        ),
        observe_keepalive: secs(
            cli.observe_keepalive_secs.or(file.observe_keepalive_secs),
            d.observe_keepalive,
        ),
        max_observers: cli
            .max_observers
            .or(file.max_observers)
            .unwrap_or(d.max_observers),
        max_observers_per_peer: cli
            .max_observers_per_peer
            .or(file.max_observers_per_peer)
            .unwrap_or(d.max_observers_per_peer),
        max_peers: cli.max_peers.or(file.max_peers).unwrap_or(d.max_peers),
        max_peers_per_prefix: cli
            .max_peers_per_prefix
            .or(file.max_peers_per_prefix)
            .unwrap_or(d.max_peers_per_prefix),
        max_in_flight_per_peer: cli
            .max_in_flight_per_peer
            .or(file.max_in_flight_per_peer)
            .unwrap_or(d.max_in_flight_per_peer),
        peer_rate: cli.peer_rate.or(file.peer_rate).unwrap_or(d.peer_rate),
        peer_burst: cli.peer_burst.or(file.peer_burst).unwrap_or(d.peer_burst),
        max_body: cli.max_body.or(file.max_body).unwrap_or(d.max_body),
        max_response_body: cli
            .max_response_body
            .or(file.max_response_body)
            .unwrap_or(d.max_response_body),
        blockwise_timeout: secs(
            cli.blockwise_timeout_secs.or(file.blockwise_timeout_secs),
            d.blockwise_timeout,
        ),
        dedup_per_peer: cli
            .dedup_per_peer
            .or(file.dedup_per_peer)
            .unwrap_or(d.dedup_per_peer),
        blockwise_per_peer: cli
            .blockwise_per_peer
            .or(file.blockwise_per_peer)
            .unwrap_or(d.blockwise_per_peer),
        memory_budget: cli
            .memory_budget
            .or(file.memory_budget)
            .unwrap_or(d.memory_budget),
        max_media_body: cli
            .max_media_body
            .or(file.max_media_body)
            .unwrap_or(d.max_media_body),
    }
}

/// Refuses limits the transport cannot work with.
fn check_limits(limits: &Limits) -> Result<(), ConfigError> {
    if limits.block_szx().is_none() {
        return Err(ConfigError::Invalid(
            "block_size (16, 32, 64, 128, 256, 512 or 1024)",
        ));
    }
    if limits.peer_rate.is_nan() || limits.peer_rate <= 0.0 || limits.peer_burst == 0 {
        return Err(ConfigError::Invalid(
            "peer_rate / peer_burst (must be positive)",
        ));
    }
    if limits.dedup_per_peer == 0
        || limits.max_in_flight_per_peer == 0
        || limits.blockwise_per_peer == 0
    {
        return Err(ConfigError::Invalid(
            "dedup_per_peer / max_in_flight_per_peer / blockwise_per_peer (must be at least 1)",
        ));
    }
    Ok(())
}

fn ms(value: Option<u64>, default: Duration) -> Duration {
    value.map_or(default, Duration::from_millis)
}

fn secs(value: Option<u64>, default: Duration) -> Duration {
    value.map_or(default, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("jeton-gateway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            "homeserver = \"http://file:8008\"\nmax_observers = 7\nblock_size = 256\nmax_media_body = 1048576\nmemory_budget = 8388608\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "jeton-gateway",
            "--config",
            path.to_str().unwrap(),
            "--block-size",
            "512",
        ])
        .unwrap();
        let config = Config::resolve(cli).unwrap();
        assert_eq!(config.homeserver, "http://file:8008");
        assert_eq!(config.limits.max_observers, 7);
        assert_eq!(config.limits.block_size, 512, "the flag wins over the file");
        assert_eq!(config.limits.max_media_body, 1024 * 1024);
        assert_eq!(config.limits.memory_budget, 8 * 1024 * 1024);
        assert_eq!(
            config.limits.dedup_per_peer,
            Limits::default().dedup_per_peer
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_settings_are_refused_with_a_sentence() {
        let cli = Cli::try_parse_from([
            "jeton-gateway",
            "--homeserver",
            "http://h",
            "--block-size",
            "1000",
        ])
        .unwrap();
        let err = Config::resolve(cli).unwrap_err();
        assert!(err.to_string().contains("block_size"));
        let cli = Cli::try_parse_from(["jeton-gateway"]).unwrap();
        assert_eq!(
            Config::resolve(cli).unwrap_err(),
            ConfigError::MissingHomeserver
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<Cli>("max_obsevers = 3").is_err());
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        let set = Some(std::ffi::OsStr::new("1"));
        let empty = Some(std::ffi::OsStr::new(""));
        assert!(ColorChoice::Auto.colours(true, None));
        assert!(ColorChoice::Auto.colours(true, empty));
        assert!(!ColorChoice::Auto.colours(true, set));
        assert!(!ColorChoice::Auto.colours(false, None));
        assert!(ColorChoice::Always.colours(false, set));
        assert!(!ColorChoice::Never.colours(true, None));
    }

    #[test]
    fn the_state_file_sits_next_to_the_identity_unless_told_otherwise() {
        let dir = std::env::temp_dir().join(format!("jeton-gateway-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gateway = jeton_link::Identity::generate([2; 32], b"\x0b", "gateway").unwrap();
        let identity = dir.join("gateway-identity.toml");
        std::fs::write(
            &identity,
            format!(
                "private_key = \"{}\"\ncredential = \"{}\"\n",
                hex::encode(gateway.private_key()),
                hex::encode(gateway.credential().as_bytes())
            ),
        )
        .unwrap();
        let tokens = dir.join("gateway-tokens.toml");
        std::fs::write(&tokens, "").unwrap();
        let resolve = |extra: &[&str]| {
            let mut args = vec!["jeton-gateway", "--homeserver", "http://hs"];
            args.extend_from_slice(extra);
            Config::resolve(Cli::try_parse_from(args).unwrap())
        };
        let state = |extra: &[&str]| resolve(extra).unwrap().state;
        let (identity, tokens) = (identity.to_str().unwrap(), tokens.to_str().unwrap());
        let linked = ["--link-identity", identity, "--link-tokens", tokens];
        assert_eq!(
            state(&linked),
            Some(dir.join("gateway-identity.state.sqlite3"))
        );
        assert_eq!(state(&[&linked[..], &["--state", "off"]].concat()), None);
        assert_eq!(
            state(&[&linked[..], &["--state", "/var/lib/g.db"]].concat()),
            Some(PathBuf::from("/var/lib/g.db"))
        );
        let error = resolve(&["--state", "/var/lib/g.db"]).unwrap_err();
        assert!(error.to_string().contains("--link-identity"), "{error}");
        assert_eq!(state(&["--state", "off"]), None);

        let database = "postgres://gateway:pw@db/jeton";
        let with_database = [&linked[..], &["--database", database]].concat();
        let config = resolve(&with_database).unwrap();
        assert_eq!(
            (config.state, config.database),
            (None, crate::store::DatabaseUrl::new(database))
        );
        let error =
            resolve(&[&with_database[..], &["--state", "/var/lib/g.db"]].concat()).unwrap_err();
        assert!(
            error.to_string().contains("--state FILE or --database URL"),
            "{error}"
        );
        let error = resolve(&["--database", "mysql://db"]).unwrap_err();
        assert!(error.to_string().contains("postgres://"), "{error}");
        assert!(
            resolve(&["--database", database]).is_err(),
            "a database needs the link"
        );
        let cli =
            Cli::try_parse_from(["jeton-gateway", "migrate", "--database", database]).unwrap();
        assert_eq!(cli.command, Some(Command::Migrate));
        assert!(!format!("{:?}", cli.database_to_migrate().unwrap()).contains("pw"));
        let file = dir.join("gateway.toml");
        std::fs::write(&file, format!("database = \"{database}\"\n")).unwrap();
        let file = file.to_str().unwrap();
        let cli = Cli::try_parse_from(["jeton-gateway", "migrate", "--config", file]).unwrap();
        assert_eq!(
            cli.database_to_migrate().unwrap(),
            crate::store::DatabaseUrl::new(database).unwrap()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
