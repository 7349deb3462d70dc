//! `jeton-gateway`: a CoAP/UDP server that speaks the compact Matrix profile of
//! [`jeton-proto`](../jeton_proto/index.html) (a superset of MSC3079) to tokens and plain
//! HTTP+JSON to any Matrix homeserver.
//!
//! # Usage
//!
//! ```text
//! jeton-gateway --homeserver http://127.0.0.1:8008 --listen [::]:5683 --metrics-listen 127.0.0.1:9464
//! ```
//!
//! `jeton-gateway --help` explains every setting; settings come from flags, then
//! `JETON_GATEWAY_*` environment variables, then the TOML file given by `--config`, then
//! built-in defaults.
//!
//! # Design
//!
//! [`transport::Transport`] is a sans-I/O state machine holding all per-peer state (the only
//! state the gateway has: it keeps no Matrix state); [`server`] moves datagrams and HTTP
//! requests for it. See [`limits::Limits`] for what bounds that state. Between the socket and
//! the transport, [`link::Link`] runs EDHOC and OSCORE with paired tokens
//! ([`link_credentials`] reads who they are).
//!
//! # Features
//!
//! None.
//!
//! # Specification
//!
//! RFC 7252 (CoAP), RFC 7959 (blockwise), RFC 7641 (observe), MSC3079 (low-bandwidth CS API),
//! RFC 9528 (EDHOC), RFC 8613 (OSCORE), RFC 9668 (EDHOC + OSCORE request).

pub mod config;
pub mod echo;
pub mod limits;
pub mod link;
pub mod link_credentials;
pub mod media;
pub mod message;
pub mod metrics;
pub mod profile;
pub mod server;
pub mod source;
pub mod sticky;
pub mod store;
pub mod translate;
pub mod transport;
pub mod upstream;
