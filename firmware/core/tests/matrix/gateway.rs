//! A scripted fake gateway: a CoAP server (piggybacked responses, Block1 and Block2, one
//! Observe registration on `/sync` with confirmable notifications, a duplicate cache) in
//! front of a tiny in-memory homeserver that keeps device keys, one-time keys, to-device
//! messages, room events and a list of sync batches the test pushes.
//!
//! Bodies are written as Matrix JSON and transcoded to profile v2 CBOR with
//! `jeton_proto::transcode`, the same code the real gateway uses.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use jeton_core::coap::message::{Code, Header, Message, MessageType, Token};
use jeton_core::coap::option::{self, BlockValue};
use jeton_proto::TableVersion;
use jeton_proto::transcode::{cbor_to_json, json_to_cbor};
use serde_json::{Value, json};

use crate::support::{encode, uint};

pub(crate) const TOKEN_USER: &str = "@token:localhost";
pub(crate) const ACCESS_TOKEN: &str = "syt_token_access";

struct Outstanding {
    message_id: u16,
    bytes: Vec<u8>,
    next_at: u64,
    tries: u32,
}

struct Observer {
    token: Token,
    /// The registration's path and query: block fetches of a notification must repeat it,
    /// as the real gateway requires.
    key: String,
    /// The batch the next notification carries.
    position: usize,
    sequence: u32,
}

#[derive(Default)]
pub(crate) struct Homeserver {
    /// `(user, device) -> device keys JSON`.
    pub device_keys: BTreeMap<(String, String), Value>,
    /// `(user, device) -> [(key id, signed key JSON)]`.
    pub one_time_keys: BTreeMap<(String, String), Vec<(String, Value)>>,
    /// To-device messages sent by the token: `(user, device, content)`.
    pub to_device: Vec<(String, String, Value)>,
    /// Unencrypted to-device messages sent by the token (verification):
    /// `(type, user, device, content)`.
    pub plain_to_device: Vec<(String, String, String, Value)>,
    /// Room events sent by the token: `(room, event id, type, content)`.
    pub sent: Vec<(String, String, String, Value)>,
    /// Events by id, for `/rooms/{room}/event/{id}`.
    pub events: HashMap<String, Value>,
    txns: HashMap<String, String>,
    /// Sync batches; batch `i` is answered to `since=s{i}` with `next_batch=s{i+1}`.
    pub batches: Vec<Value>,
    pub logins: u32,
    /// Fallback keys uploaded by the token, in order.
    pub fallback_keys: Vec<Value>,
    /// Sends answered 5.03 before one is accepted.
    pub failing_sends: u32,
    /// The filter the token created.
    pub filter: Option<Value>,
    pub keys_uploads: u32,
    /// The users of each keys/query, in order.
    pub queried: Vec<Vec<String>>,
    /// Device id the token logged in with (kept across logins).
    pub device_id: Option<String>,
    /// The media repository: media id -> bytes, as uploaded.
    pub media: BTreeMap<String, Vec<u8>>,
    /// A request body larger than this gets 4.13, like the real gateway's `--max-media-body`.
    pub body_limit: Option<usize>,
    /// The `m.upload.size` of the media config (50 MiB, Synapse's default, when `None`).
    pub upload_size: Option<u64>,
    /// Media config requests answered.
    pub media_configs: u32,
    /// The timeline of every room, oldest first, for `/rooms/{room}/messages`: position
    /// `t{n}` stands after the first `n` events.
    pub history: Vec<Value>,
    /// Other positions `/messages` knows (a sync's `next_batch`), as indexes into `history`.
    pub positions: HashMap<String, usize>,
    /// The queries of every `/messages` request.
    pub messages_requests: Vec<Vec<String>>,
    /// `/messages` is answered 5.03 this many times before it is served.
    pub failing_messages: u32,
    /// `/messages` walking back (`dir=b`) is refused (4.03), as for a room whose history the
    /// token may not read.
    pub history_hidden: bool,
    /// The cross-signing keys the token published (the `keys/device_signing/upload` body
    /// without its `auth`).
    pub cross_signing_keys: Option<Value>,
    /// Every `keys/device_signing/upload` body, `auth` included.
    pub device_signing_uploads: Vec<Value>,
    /// Every `keys/signatures/upload` body.
    pub signature_uploads: Vec<Value>,
    /// `keys/device_signing/upload` asks for user-interactive auth with the password (as
    /// Synapse does but for a user's first keys, MSC3967).
    pub cross_signing_uia: bool,
}

