//! The knobs that bound the gateway's per-peer transport state and its timing. `config.rs`
//! fills them from flags, environment and the TOML file; the core reads them.

use std::time::Duration;

use crate::profile::{BlockValue, szx_for_size};

/// Bounds and timings of the transport core. See `jeton-gateway --help` for each one.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest block the gateway sends or accepts (16..=1024, a power of two).
    pub block_size: usize,
    /// How long a CON request waits for the homeserver before the gateway sends an empty ACK
    /// and later a separate CON response.
    pub piggyback_wait: Duration,
    /// Initial retransmission timeout of the gateway's own CON messages (RFC 7252 ACK_TIMEOUT;
    /// the actual one is randomised up to 1.5 times this).
    pub ack_timeout: Duration,
    /// Timeout of one upstream HTTP request.
    pub upstream_timeout: Duration,
    /// `timeout` the gateway asks for when it long-polls `/sync` for an observer.
    pub observe_poll_timeout: Duration,
    /// An observer with nothing new still gets a notification this often (proves liveness).
    /// The default keeps an idle token within 256 B an hour on the protected link (`cargo bench
    /// --bench sync_bytes`); a token's silence interval must be longer.
    pub observe_keepalive: Duration,
    /// Observers across all peers.
    pub max_observers: usize,
    /// Observers per peer.
    pub max_observers_per_peer: usize,
    /// Plain peers (proven source addresses) with state.
    pub max_peers: usize,
    /// Plain peers with state per source prefix.
    pub max_peers_per_prefix: usize,
    /// Upstream requests in flight per peer.
    pub max_in_flight_per_peer: usize,
    /// Sustained requests per second per peer (token bucket rate).
    pub peer_rate: f64,
    /// Requests a peer may send in a burst (token bucket size).
    pub peer_burst: u32,
    /// Largest request body (after Block1 assembly).
    pub max_body: usize,
    /// Largest homeserver response the gateway relays.
    pub max_response_body: usize,
    /// An incomplete blockwise transfer or a stored Block2 body expires after this.
    pub blockwise_timeout: Duration,
    /// Remembered exchanges (duplicate detection) per peer.
    pub dedup_per_peer: usize,
    /// Blockwise transfers (Block1 assemblies plus stored Block2 bodies) per peer.
    pub blockwise_per_peer: usize,
    /// Bytes that peers, observers and block-wise transfers hold together (see
    /// `transport/budget.rs` for what each counts); beyond it new state is refused.
    pub memory_budget: usize,
    /// Largest media upload (after Block1 assembly) and media download the gateway relays.
    pub max_media_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            block_size: 1024,
            piggyback_wait: Duration::from_millis(1000),
            ack_timeout: crate::message::ACK_TIMEOUT,
            upstream_timeout: Duration::from_secs(60),
            observe_poll_timeout: Duration::from_secs(30),
            observe_keepalive: Duration::from_secs(1200),
            max_observers: 20_000,
            max_observers_per_peer: 4,
            max_peers: 50_000,
            max_peers_per_prefix: 1024,
            max_in_flight_per_peer: 8,
            peer_rate: 20.0,
            peer_burst: 50,
            max_body: 256 * 1024,
            max_response_body: 4 * 1024 * 1024,
            blockwise_timeout: Duration::from_secs(60),
            dedup_per_peer: 32,
            blockwise_per_peer: 2,
            // Fits a 512 MiB VM with the process's own RSS beside it.
            memory_budget: 256 * 1024 * 1024,
            max_media_body: 16 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The size exponent (RFC 7959) of `block_size`; `None` unless it is a power of two from 16
    /// to 1024.
    pub fn block_szx(&self) -> Option<u8> {
        let szx = szx_for_size(self.block_size);
        let block = BlockValue {
            num: 0,
            more: false,
            szx,
        };
        (block.size() == self.block_size).then_some(szx)
    }
}
