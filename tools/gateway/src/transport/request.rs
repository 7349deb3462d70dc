//! The request pipeline: a CoAP request read in short steps, each either passing what it read
//! on or answering at once (`Err` is the answer, in the encoding negotiated so far).
//!
//! 1. Peer state (`peer.rs`): a plain peer's address must be proven first (an Echo round
//!    trip), or the request gets a 4.01 with an Echo value and nothing is kept.
//! 2. The peer's rate (`peer.rs`), duplicates included.
//! 3. Duplicate detection (`exchanges.rs`).
//! 4. Negotiation: Content-Format, Accept and option 257 set the encoding.
//! 5. Options: no proxying, no unknown critical option, an Accept the gateway serves.
//! 6. Method, then the sticky access token (`peer.rs`).
//! 7. Path: Uri-Path and Uri-Query, the sticky room handles, the short-path table; a media
//!    upload's type and limit.
//! 8. Blocks: Observe, Block1, Block2; a later Block2 block of a stored body is served here
//!    (`blockwise.rs`); a sync's own steps (`sync.rs`): its Response-Capacity, the end of the
//!    observation of its path without Observe 0, the answers the gateway gives itself.
//! 9. Body: Block1 assembly (`blockwise.rs`), CBOR to JSON, the sticky Megolm sender fields.
//! 10. Admission (`peer.rs`: draining, requests in flight), then forwarding (`forward.rs`).

use super::PeerId;
use std::sync::Arc;
use std::time::Instant;

use coap_lite::{CoapOption, MessageType, Packet, RequestType};

use super::blockwise::Block1Step;
use super::reply::{Reply, bad, internal, refuse, too_large};
use super::{Action, Transport};
use crate::media::{self, MediaRoute};
use crate::message::{self, code};
use crate::profile::option::{self, ACCEPT, CBOR_TABLE_VERSION, CONTENT_FORMAT, OBSERVE, SIZE1};
use crate::profile::{self, BlockValue, CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON, TableVersion};
use crate::sticky::STICKY_STATE_MISSING;
use crate::translate::{self, AccessToken, Encoding, ResponseContent};

/// The request being answered: where the answer goes and how it is encoded.
pub(super) struct Incoming {
    pub(super) peer: PeerId,
    pub(super) mid: u16,
    pub(super) token: Vec<u8>,
    pub(super) confirmable: bool,
    pub(super) encoding: Encoding,
    /// The body limit that applies to this request (the Size1 of a 4.13): `max_body`, or
    /// `max_media_body` for a media upload.
    pub(super) body_limit: usize,
}

/// What a request asks the homeserver for.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) method: http::Method,
    /// The full, percent-encoded HTTP path.
    pub(super) path: String,
    /// The query parameters, `name=value` as the client sent them.
    pub(super) query: Vec<String>,
    pub(super) media: Option<MediaRoute>,
    /// A media upload's HTTP media type.
    pub(super) content_type: Option<String>,
    /// The access token the request goes upstream with (the peer's sticky one).
    pub(super) access_token: Option<AccessToken>,
    /// The path's metric label (no identifiers).
    pub(super) route: &'static str,
    /// Method, path, query and encoding: what identifies a blockwise transfer of this request.
    pub(super) key: String,
    pub(super) is_sync: bool,
    /// A sync's Response-Capacity (option 258).
    pub(super) capacity: Option<usize>,
}

/// The request's Observe and block options.
#[derive(Debug)]
pub(super) struct Blocks {
    pub(super) observe: Option<u64>,
    pub(super) block1: Option<BlockValue>,
    /// The Block2 block asked for (0 without Block2).
    pub(super) block2_num: u32,
    /// The block size of the answer: the client's, at most the gateway's.
    pub(super) szx: u8,
}

/// A request body once read.
enum RequestBody {
    /// Block1 blocks are still arriving.
    Incomplete,
    /// The JSON to forward, `None` for no body.
    Complete(Option<Vec<u8>>),
    /// The last block of an upload already forwarded, sent again: the answer it got.
    Answered(Arc<ResponseContent>),
}

impl Transport {
    /// Steps 1 to 3: a request of `size` bytes from `addr`: its peer state, its rate and
    /// duplicate detection.
    pub(super) fn on_request(
        &mut self,
        addr: PeerId,
        packet: Packet,
        method: RequestType,
        size: usize,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if !self.admit_peer(addr, &packet, size, now, actions) {
            return;
        }
        let mid = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let mut incoming = Incoming {
            peer: addr,
            mid,
            token: packet.get_token().to_vec(),
            confirmable,
            encoding: Encoding {
                cbor: false,
                version: TableVersion::V1,
            },
            body_limit: self.limits.max_body,
        };
        if !self.within_rate(&incoming, now, actions)
            || !self.receive(addr, mid, confirmable, now, actions)
        {
            return;
        }
        if let Err(content) = self.handle_request(&mut incoming, packet, method, now, actions) {
            self.finish(&incoming, "-", Reply::plain(&content), now, actions);
        }
    }