pub(crate) struct FakeGateway {
    pub hs: Homeserver,
    dedup: HashMap<u16, Vec<u8>>,
    upload: Vec<u8>,
    /// Full bodies being fetched with Block2, by path.
    block2: HashMap<String, Vec<u8>>,
    observer: Option<Observer>,
    outstanding: Vec<Outstanding>,
    next_message_id: u16,
    pub outbox: Vec<Vec<u8>>,
    /// Paths of requests processed (duplicates excluded).
    pub processed: Vec<String>,
    /// Whether `/sync` may be observed (false: answered without Observe).
    pub observe_supported: bool,
    /// The access token the peer sent last (option 256 is sticky per peer).
    sticky_token: Option<Vec<u8>>,
    /// Requests that carried the access token.
    pub token_carried: u32,
    /// Room ids the peer named in full, and the Megolm sender fields it sent last (jeton v2
    /// sticky state, kept with the access token as the real gateway keeps it).
    sticky_rooms: Vec<String>,
    sticky_sender: Option<(Value, Value)>,
    /// The Megolm session id kept per room.
    sticky_sessions: HashMap<String, Value>,
    /// Encrypted sends whose body left the sender fields out (the gateway filled them in).
    pub sends_without_sender: u32,
    /// Encrypted sends whose body left the session id out.
    pub sends_without_session: u32,
    /// Sends that named their room by a handle.
    pub sends_by_handle: u32,
    /// Every `/sync` request: its Response-Capacity (option 258) and its queries.
    pub sync_requests: Vec<(Option<u32>, Vec<String>)>,
    /// `/sync` is answered 5.03 until then (the homeserver is down).
    pub sync_down_until: u64,
    /// Notifications sent again for want of an acknowledgement.
    pub notifications_resent: u32,
    /// The next this many Block1 blocks get 5.03 with Max-Age 1 (a gateway out of memory
    /// for uploads for now), and are not taken.
    pub busy_blocks: u32,
}

const BLOCK: usize = 1024;
const SZX: u8 = 6;

impl FakeGateway {
    pub(crate) fn new() -> Self {
        FakeGateway {
            hs: Homeserver::default(),
            dedup: HashMap::new(),
            upload: Vec::new(),
            block2: HashMap::new(),
            observer: None,
            outstanding: Vec::new(),
            next_message_id: 0x7000,
            outbox: Vec::new(),
            processed: Vec::new(),
            observe_supported: true,
            sticky_token: None,
            token_carried: 0,
            sticky_rooms: Vec::new(),
            sticky_sender: None,
            sticky_sessions: HashMap::new(),
            sends_without_sender: 0,
            sends_without_session: 0,
            sends_by_handle: 0,
            sync_requests: Vec::new(),
            sync_down_until: 0,
            notifications_resent: 0,
            busy_blocks: 0,
        }
    }

    /// Restarts as a gateway with persistent storage does (ARCHITECTURE.md, principle 4): the
    /// access token and the sticky state it keeps for the token survive; the exchanges in
    /// flight, the Block2 bodies and the observation do not.
    pub(crate) fn restart_keeping_state(&mut self) {
        self.dedup.clear();
        self.upload.clear();
        self.block2.clear();
        self.observer = None;
        self.outstanding.clear();
    }

    /// Forgets all transport state, as a restarted gateway would.
    pub(crate) fn restart(&mut self) {
        self.restart_keeping_state();
        self.sticky_token = None;
        self.sticky_rooms.clear();
        self.sticky_sender = None;
        self.sticky_sessions.clear();
    }

