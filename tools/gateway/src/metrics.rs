//! Prometheus metrics: the families the gateway exports and the registry they live in. The
//! HTTP endpoint that serves them is in `server.rs`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `jeton_gateway_requests`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The profile's path template (identifiers as `{roomId}` and the like), `other` for a
    /// path outside the profile's table, `-` for a request answered before its path was read.
    pub route: &'static str,
    /// CoAP response code, "c.dd".
    pub code: String,
}

/// Labels of `jeton_gateway_blockwise_transfers`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockLabels {
    /// "block1" or "block2".
    pub kind: &'static str,
}

/// Labels of `jeton_gateway_link_refusals`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why the link refused a datagram, one of [`LinkRefusal`]'s names.
    pub reason: &'static str,
}

/// Why the link (EDHOC/OSCORE) refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkRefusal {
    /// Every handshake slot (or its source prefix's share) was taken.
    HandshakesBusy,
    /// An EDHOC message did not verify or named no open handshake.
    EdhocFailed,
    /// message_3 came from a token the tokens file does not list.
    UnknownToken,
    /// A protected request named no context the gateway holds.
    UnknownContext,
    /// A protected request the context had already taken.
    Replay,
    /// A protected request that did not decrypt.
    DecryptionFailed,
    /// A plain request carried an access token (compat mode off).
    PlainAccessToken,
}

impl LinkRefusal {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::HandshakesBusy => "handshakes_busy",
            Self::EdhocFailed => "edhoc_failed",
            Self::UnknownToken => "unknown_token",
            Self::UnknownContext => "unknown_context",
            Self::Replay => "replay",
            Self::DecryptionFailed => "decryption_failed",
            Self::PlainAccessToken => "plain_access_token",
        }
    }
}

/// Every metric the gateway updates. Cloning shares the underlying values.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests answered, by route and code.
    pub requests: Family<RequestLabels, Counter>,
    /// UDP payload bytes received.
    pub coap_bytes_in: Counter,
    /// UDP payload bytes sent.
    pub coap_bytes_out: Counter,
    /// HTTP body bytes sent to the homeserver.
    pub http_bytes_out: Counter,
    /// HTTP body bytes received from the homeserver.
    pub http_bytes_in: Counter,
    /// Upstream latency of client requests, seconds.
    pub upstream_latency: Histogram,
    /// Observers registered now.
    pub observers: Gauge,
    /// Observe notifications sent.
    pub notifications: Counter,
    /// Retransmitted requests answered from the duplicate cache.
    pub duplicates: Counter,
    /// CON messages the gateway had to retransmit.
    pub retransmissions: Counter,
    /// Blockwise transfers started.
    pub blockwise: Family<BlockLabels, Counter>,
    /// Datagrams that were not valid CoAP.
    pub malformed: Counter,
    /// 4.01 Echo challenges sent to addresses that had not proven themselves.
    pub echo_challenges: Counter,
    /// EDHOC handshakes completed.
    pub handshakes: Counter,
    /// Datagrams the link refused, by reason.
    pub link_refusals: Family<RefusalLabels, Counter>,
    /// OSCORE contexts held.
    pub contexts: Gauge,
    /// 1 while the gateway takes requests, 0 once it drains.
    pub ready: Gauge,
    /// Parts of sync answers cut to a client's Response-Capacity.
    pub sync_parts: Counter,
    /// Events replaced by a stub, larger than a client's Response-Capacity on their own.
    pub sync_stubs: Counter,
    /// Observer long-polls tried again after the homeserver failed.
    pub poll_retries: Counter,
    /// Bytes counted against the memory budget now.
    pub memory_held: Gauge,
    /// New state refused (or an answer not stored) because the memory budget was full.
    pub memory_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            coap_bytes_in: Counter::default(),
            coap_bytes_out: Counter::default(),
            http_bytes_out: Counter::default(),
            http_bytes_in: Counter::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            observers: Gauge::default(),
            notifications: Counter::default(),
            duplicates: Counter::default(),
            retransmissions: Counter::default(),
            blockwise: Family::default(),
            malformed: Counter::default(),
            echo_challenges: Counter::default(),
            handshakes: Counter::default(),
            link_refusals: Family::default(),
            contexts: Gauge::default(),
            ready: Gauge::default(),
            sync_parts: Counter::default(),
            sync_stubs: Counter::default(),
            poll_retries: Counter::default(),
            memory_held: Gauge::default(),
            memory_refusals: Counter::default(),
        }
    }
}