    /// Steps 4 to 10; `Err` is an immediate answer.
    fn handle_request(
        &mut self,
        incoming: &mut Incoming,
        packet: Packet,
        method: RequestType,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), ResponseContent> {
        // Encoding first, so even errors come back the way the client reads them.
        let (content_format, accept) = negotiate(incoming, &packet)?;
        check_options(incoming, &packet, accept)?;
        let method = http_method(incoming, method)?;
        let access_token = self.take_access_token(incoming, &packet)?;
        let mut target =
            self.read_target(incoming, &packet, method, access_token, content_format)?;
        let blocks = read_blocks(incoming, &packet, self.own_szx)?;
        // A later block of a body the gateway already holds (a large response or a notification).
        if blocks.block2_num > 0
            && self.serve_stored_block(incoming, &target, &blocks, now, actions)?
        {
            return Ok(());
        }
        // Capacity, deregistration, positions (`sync.rs`).
        if target.is_sync
            && self.sync_request(incoming, &packet, &mut target, &blocks, now, actions)?
        {
            return Ok(());
        }
        // A media upload is the file's bytes: never transcoded, whatever its format.
        let body_format = content_format.filter(|_| target.media != Some(MediaRoute::Upload));
        let body = self.request_body(
            incoming,
            &packet,
            blocks.block1,
            &target.key,
            body_format,
            now,
        )?;
        let body = match body {
            RequestBody::Complete(body) => body,
            RequestBody::Incomplete => {
                self.continue_upload(incoming, &blocks, target.route, now, actions);
                return Ok(());
            }
            RequestBody::Answered(answer) => {
                let reply = Reply {
                    block1_echo: blocks.block1,
                    ..Reply::plain(&answer)
                };
                self.finish(incoming, target.route, reply, now, actions);
                return Ok(());
            }
        };
        let body = self.with_sticky_sender(incoming, &target.path, body)?;
        self.admit(incoming)?;
        self.forward_client_request(incoming, target, &blocks, body, now, actions);
        Ok(())
    }

    /// Step 7: the path and query the request names, with the sticky room handles resolved,
    /// and what a media upload needs.
    fn read_target(
        &mut self,
        incoming: &mut Incoming,
        packet: &Packet,
        method: http::Method,
        access_token: Option<AccessToken>,
        content_format: Option<u64>,
    ) -> Result<Target, ResponseContent> {
        let (path, mut query) = self.read_path(incoming, packet)?;
        let media = MediaRoute::of_path(&path);
        let mut content_type = None;
        if media == Some(MediaRoute::Upload) {
            incoming.body_limit = self.limits.max_media_body;
            content_type = Some(upload_content_type(incoming, content_format, &query)?);
            query.retain(|q| !is_param(q, media::CONTENT_TYPE_QUERY));
        }
        let route = translate::route_label(&path);
        let key = format!(
            "{method} {path}?{} a={} v={}",
            query.join("&"),
            incoming.encoding.cbor,
            incoming.encoding.version as u8
        );
        let is_sync = method == http::Method::GET
            && path.starts_with("/_matrix/client/")
            && path.ends_with("/sync");
        Ok(Target {
            method,
            path,
            query,
            media,
            content_type,
            access_token,
            route,
            key,
            is_sync,
            capacity: None,
        })
    }

    /// The full HTTP path of the Uri-Path options (sticky room handles resolved, short paths
    /// expanded) and the Uri-Query options.
    fn read_path(
        &mut self,
        incoming: &Incoming,
        packet: &Packet,
    ) -> Result<(String, Vec<String>), ResponseContent> {
        let mut segments = Vec::new();
        for s in packet.get_option(CoapOption::UriPath).into_iter().flatten() {
            let segment = std::str::from_utf8(s)
                .map_err(|_| bad(incoming, "A Uri-Path segment is not UTF-8."))?;
            segments.push(segment);
        }
        let mut query: Vec<String> = Vec::new();
        for q in packet
            .get_option(CoapOption::UriQuery)
            .into_iter()
            .flatten()
        {
            let pair = std::str::from_utf8(q)
                .map_err(|_| bad(incoming, "A Uri-Query option is not UTF-8."))?;
            query.push(pair.to_owned());
        }
        let version = incoming.encoding.version;
        let peer = self
            .peers
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        let segments = peer
            .sticky
            .resolve_rooms(&segments, version)
            .map_err(|e| refuse(incoming, STICKY_STATE_MISSING, "M_UNKNOWN", &e.to_string()))?;
        let path = profile::expand_segments(segments.iter().map(|s| &**s), version)
            .map_err(|e| refuse(incoming, code::NOT_FOUND, "M_UNRECOGNIZED", &e.to_string()))?;
        Ok((path, query))
    }