    /// Forgets the sticky room ids and sender fields but keeps the access token, as a gateway
    /// that had to drop them would.
    pub(crate) fn forget_sticky_state(&mut self) {
        self.sticky_rooms.clear();
        self.sticky_sender = None;
        self.sticky_sessions.clear();
    }

    /// The real gateway's v2 sticky rules for a send (PROFILE.md section 1.1): the room handle
    /// resolved (4.12 if it cannot be), the kept Megolm sender fields filled in.
    fn sticky_send(&mut self, room: &mut String, request: &mut Value) -> Result<(), Code> {
        let missing = Code::new(4, 12);
        if let Some(handle) = room.strip_prefix('~') {
            let found: Vec<&String> = self
                .sticky_rooms
                .iter()
                .filter(|r| r[1..].starts_with(handle))
                .collect();
            let [found] = found.as_slice() else {
                return Err(missing);
            };
            *room = (*found).clone();
            self.sends_by_handle += 1;
        } else if !self.sticky_rooms.contains(room) {
            self.sticky_rooms.push(room.clone());
        }
        if request["algorithm"] == "m.megolm.v1.aes-sha2" {
            match (request.get("sender_key"), request.get("device_id")) {
                (Some(key), Some(device)) => {
                    self.sticky_sender = Some((key.clone(), device.clone()));
                }
                _ => {
                    // Nothing kept: the body goes as it is (the homeserver gets no sender fields).
                    if let Some((key, device)) = self.sticky_sender.clone() {
                        request["sender_key"] = key;
                        request["device_id"] = device;
                    }
                    self.sends_without_sender += 1;
                }
            }
            match request.get("session_id") {
                Some(session) => {
                    self.sticky_sessions.insert(room.clone(), session.clone());
                }
                None => {
                    if let Some(session) = self.sticky_sessions.get(room.as_str()) {
                        request["session_id"] = session.clone();
                    }
                    self.sends_without_session += 1;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn next_timer(&self) -> Option<u64> {
        self.outstanding.iter().map(|o| o.next_at).min()
    }

    pub(crate) fn handle_timeout(&mut self, now: u64) {
        let mut resend = Vec::new();
        self.outstanding.retain_mut(|o| {
            if now < o.next_at {
                return true;
            }
            if o.tries >= 4 {
                return false;
            }
            o.tries += 1;
            o.next_at = now + (2_000 << o.tries);
            resend.push(o.bytes.clone());
            self.notifications_resent += 1;
            true
        });
        self.outbox.extend(resend);
    }

    /// Pushes a sync batch; an observer waiting at its position is notified.
    pub(crate) fn push_sync(&mut self, now: u64, batch: Value) {
        self.hs.batches.push(batch);
        self.notify(now);
    }

    fn notify(&mut self, now: u64) {
        let Some(observer) = &self.observer else {
            return;
        };
        if observer.position >= self.hs.batches.len() {
            return;
        }
        let position = observer.position;
        let token = observer.token;
        let key = observer.key.clone();
        let body = self.sync_body(position, false);
        let observer = self.observer.as_mut().unwrap();
        observer.position += 1;
        observer.sequence += 1;
        let sequence = observer.sequence;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        let message_id = self.next_message_id;
        let header = Header {
            message_type: MessageType::Confirmable,
            code: Code::CONTENT,
            message_id,
            token,
        };
        let mut options = vec![
            (option::OBSERVE, uint(sequence)),
            (option::CONTENT_FORMAT, vec![60]),
        ];
        let payload = self.first_block(&key, body, &mut options);
        let bytes = encode(header, &options, &payload);
        self.outbox.push(bytes.clone());
        self.outstanding.push(Outstanding {
            message_id,
            bytes,
            next_at: now + 2_000,
            tries: 0,
        });
    }

    /// The body of batch `position` as v2 CBOR; `compact` keeps only the newest timeline
    /// event of each room (an inline filter with `timeline.limit` 1).
    fn sync_body(&self, position: usize, compact: bool) -> Vec<u8> {
        json_to_cbor(&self.hs.sync_batch(position, compact), TableVersion::V2).unwrap()
    }

    /// Caches `body` for Block2 if it is larger than a block and returns the first block.
    fn first_block(
        &mut self,
        key: &str,
        body: Vec<u8>,
        options: &mut Vec<(u16, Vec<u8>)>,
    ) -> Vec<u8> {
        if body.len() <= BLOCK {
            return body;
        }
        let block = BlockValue {
            num: 0,
            more: true,
            szx: SZX,
        };
        options.push((option::BLOCK2, uint(block.to_uint())));
        options.push((option::SIZE2, uint(body.len() as u32)));
        let first = body[..BLOCK].to_vec();
        self.block2.insert(key.to_string(), body);
        first
    }

    pub(crate) fn handle_datagram(&mut self, now: u64, datagram: &[u8]) {
        let message = Message::decode(datagram).expect("the token sends well-formed CoAP");
        let header = message.header;
        match header.message_type {
            MessageType::Acknowledgement => {
                self.outstanding
                    .retain(|o| o.message_id != header.message_id);
                return;
            }
            MessageType::Reset => {
                self.outstanding
                    .retain(|o| o.message_id != header.message_id);
                self.observer = None;
                return;
            }
            MessageType::NonConfirmable => panic!("the token sends only CON requests"),
            MessageType::Confirmable => {}
        }
        if let Some(cached) = self.dedup.get(&header.message_id) {
            self.outbox.push(cached.clone());
            return;
        }
        let path: Vec<String> = message
            .options()
            .filter(|(n, _)| *n == option::URI_PATH)
            .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
            .collect();
        let query: Vec<String> = message
            .options()
            .filter(|(n, _)| *n == option::URI_QUERY)
            .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
            .collect();
        assert_eq!(message.option(option::CBOR_TABLE_VERSION), Some(&[2u8][..]));
        let route = path.join("/");
        // Stored bodies are found by path and query, like the real gateway's.
        let key = format!("{route}?{}", query.join("&"));
        let mut options: Vec<(u16, Vec<u8>)> = Vec::new();
        let reply = |code: Code, options: &[(u16, Vec<u8>)], payload: &[u8]| {
            encode(
                Header {
                    message_type: MessageType::Acknowledgement,
                    code,
                    message_id: header.message_id,
                    token: header.token,
                },
                options,
                payload,
            )
        };
        // Block1: collect the request body.
        let mut body = message.payload.to_vec();
        if let Some(block1) = message
            .option(option::BLOCK1)
            .and_then(BlockValue::from_option)
        {
            if self.busy_blocks > 0 {
                self.busy_blocks -= 1;
                let bytes = reply(Code::new(5, 3), &[(option::MAX_AGE, uint(1))], &[]);
                self.dedup.insert(header.message_id, bytes.clone());
                self.outbox.push(bytes);
                return;
            }
            if block1.num == 0 {
                self.upload.clear();
            }
            if self.upload.len() != block1.offset() {
                // The assembly is gone (a restarted gateway): start again, like the real one.
                self.upload.clear();
                let bytes = reply(Code::new(4, 8), &[], &[]);
                self.dedup.insert(header.message_id, bytes.clone());
                self.outbox.push(bytes);
                return;
            }
            self.upload.extend_from_slice(message.payload);
            if self
                .hs
                .body_limit
                .is_some_and(|limit| self.upload.len() > limit)
            {
                self.upload.clear();
                let bytes = reply(Code::new(4, 13), &[], &[]);
                self.dedup.insert(header.message_id, bytes.clone());
                self.outbox.push(bytes);
                return;
            }
            if block1.more {
                let bytes = reply(
                    Code::new(2, 31),
                    &[(option::BLOCK1, uint(block1.to_uint()))],
                    &[],
                );
                self.dedup.insert(header.message_id, bytes.clone());
                self.outbox.push(bytes);
                return;
            }
            options.push((option::BLOCK1, uint(block1.to_uint())));
            body = std::mem::take(&mut self.upload);
        }
        // Block2 continuation of a cached body.
        if let Some(block2) = message
            .option(option::BLOCK2)
            .and_then(BlockValue::from_option)
            && block2.num > 0
        {
            let full = self.block2.get(&key).cloned().unwrap_or_default();
            let start = (block2.offset()).min(full.len());
            let end = (start + block2.size()).min(full.len());
            let value = BlockValue {
                num: block2.num,
                more: end < full.len(),
                szx: block2.szx,
            };
            let bytes = reply(
                Code::CONTENT,
                &[
                    (option::CONTENT_FORMAT, vec![60]),
                    (option::BLOCK2, uint(value.to_uint())),
                ],
                &full[start..end],
            );
            self.dedup.insert(header.message_id, bytes.clone());
            self.outbox.push(bytes);
            return;
        }
        let observe = message.uint_option(option::OBSERVE);
        if let Some(token) = message.option(option::ACCESS_TOKEN) {
            self.token_carried += 1;
            if self.sticky_token.as_deref() != Some(token) {
                self.sticky_rooms.clear();
                self.sticky_sender = None;
                self.sticky_sessions.clear();
            }
            self.sticky_token = Some(token.to_vec());
        }
        if route != "31" {
            match &self.sticky_token {
                Some(token) if token == ACCESS_TOKEN.as_bytes() => {}
                _ => {
                    let body =
                        json_to_cbor(&json!({"errcode": "M_MISSING_TOKEN"}), TableVersion::V2)
                            .unwrap();
                    let bytes = reply(
                        Code::new(4, 1),
                        &[(option::CONTENT_FORMAT, vec![60])],
                        &body,
                    );
                    self.dedup.insert(header.message_id, bytes.clone());
                    self.outbox.push(bytes);
                    return;
                }
            }
        }
        self.processed.push(route.clone());
        // Media bodies are raw bytes, never CBOR (PROFILE.md section 7).
        if route == "Mu" {
            let id = format!("m{}", self.hs.media.len());
            self.hs.media.insert(id.clone(), body);
            let content_uri = json!({"content_uri": format!("mxc://localhost/{id}")});
            // As the real gateway: the body was not CBOR, so the answer is CBOR only if the
            // request asked for it with Accept (PROFILE.md section 1), JSON otherwise.
            let answer = if message.uint_option(option::ACCEPT) == Some(60) {
                options.push((option::CONTENT_FORMAT, vec![60]));
                json_to_cbor(&content_uri, TableVersion::V2).unwrap()
            } else {
                options.push((option::CONTENT_FORMAT, vec![50]));
                content_uri.to_string().into_bytes()
            };
            let bytes = reply(Code::CHANGED, &options, &answer);
            self.dedup.insert(header.message_id, bytes.clone());
            self.outbox.push(bytes);
            return;
        }
        if let ["Md", "localhost", id] = path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            let (code, file) = match self.hs.media.get(id) {
                Some(file) => (Code::CONTENT, file.clone()),
                None => (Code::new(4, 4), Vec::new()),
            };
            options.push((option::CONTENT_FORMAT, vec![42]));
            let payload = self.first_block(&key, file, &mut options);
            let bytes = reply(code, &options, &payload);
            self.dedup.insert(header.message_id, bytes.clone());
            self.outbox.push(bytes);
            return;
        }
        let (code, response) = if route == "v" && now < self.sync_down_until {
            self.sync_requests.push((
                message.uint_option(option::RESPONSE_CAPACITY),
                query.clone(),
            ));
            let error = json!({"errcode": "M_UNKNOWN", "error": "the homeserver is down"});
            (
                Code::new(5, 3),
                json_to_cbor(&error, TableVersion::V2).unwrap(),
            )
        } else if route == "v" {
            self.sync_requests.push((
                message.uint_option(option::RESPONSE_CAPACITY),
                query.clone(),
            ));
            let since = query
                .iter()
                .find_map(|q| q.strip_prefix("since=s"))
                .map(|n| n.parse::<usize>().unwrap())
                .unwrap_or(0);
            let compact = query.iter().any(|q| q.starts_with("filter={"));
            if observe == Some(0) && self.observe_supported {
                let position = since;
                let body = self.sync_body(position, compact);
                let delivered = position < self.hs.batches.len();
                self.observer = Some(Observer {
                    token: header.token,
                    key: key.clone(),
                    position: position + usize::from(delivered),
                    sequence: 2,
                });
                options.push((option::OBSERVE, uint(2)));
                (Code::CONTENT, body)
            } else {
                (Code::CONTENT, self.sync_body(since, compact))
            }
        } else if path.first().map(String::as_str) == Some("3E") {
            let (code, value) = self.hs.messages(&query);
            (code, json_to_cbor(&value, TableVersion::V2).unwrap())
        } else {
            let request = if body.is_empty() {
                Value::Null
            } else {
                cbor_to_json(&body, TableVersion::V2).expect("the token sends profile CBOR")
            };
            let (code, value) = self.route(&path, request);
            (code, json_to_cbor(&value, TableVersion::V2).unwrap())
        };
        options.push((option::CONTENT_FORMAT, vec![60]));
        let payload = self.first_block(&key, response, &mut options);
        let bytes = reply(code, &options, &payload);
        self.dedup.insert(header.message_id, bytes.clone());
        self.outbox.push(bytes);
    }

    fn route(&mut self, path: &[String], mut request: Value) -> (Code, Value) {
        let mut path = path.to_vec();
        if matches!(path.first().map(String::as_str), Some("w" | "we"))
            && let Some(room) = path.get_mut(1)
            && let Err(code) = self.sticky_send(room, &mut request)
        {
            return (code, json!({"errcode": "M_UNKNOWN"}));
        }
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        self.hs.answer(&segments, request)
    }
}

/// The session of the fake homeserver's user-interactive auth.
pub(crate) const UIA_SESSION: &str = "uiasession1";

impl Homeserver {
    /// `POST /keys/device_signing/upload`: with [`Homeserver::cross_signing_uia`], a 401
    /// challenge until the request carries the password auth of the session, as the spec's
    /// user-interactive auth goes.
    fn device_signing_upload(&mut self, mut request: Value) -> (Code, Value) {
        self.device_signing_uploads.push(request.clone());
        let challenge = |error: Option<&str>| {
            let mut body = json!({"session": UIA_SESSION, "params": {},
                "flows": [{"stages": ["m.login.sso"]}, {"stages": ["m.login.password"]}]});
            if let Some(error) = error {
                body["errcode"] = json!("M_FORBIDDEN");
                body["error"] = json!(error);
            }
            (Code::new(4, 1), body)
        };
        let auth = request.as_object_mut().unwrap().remove("auth");
        if self.cross_signing_uia {
            let Some(auth) = auth else {
                return challenge(None);
            };
            let expected = json!({"type": "m.login.password", "session": UIA_SESSION,
                "identifier": {"type": "m.id.user", "user": TOKEN_USER}, "password": "secret"});
            if auth != expected {
                return challenge(Some("Invalid password"));
            }
        }
        self.cross_signing_keys = Some(request);
        (Code::CHANGED, json!({}))
    }

    /// `GET /rooms/{room}/messages` over [`Homeserver::history`], as Synapse answers it: a
    /// page toward `to` (or the timeline's end), with `end` unless the page is empty.
    pub(crate) fn messages(&mut self, query: &[String]) -> (Code, Value) {
        self.messages_requests.push(query.to_vec());
        if self.failing_messages > 0 {
            self.failing_messages -= 1;
            return (Code::new(5, 3), json!({"errcode": "M_UNKNOWN"}));
        }
        let value = |name: &str| {
            query
                .iter()
                .find_map(|q| q.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        // A position of a sync the test did not place in the history stands after all of it.
        let position = |token: &str| {
            self.positions.get(token).copied().unwrap_or_else(|| {
                token
                    .strip_prefix('t')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(self.history.len())
            })
        };
        let backwards = value("dir").as_deref() == Some("b");
        if backwards && self.history_hidden {
            return (Code::new(4, 3), json!({"errcode": "M_FORBIDDEN"}));
        }
        let len = self.history.len();
        let from = value("from").map_or(if backwards { len } else { 0 }, |t| position(&t));
        let to = value("to").map(|t| position(&t));
        let limit: usize = value("limit").map_or(10, |l| l.parse().unwrap());
        let (chunk, end): (Vec<Value>, usize) = if backwards {
            let lower = to.unwrap_or(0).max(from.saturating_sub(limit)).min(from);
            (
                self.history[lower..from].iter().rev().cloned().collect(),
                lower,
            )
        } else {
            let upper = to.unwrap_or(len).min(from + limit).max(from);
            (self.history[from..upper].to_vec(), upper)
        };
        if chunk.is_empty() {
            return (Code::CONTENT, json!({"chunk": [], "start": value("from")}));
        }
        let start = value("from").unwrap_or_default();
        (
            Code::CONTENT,
            json!({"chunk": chunk, "start": start, "end": format!("t{end}")}),
        )
    }

    /// The sync answer at `position` (batch `i` carries `next_batch` `s{i+1}`); `compact`
    /// keeps the last event of each timeline, as a lazy filter would.
    pub(crate) fn sync_batch(&self, position: usize, compact: bool) -> Value {
        let mut batch = self
            .batches
            .get(position)
            .cloned()
            .unwrap_or_else(|| json!({}));
        if compact && let Some(rooms) = batch["rooms"]["join"].as_object_mut() {
            for room in rooms.values_mut() {
                if let Some(events) = room["timeline"]["events"].as_array_mut()
                    && events.len() > 1
                {
                    events.drain(..events.len() - 1);
                    room["timeline"]["limited"] = json!(true);
                }
            }
        }
        let next = if position < self.batches.len() {
            position + 1
        } else {
            position
        };
        batch["next_batch"] = json!(format!("s{next}"));
        // Like Synapse, every sync reports how many one-time keys the token has left.
        if let Some(device) = &self.device_id {
            let left = self
                .one_time_keys
                .get(&(TOKEN_USER.to_string(), device.clone()))
                .map_or(0, Vec::len);
            batch["device_one_time_keys_count"] = json!({"signed_curve25519": left});
        }
        batch
    }

    /// Answers a request named by its profile path segments (the short enum first, then the
    /// path's parameters), as the homeserver behind a gateway would.
    pub(crate) fn answer(&mut self, segments: &[&str], request: Value) -> (Code, Value) {
        let hs = self;
        let mut segments = segments.to_vec();
        // `we` is `w` with the event type implied (jeton v2): serve both forms the same way.
        if let ["we", room, txn] = segments.as_slice() {
            segments = vec!["w", room, "m.room.encrypted", txn];
        }
        match segments.as_slice() {
            ["31"] => {
                assert_eq!(request["type"], "m.login.password");
                if request["password"] != "secret" {
                    return (Code::new(4, 3), json!({"errcode": "M_FORBIDDEN"}));
                }
                hs.logins += 1;
                let device = request["device_id"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| "TOKENDEV".to_string());
                hs.device_id = Some(device.clone());
                (
                    Code::CHANGED,
                    json!({"access_token": ACCESS_TOKEN, "device_id": device, "user_id": TOKEN_USER}),
                )
            }
            ["35", _user] => {
                hs.filter = Some(request);
                (Code::CHANGED, json!({"filter_id": "f1"}))
            }
            ["z"] => {
                hs.keys_uploads += 1;
                let device = hs.device_id.clone().unwrap_or_default();
                if let Some(keys) = request.get("device_keys") {
                    hs.device_keys
                        .insert((TOKEN_USER.into(), device.clone()), keys.clone());
                }
                let list = hs
                    .one_time_keys
                    .entry((TOKEN_USER.into(), device.clone()))
                    .or_default();
                if let Some(keys) = request.get("one_time_keys").and_then(Value::as_object) {
                    for (id, key) in keys {
                        list.push((id.clone(), key.clone()));
                    }
                }
                let count = list.len();
                if let Some(fallback) = request.get("fallback_keys") {
                    hs.fallback_keys.push(fallback.clone());
                }
                (
                    Code::CHANGED,
                    json!({"one_time_key_counts": {"signed_curve25519": count}}),
                )
            }
            ["3h"] => {
                hs.queried.push(
                    request["device_keys"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .cloned()
                        .collect(),
                );
                let mut out = serde_json::Map::new();
                for user in request["device_keys"].as_object().unwrap().keys() {
                    let mut devices = serde_json::Map::new();
                    for ((u, d), keys) in &hs.device_keys {
                        if u == user {
                            devices.insert(d.clone(), keys.clone());
                        }
                    }
                    out.insert(user.clone(), Value::Object(devices));
                }
                (Code::CHANGED, json!({"device_keys": out}))
            }
            ["y"] => {
                let mut out = serde_json::Map::new();
                for (user, devices) in request["one_time_keys"].as_object().unwrap() {
                    let mut per_user = serde_json::Map::new();
                    for device in devices.as_object().unwrap().keys() {
                        let list = hs
                            .one_time_keys
                            .entry((user.clone(), device.clone()))
                            .or_default();
                        if !list.is_empty() {
                            let (id, key) = list.remove(0);
                            per_user.insert(device.clone(), json!({ id: key }));
                        }
                    }
                    out.insert(user.clone(), Value::Object(per_user));
                }
                (Code::CHANGED, json!({"one_time_keys": out}))
            }
            ["x", event_type, _txn] => {
                for (user, devices) in request["messages"].as_object().unwrap() {
                    for (device, content) in devices.as_object().unwrap() {
                        if *event_type == "m.room.encrypted" {
                            hs.to_device
                                .push((user.clone(), device.clone(), content.clone()));
                        } else {
                            hs.plain_to_device.push((
                                event_type.to_string(),
                                user.clone(),
                                device.clone(),
                                content.clone(),
                            ));
                        }
                    }
                }
                (Code::CHANGED, json!({}))
            }
            ["w", room, event_type, txn] => {
                if hs.failing_sends > 0 {
                    hs.failing_sends -= 1;
                    return (Code::new(5, 3), json!({"errcode": "M_UNKNOWN"}));
                }
                if let Some(event_id) = hs.txns.get(*txn) {
                    return (Code::CHANGED, json!({ "event_id": event_id }));
                }
                let event_id = format!("$event{}", hs.sent.len() + hs.events.len());
                hs.txns.insert(txn.to_string(), event_id.clone());
                hs.sent.push((
                    room.to_string(),
                    event_id.clone(),
                    event_type.to_string(),
                    request,
                ));
                (Code::CHANGED, json!({ "event_id": event_id }))
            }
            ["3K", room] => (Code::CHANGED, json!({ "room_id": room })),
            ["3z"] => hs.device_signing_upload(request),
            ["3y"] => {
                hs.signature_uploads.push(request);
                (Code::CHANGED, json!({ "failures": {} }))
            }
            ["Mc"] => {
                hs.media_configs += 1;
                let size = hs.upload_size.unwrap_or(50 * 1024 * 1024);
                (Code::CONTENT, json!({ "m.upload.size": size }))
            }
            ["3A", _room, event_id] => match hs.events.get(*event_id) {
                Some(event) => (Code::CONTENT, event.clone()),
                None => (Code::new(4, 4), json!({"errcode": "M_NOT_FOUND"})),
            },
            other => panic!("unexpected request {other:?}"),
        }
    }
}