impl Metrics {
    /// A registry holding every metric, prefixed `jeton_gateway_`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("jeton_gateway");
        self.register_traffic(&mut r);
        self.register_exchanges(&mut r);
        self.register_link(&mut r);
        r.register(
            "ready",
            "1 while the gateway takes requests, 0 once it drains",
            self.ready.clone(),
        );
        self.register_bounds(&mut r);
        r
    }

    /// Bytes and requests through the gateway, each way, and the homeserver's latency.
    fn register_traffic(&self, r: &mut Registry) {
        r.register(
            "requests",
            "CoAP requests answered, by route and response code",
            self.requests.clone(),
        );
        r.register(
            "coap_received_bytes",
            "UDP payload bytes received from peers",
            self.coap_bytes_in.clone(),
        );
        r.register(
            "coap_sent_bytes",
            "UDP payload bytes sent to peers",
            self.coap_bytes_out.clone(),
        );
        r.register(
            "http_sent_bytes",
            "HTTP body bytes sent to the homeserver",
            self.http_bytes_out.clone(),
        );
        r.register(
            "http_received_bytes",
            "HTTP body bytes received from the homeserver",
            self.http_bytes_in.clone(),
        );
        r.register(
            "upstream_latency_seconds",
            "Homeserver latency of forwarded client requests",
            self.upstream_latency.clone(),
        );
    }

    /// The CoAP exchanges: observers, duplicates, retransmissions, block-wise transfers and what was refused on the way in.
    fn register_exchanges(&self, r: &mut Registry) {
        r.register(
            "observers",
            "Active /sync observers",
            self.observers.clone(),
        );
        r.register(
            "notifications",
            "Observe notifications sent",
            self.notifications.clone(),
        );
        r.register(
            "duplicates",
            "Duplicate requests answered from the exchange cache",
            self.duplicates.clone(),
        );
        r.register(
            "retransmissions",
            "CON messages retransmitted by the gateway",
            self.retransmissions.clone(),
        );
        r.register(
            "blockwise_transfers",
            "Blockwise transfers started, by kind",
            self.blockwise.clone(),
        );
        r.register(
            "malformed_datagrams",
            "Datagrams that were not valid CoAP",
            self.malformed.clone(),
        );
        r.register(
            "echo_challenges",
            "4.01 Echo challenges sent to addresses that had not proven they receive",
            self.echo_challenges.clone(),
        );
    }

    /// The EDHOC/OSCORE link: handshakes, refusals, contexts held.
    fn register_link(&self, r: &mut Registry) {
        r.register(
            "edhoc_handshakes",
            "EDHOC handshakes completed (an OSCORE context established)",
            self.handshakes.clone(),
        );
        r.register(
            "link_refusals",
            "Datagrams the EDHOC/OSCORE link refused, by reason",
            self.link_refusals.clone(),
        );
        r.register(
            "oscore_contexts",
            "OSCORE contexts held (paired tokens linked)",
            self.contexts.clone(),
        );
    }

    /// What the gateway cut, retried or refused to stay within a client's capacity and its own memory budget.
    fn register_bounds(&self, r: &mut Registry) {
        r.register(
            "sync_parts",
            "Parts of sync answers cut to a client's Response-Capacity (option 258)",
            self.sync_parts.clone(),
        );
        r.register(
            "sync_stubs",
            "Events sent as a stub, larger than a client's Response-Capacity on their own",
            self.sync_stubs.clone(),
        );
        r.register(
            "poll_retries",
            "Observer long-polls tried again after the homeserver failed",
            self.poll_retries.clone(),
        );
        r.register(
            "memory_held_bytes",
            "Bytes counted against --memory-budget: peers, observers, block-wise transfers",
            self.memory_held.clone(),
        );
        r.register(
            "memory_refusals",
            "Peers, Block1 blocks, observers refused and answers not stored for a full memory budget",
            self.memory_refusals.clone(),
        );
    }

    /// Counts a datagram the link refused.
    pub fn link_refused(&self, why: LinkRefusal) {
        self.link_refusals
            .get_or_create(&RefusalLabels { reason: why.name() })
            .inc();
    }

    /// The text exposition of `registry`.
    pub fn render(registry: &Registry) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, registry);
        out
    }
}