    /// Step 9: the JSON body to forward, once its last Block1 block arrived.
    fn request_body(
        &mut self,
        incoming: &Incoming,
        packet: &Packet,
        block1: Option<BlockValue>,
        key: &str,
        content_format: Option<u64>,
        now: Instant,
    ) -> Result<RequestBody, ResponseContent> {
        let limit = incoming.body_limit;
        let announced = uint(packet, SIZE1).ok().flatten();
        if announced.is_some_and(|n| n > limit as u64) || packet.payload.len() > limit {
            return Err(too_large(incoming));
        }
        let raw = match block1 {
            None => packet.payload.clone(),
            Some(block) => match self.take_block1(incoming, block, &packet.payload, key, now)? {
                Block1Step::Complete(body) => body,
                Block1Step::More => return Ok(RequestBody::Incomplete),
                Block1Step::Answered(answer) => return Ok(RequestBody::Answered(answer)),
            },
        };
        if raw.is_empty() {
            return Ok(RequestBody::Complete(None));
        }
        transcode_body(incoming, raw, content_format).map(|json| RequestBody::Complete(Some(json)))
    }
}

/// Step 4: Content-Format, Accept and option 257 into the request's encoding. Returns the
/// body's Content-Format (CBOR for a v2 body without one) and the Accept value.
fn negotiate(
    incoming: &mut Incoming,
    packet: &Packet,
) -> Result<(Option<u64>, Option<u64>), ResponseContent> {
    let content_format = uint(packet, CONTENT_FORMAT)
        .map_err(|_| bad(incoming, "The Content-Format option is not a uint."))?;
    let accept =
        uint(packet, ACCEPT).map_err(|_| bad(incoming, "The Accept option is not a uint."))?;
    let version_value = uint(packet, CBOR_TABLE_VERSION)
        .map_err(|_| bad(incoming, "Option 257 (table version) is not a uint."))?;
    incoming.encoding.cbor = is_cbor(content_format, accept);
    match version_value.map(TableVersion::from_option) {
        None => {}
        Some(Some(v)) => incoming.encoding.version = v,
        Some(None) => {
            return Err(bad(
                incoming,
                "Option 257 names a CBOR table version this gateway does not know.",
            ));
        }
    }
    // v2: a body without Content-Format is CBOR (PROFILE.md section 1), and so is the answer.
    let v2_cbor_body = incoming.encoding.version == TableVersion::V2
        && content_format.is_none()
        && !packet.payload.is_empty();
    let content_format = if v2_cbor_body {
        Some(u64::from(CONTENT_FORMAT_CBOR))
    } else {
        content_format
    };
    incoming.encoding.cbor = is_cbor(content_format, accept);
    Ok((content_format, accept))
}

/// Whether the answer is CBOR: the body is, or the client accepts it.
fn is_cbor(content_format: Option<u64>, accept: Option<u64>) -> bool {
    content_format == Some(u64::from(CONTENT_FORMAT_CBOR))
        || accept == Some(u64::from(CONTENT_FORMAT_CBOR))
}

/// Step 5: options the gateway refuses.
fn check_options(
    incoming: &Incoming,
    packet: &Packet,
    accept: Option<u64>,
) -> Result<(), ResponseContent> {
    // Proxy-Uri / Proxy-Scheme: this is a gateway to one homeserver, not a forward proxy.
    if packet.get_option(CoapOption::ProxyUri).is_some()
        || packet.get_option(CoapOption::ProxyScheme).is_some()
    {
        return Err(refuse(
            incoming,
            code::PROXYING_NOT_SUPPORTED,
            "M_UNRECOGNIZED",
            "The gateway is not a forward proxy.",
        ));
    }
    if let Some((number, _)) = packet
        .options()
        .find(|(n, _)| option::is_critical(**n) && !message::is_known_option(**n))
    {
        let msg = format!("Critical option {number} is not supported.");
        return Err(refuse(incoming, code::BAD_OPTION, "M_UNRECOGNIZED", &msg));
    }
    if let Some(a) = accept
        && a != u64::from(CONTENT_FORMAT_CBOR)
        && a != u64::from(CONTENT_FORMAT_JSON)
    {
        return Err(refuse(
            incoming,
            code::NOT_ACCEPTABLE,
            "M_UNRECOGNIZED",
            "Only application/cbor (60) and application/json (50) are served.",
        ));
    }
    Ok(())
}

/// Step 6: the HTTP method of the CoAP one.
fn http_method(incoming: &Incoming, method: RequestType) -> Result<http::Method, ResponseContent> {
    match method {
        RequestType::Get => Ok(http::Method::GET),
        RequestType::Post => Ok(http::Method::POST),
        RequestType::Put => Ok(http::Method::PUT),
        RequestType::Delete => Ok(http::Method::DELETE),
        _ => Err(refuse(
            incoming,
            code::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Only GET, POST, PUT and DELETE are forwarded.",
        )),
    }
}

/// A media upload's HTTP type: the `content_type` query, else the Content-Format's type
/// (no Content-Format: octet-stream). A Content-Format the gateway has no type for is refused.
fn upload_content_type(
    incoming: &Incoming,
    content_format: Option<u64>,
    query: &[String],
) -> Result<String, ResponseContent> {
    let named = query
        .iter()
        .find_map(|q| q.strip_prefix(media::CONTENT_TYPE_QUERY)?.strip_prefix('='));
    let of_format = match content_format {
        None => Some(media::OCTET_STREAM),
        Some(cf) => u16::try_from(cf).ok(),
    }
    .and_then(media::media_type);
    named.or(of_format).map(str::to_owned).ok_or_else(|| {
        refuse(
            incoming,
            code::UNSUPPORTED_CONTENT_FORMAT,
            "M_UNKNOWN",
            "The gateway knows no media type for this Content-Format; name it in the content_type query.",
        )
    })
}

/// Step 8: Observe, Block2 and Block1, and the block size of the answer.
fn read_blocks(
    incoming: &Incoming,
    packet: &Packet,
    own_szx: u8,
) -> Result<Blocks, ResponseContent> {
    let observe =
        uint(packet, OBSERVE).map_err(|_| bad(incoming, "The Observe option is not a uint."))?;
    let block = |option: CoapOption, what: &str| match packet.get_first_option(option) {
        Some(v) => BlockValue::from_option(v)
            .map(Some)
            .ok_or_else(|| bad(incoming, what)),
        None => Ok(None),
    };
    let block2 = block(CoapOption::Block2, "The Block2 option is malformed.")?;
    let block1 = block(CoapOption::Block1, "The Block1 option is malformed.")?;
    Ok(Blocks {
        observe,
        block1,
        block2_num: block2.map_or(0, |b| b.num),
        szx: block2.map_or(own_szx, |b| b.szx.min(own_szx)),
    })
}

/// The body as JSON: CBOR transcoded, JSON (or no Content-Format) as it is.
fn transcode_body(
    incoming: &Incoming,
    raw: Vec<u8>,
    content_format: Option<u64>,
) -> Result<Vec<u8>, ResponseContent> {
    match content_format {
        Some(cf) if cf == u64::from(CONTENT_FORMAT_CBOR) => {
            let value = profile::cbor_to_json(&raw, incoming.encoding.version).map_err(|e| {
                refuse(
                    incoming,
                    code::BAD_REQUEST,
                    "M_BAD_JSON",
                    &format!("The CBOR body could not be read: {e}"),
                )
            })?;
            Ok(value.to_string().into_bytes())
        }
        None => Ok(raw),
        Some(cf) if cf == u64::from(CONTENT_FORMAT_JSON) => Ok(raw),
        Some(_) => Err(refuse(
            incoming,
            code::UNSUPPORTED_CONTENT_FORMAT,
            "M_NOT_JSON",
            "Bodies must be application/cbor (60) or application/json (50).",
        )),
    }
}

/// Whether a `name=value` query pair (or a bare `name`) is parameter `name`.
pub(super) fn is_param(pair: &str, name: &str) -> bool {
    pair.split_once('=').map_or(pair, |(n, _)| n) == name
}

/// The value of query parameter `name`, if the query has it.
pub(super) fn query_value(query: &[String], name: &str) -> Option<String> {
    query
        .iter()
        .find(|pair| is_param(pair, name))
        .and_then(|pair| pair.split_once('='))
        .map(|(_, value)| value.to_owned())
}

/// `path` with the query pairs, each percent-encoded.
pub(super) fn with_query<'a>(path: &str, pairs: impl Iterator<Item = &'a str>) -> String {
    let mut out = path.to_owned();
    for (i, pair) in pairs.enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&translate::encode_query_pair(pair));
    }
    out
}

/// The first value of option `number` as a uint: `Err` when it is not one.
fn uint(packet: &Packet, number: u16) -> Result<Option<u64>, ()> {
    message::uint_option(packet, number).transpose()
}
