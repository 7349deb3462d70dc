//! A deterministic world for the CoAP client engine: a scripted in-process CoAP server, a
//! simulated network with seeded loss, duplication, reordering and delay, and a virtual
//! clock. Nothing here touches a socket or the wall clock, so every run with a seed is
//! the same run.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};

use jeton_core::coap::message::{Code, Header, Message, MessageType, MessageWriter, Token};
use jeton_core::coap::option::{self, BlockValue};
use jeton_core::coap::{Client, ClientConfig, Event, RequestId};
use jeton_core::platform::{Instant, Rng};

/// splitmix64: small, seedable, good enough to draw tokens and jitter in tests.
#[derive(Clone, Debug)]
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

impl Rng for TestRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// An event copied out of the engine so that tests can keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Response {
        id: RequestId,
        code: Code,
        body: Vec<u8>,
    },
    Block {
        id: RequestId,
        offset: usize,
        body: Vec<u8>,
        last: bool,
    },
    Notification {
        id: RequestId,
        sequence: u32,
        body: Vec<u8>,
    },
    Failed {
        id: RequestId,
        error: jeton_core::coap::ExchangeError,
    },
}

impl Outcome {
    pub fn id(&self) -> RequestId {
        match self {
            Outcome::Response { id, .. }
            | Outcome::Block { id, .. }
            | Outcome::Notification { id, .. }
            | Outcome::Failed { id, .. } => *id,
        }
    }

    fn from_event(event: Event<'_>) -> Outcome {
        match event {
            Event::Response { id, code, body, .. } => Outcome::Response {
                id,
                code,
                body: body.to_vec(),
            },
            Event::ResponseBlock {
                id,
                offset,
                body,
                last,
                ..
            } => Outcome::Block {
                id,
                offset,
                body: body.to_vec(),
                last,
            },
            Event::Notification {
                id, sequence, body, ..
            } => Outcome::Notification {
                id,
                sequence,
                body: body.to_vec(),
            },
            Event::Failed { id, error } => Outcome::Failed { id, error },
        }
    }
}

/// How the network mistreats datagrams, in percent and milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    pub loss: u64,
    pub duplication: u64,
    /// Each copy is delayed uniformly in `1..=max_delay_ms`, which reorders datagrams.
    pub max_delay_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToServer,
    ToClient,
}

/// Datagrams in flight, delivered in order of their arrival time.
#[derive(Debug)]
pub struct Network {
    rng: TestRng,
    impairment: Impairment,
    in_flight: BTreeMap<(u64, u64), (Direction, Vec<u8>)>,
    sequence: u64,
}

impl Network {
    fn send(&mut self, now: u64, direction: Direction, bytes: &[u8]) {
        if self.rng.chance(self.impairment.loss) {
            return;
        }
        let copies = if self.rng.chance(self.impairment.duplication) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.next_u64() % self.impairment.max_delay_ms.max(1);
            self.sequence += 1;
            self.in_flight
                .insert((now + delay, self.sequence), (direction, bytes.to_vec()));
        }
    }

    fn next_arrival(&self) -> Option<u64> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }
}

/// A CON message the server keeps sending until it is acknowledged.
#[derive(Debug)]
struct Outstanding {
    message_id: u16,
    bytes: Vec<u8>,
    next_at: u64,
    interval: u64,
    tries: u32,
}

/// A request as the server saw it: its path and its options.
pub type ReceivedRequest = (String, Vec<(u16, Vec<u8>)>);

/// What the server does with a request to `/slow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowMode {
    /// Empty ACK now, separate CON response after this many milliseconds.
    Separate(u64),
    /// Answer with RST.
    Reset,
    /// Never answer.
    Silent,
}

/// A scripted CoAP server with the resources the tests use:
///
/// - `POST /echo`: answers 2.04 with the request body (Block1 when large, with 2.31
///   Continue at the server's block size);
/// - `GET /big`: [`ScriptedServer::big`], served with Block2, ETag and Size2;
/// - `GET /slow`: per [`SlowMode`];
/// - `GET /obs`: observable; [`ScriptedServer::notify`] pushes a new state.
///
/// It keeps a duplicate cache like the gateway does, so a retransmitted request is
/// answered again but processed once.
#[derive(Debug)]
pub struct ScriptedServer {
    rng: TestRng,
    pub block_szx: u8,
    pub big: Vec<u8>,
    pub slow: SlowMode,
    /// Bodies of requests processed, in order (once per request, duplicates excluded).
    pub processed: Vec<(String, Vec<u8>)>,
    /// Every request datagram received (duplicates included), decoded path and options.
    pub received: Vec<ReceivedRequest>,
    dedup: HashMap<u16, Vec<u8>>,
    outstanding: Vec<Outstanding>,
    next_message_id: u16,
    upload: Vec<u8>,
    mirrored: Vec<u8>,
    observer: Option<Token>,
    pub observe_state: Vec<u8>,
    observe_sequence: u32,
    pub notifications_confirmable: bool,
    pub outbox: Vec<Vec<u8>>,
}

fn path_of(message: &Message<'_>) -> String {
    message
        .options()
        .filter(|(number, _)| *number == option::URI_PATH)
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

struct Reply {
    code: Code,
    options: Vec<(u16, Vec<u8>)>,
    payload: Vec<u8>,
}

pub fn uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    bytes[skip..].to_vec()
}

pub fn encode(header: Header, options: &[(u16, Vec<u8>)], payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut sorted = options.to_vec();
    sorted.sort_by_key(|(number, _)| *number);
    let mut writer = MessageWriter::new(&mut buf, &header).unwrap();
    for (number, value) in &sorted {
        writer.option(*number, value).unwrap();
    }
    writer.payload(payload).unwrap();
    let len = writer.finish();
    buf.truncate(len);
    buf
}

impl ScriptedServer {
    pub fn new(seed: u64) -> ScriptedServer {
        ScriptedServer {
            rng: TestRng(seed ^ 0x5EED),
            block_szx: 6,
            big: Vec::new(),
            slow: SlowMode::Separate(5_000),
            processed: Vec::new(),
            received: Vec::new(),
            dedup: HashMap::new(),
            outstanding: Vec::new(),
            next_message_id: 0x4000,
            upload: Vec::new(),
            mirrored: Vec::new(),
            observer: None,
            observe_state: b"state 0".to_vec(),
            observe_sequence: 0,
            notifications_confirmable: true,
            outbox: Vec::new(),
        }
    }

    fn fresh_message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_message_id
    }

    fn send_confirmable(&mut self, now: u64, bytes: Vec<u8>, message_id: u16) {
        self.outbox.push(bytes.clone());
        let interval = 2_000 + self.rng.next_u64() % 1_000;
        self.outstanding.push(Outstanding {
            message_id,
            bytes,
            next_at: now + interval,
            interval,
            tries: 0,
        });
    }

    pub fn next_timer(&self) -> Option<u64> {
        self.outstanding.iter().map(|o| o.next_at).min()
    }

    pub fn handle_timeout(&mut self, now: u64) {
        let mut resend = Vec::new();
        self.outstanding.retain_mut(|o| {
            if now < o.next_at {
                return true;
            }
            if o.tries >= 4 {
                return false;
            }
            o.tries += 1;
            o.interval *= 2;
            o.next_at = now + o.interval;
            resend.push(o.bytes.clone());
            true
        });
        self.outbox.extend(resend);
    }

    /// Pushes a new state of `/obs` to the observer, if there is one.
    pub fn notify(&mut self, now: u64, state: &[u8]) {
        self.observe_state = state.to_vec();
        self.observe_sequence += 1;
        let Some(token) = self.observer else { return };
        let confirmable = self.notifications_confirmable;
        let message_id = self.fresh_message_id();
        let header = Header {
            message_type: if confirmable {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            },
            code: Code::CONTENT,
            message_id,
            token,
        };
        let (options, payload) = self.observe_representation(0, self.block_szx, true);
        let bytes = encode(header, &options, &payload);
        if confirmable {
            self.send_confirmable(now, bytes, message_id);
        } else {
            self.outbox.push(bytes);
        }
    }

    /// Sends a notification with an explicit sequence number (for reordering tests).
    pub fn notify_with_sequence(&mut self, sequence: u32, state: &[u8]) {
        let Some(token) = self.observer else { return };
        let message_id = self.fresh_message_id();
        let header = Header {
            message_type: MessageType::NonConfirmable,
            code: Code::CONTENT,
            message_id,
            token,
        };
        let options = vec![(option::OBSERVE, uint(sequence))];
        self.outbox.push(encode(header, &options, state));
    }

    pub fn observer(&self) -> Option<Token> {
        self.observer
    }

    fn observe_representation(
        &self,
        num: u32,
        szx: u8,
        with_observe: bool,
    ) -> (Vec<(u16, Vec<u8>)>, Vec<u8>) {
        let mut options = Vec::new();
        if with_observe {
            options.push((option::OBSERVE, uint(self.observe_sequence)));
        }
        let (block, payload) = block_of(&self.observe_state, num, szx);
        if let Some(block) = block {
            options.push((option::BLOCK2, uint(block.to_uint())));
        }
        (options, payload)
    }

    /// Handles one datagram from the client.
    pub fn handle_datagram(&mut self, now: u64, datagram: &[u8]) {
        let message = Message::decode(datagram).expect("the client sends well-formed CoAP");
        let header = message.header;
        match header.message_type {
            MessageType::Acknowledgement | MessageType::Reset => {
                self.outstanding
                    .retain(|o| o.message_id != header.message_id);
                if header.message_type == MessageType::Reset {
                    // RFC 7641 §3.6: a RST to a notification ends the observation.
                    self.observer = None;
                }
                return;
            }
            MessageType::NonConfirmable => panic!("the engine sends only CON requests"),
            MessageType::Confirmable => {}
        }
        let path = path_of(&message);
        self.received.push((
            path.clone(),
            message.options().map(|(n, v)| (n, v.to_vec())).collect(),
        ));
        if let Some(cached) = self.dedup.get(&header.message_id) {
            self.outbox.push(cached.clone());
            return;
        }
        let ack = |code: Code, token: Token| Header {
            message_type: MessageType::Acknowledgement,
            code,
            message_id: header.message_id,
            token,
        };
        let reply = match path.as_str() {
            "slow" => {
                match self.slow {
                    SlowMode::Reset => {
                        let rst = Header {
                            message_type: MessageType::Reset,
                            code: Code::EMPTY,
                            message_id: header.message_id,
                            token: Token::EMPTY,
                        };
                        let bytes = encode(rst, &[], &[]);
                        self.dedup.insert(header.message_id, bytes.clone());
                        self.outbox.push(bytes);
                    }
                    SlowMode::Silent => {}
                    SlowMode::Separate(delay) => {
                        let bytes = encode(ack(Code::EMPTY, Token::EMPTY), &[], &[]);
                        self.dedup.insert(header.message_id, bytes.clone());
                        self.outbox.push(bytes);
                        self.processed.push((path, message.payload.to_vec()));
                        let message_id = self.fresh_message_id();
                        let response = encode(
                            Header {
                                message_type: MessageType::Confirmable,
                                code: Code::CONTENT,
                                message_id,
                                token: header.token,
                            },
                            &[],
                            b"late answer",
                        );
                        // Held back by `delay`: queued as outstanding with the first
                        // transmission at now + delay.
                        self.outstanding.push(Outstanding {
                            message_id,
                            bytes: response,
                            next_at: now + delay,
                            interval: 1_000,
                            tries: 0,
                        });
                    }
                }
                return;
            }
            "echo" => self.echo(&message),
            "mirror" => self.mirror(&message),
            "big" => {
                let requested = message
                    .option(option::BLOCK2)
                    .and_then(BlockValue::from_option);
                let szx = requested.map_or(self.block_szx, |b| b.szx.min(self.block_szx));
                let num = requested.map_or(0, |b| b.num);
                let (block, payload) = block_of(&self.big, num, szx);
                let mut options = vec![(option::ETAG, b"v1".to_vec())];
                if let Some(block) = block {
                    options.push((option::BLOCK2, uint(block.to_uint())));
                    if num == 0 {
                        options.push((option::SIZE2, uint(self.big.len() as u32)));
                    }
                }
                if num == 0 {
                    self.processed.push((path, Vec::new()));
                }
                Reply {
                    code: Code::CONTENT,
                    options,
                    payload,
                }
            }
            "obs" => {
                let observe = message.uint_option(option::OBSERVE);
                let requested = message
                    .option(option::BLOCK2)
                    .and_then(BlockValue::from_option);
                let num = requested.map_or(0, |b| b.num);
                let szx = requested.map_or(self.block_szx, |b| b.szx.min(self.block_szx));
                match observe {
                    Some(0) => {
                        self.observer = Some(header.token);
                        self.processed.push((path, b"register".to_vec()));
                    }
                    Some(1) => {
                        self.observer = None;
                        self.processed.push((path, b"deregister".to_vec()));
                    }
                    _ => {}
                }
                let (options, payload) = self.observe_representation(num, szx, observe == Some(0));
                Reply {
                    code: Code::CONTENT,
                    options,
                    payload,
                }
            }
            _ => Reply {
                code: Code::NOT_FOUND,
                options: Vec::new(),
                payload: Vec::new(),
            },
        };
        let bytes = encode(
            ack(reply.code, header.token),
            &reply.options,
            &reply.payload,
        );
        self.dedup.insert(header.message_id, bytes.clone());
        self.outbox.push(bytes);
    }

    /// `POST /mirror`: like `/echo`, but the answer is the whole uploaded body, sent with
    /// Block2 when large; the rest of it is fetched with the same POST carrying Block2 and
    /// no body (RFC 7959 §3.3).
    fn mirror(&mut self, message: &Message<'_>) -> Reply {
        let follow_up = message
            .option(option::BLOCK2)
            .and_then(BlockValue::from_option)
            .filter(|block| block.num > 0);
        if let Some(requested) = follow_up {
            let (block, payload) = block_of(
                &self.mirrored,
                requested.num,
                requested.szx.min(self.block_szx),
            );
            return Reply {
                code: Code::CHANGED,
                options: block
                    .map(|block| vec![(option::BLOCK2, uint(block.to_uint()))])
                    .unwrap_or_default(),
                payload,
            };
        }
        let mut reply = self.echo(message);
        if reply.code != Code::CHANGED {
            return reply;
        }
        self.mirrored = self
            .processed
            .last()
            .map(|(_, body)| body.clone())
            .unwrap_or_default();
        let (block, payload) = block_of(&self.mirrored, 0, self.block_szx);
        if let Some(block) = block {
            reply.options.push((option::BLOCK2, uint(block.to_uint())));
        }
        reply.payload = payload;
        reply
    }

    fn echo(&mut self, message: &Message<'_>) -> Reply {
        let Some(block) = message
            .option(option::BLOCK1)
            .and_then(BlockValue::from_option)
        else {
            self.processed
                .push(("echo".to_string(), message.payload.to_vec()));
            return Reply {
                code: Code::CHANGED,
                options: Vec::new(),
                payload: message.payload.to_vec(),
            };
        };
        if block.offset() != self.upload.len() {
            return Reply {
                code: Code::REQUEST_ENTITY_INCOMPLETE,
                options: Vec::new(),
                payload: Vec::new(),
            };
        }
        self.upload.extend_from_slice(message.payload);
        let szx = block.szx.min(self.block_szx);
        if block.more {
            return Reply {
                code: Code::CONTINUE,
                options: vec![(
                    option::BLOCK1,
                    uint(
                        BlockValue {
                            num: block.num,
                            more: true,
                            szx,
                        }
                        .to_uint(),
                    ),
                )],
                payload: Vec::new(),
            };
        }
        let body = std::mem::take(&mut self.upload);
        self.processed.push(("echo".to_string(), body.clone()));
        let digest = format!("{} bytes", body.len());
        Reply {
            code: Code::CHANGED,
            options: vec![(option::BLOCK1, uint(block.to_uint()))],
            payload: digest.into_bytes(),
        }
    }
}

/// The block `num` of size `2^(szx+4)` of `body`, with its Block2 value, or `None` for the
/// value when the body fits one block and block 0 was asked for.
fn block_of(body: &[u8], num: u32, szx: u8) -> (Option<BlockValue>, Vec<u8>) {
    let size = 1usize << (szx + 4);
    if num == 0 && body.len() <= size {
        return (None, body.to_vec());
    }
    let start = (num as usize * size).min(body.len());
    let end = (start + size).min(body.len());
    let block = BlockValue {
        num,
        more: end < body.len(),
        szx,
    };
    (Some(block), body[start..end].to_vec())
}

/// The client, the server, the network and the clock.
#[derive(Debug)]
pub struct World<const REQ: usize = 1024, const RESP: usize = 2048> {
    pub now: u64,
    pub client: Client<TestRng, REQ, RESP>,
    pub server: ScriptedServer,
    pub network: Network,
    pub outcomes: Vec<Outcome>,
    /// Datagrams the client sent, with the time.
    pub client_sent: Vec<(u64, Vec<u8>)>,
    /// Datagrams the server sent.
    pub server_sent: Vec<Vec<u8>>,
    /// Every block the caller takes is kept; a test may hold events back to exercise
    /// back-pressure.
    pub take_events: bool,
}

impl<const REQ: usize, const RESP: usize> World<REQ, RESP> {
    pub fn new(seed: u64, impairment: Impairment, config: ClientConfig) -> Self {
        World {
            now: 1_000_000,
            client: Client::new(config, TestRng(seed)),
            server: ScriptedServer::new(seed),
            network: Network {
                rng: TestRng(seed.wrapping_mul(31) ^ 0xA5A5),
                impairment,
                in_flight: BTreeMap::new(),
                sequence: 0,
            },
            outcomes: Vec::new(),
            client_sent: Vec::new(),
            server_sent: Vec::new(),
            take_events: true,
        }
    }

    pub fn instant(&self) -> Instant {
        Instant::from_millis(self.now)
    }

    /// Lets the client and server emit what they have, without advancing time.
    pub fn flush(&mut self) {
        let mut buf = [0u8; 1280];
        loop {
            let mut progressed = false;
            while let Some(len) = self.client.poll_transmit(self.instant(), &mut buf).unwrap() {
                self.client_sent.push((self.now, buf[..len].to_vec()));
                self.network
                    .send(self.now, Direction::ToServer, &buf[..len]);
                progressed = true;
            }
            for bytes in std::mem::take(&mut self.server.outbox) {
                self.network.send(self.now, Direction::ToClient, &bytes);
                self.server_sent.push(bytes);
                progressed = true;
            }
            if self.take_events {
                while let Some(event) = self.client.poll_event() {
                    self.outcomes.push(Outcome::from_event(event));
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Advances to the next thing that happens, before `limit`; false if nothing does.
    pub fn step(&mut self, limit: u64) -> bool {
        self.flush();
        let next = [
            self.network.next_arrival(),
            self.client.poll_timeout().map(Instant::as_millis),
            self.server.next_timer(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next.filter(|next| *next <= limit) else {
            return false;
        };
        self.now = self.now.max(next);
        while let Some(entry) = self.network.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (direction, bytes) = entry.remove();
            match direction {
                Direction::ToServer => self.server.handle_datagram(self.now, &bytes),
                Direction::ToClient => self.client.handle_datagram(&bytes, self.instant()),
            }
        }
        self.client.handle_timeout(self.instant());
        self.server.handle_timeout(self.now);
        self.flush();
        true
    }

    /// Runs until nothing happens before `now + duration_ms`, then sets the clock there.
    pub fn run_for(&mut self, duration_ms: u64) {
        let limit = self.now + duration_ms;
        while self.step(limit) {}
        self.now = limit;
        self.client.handle_timeout(self.instant());
        self.flush();
    }

    /// Runs until `done` holds or `duration_ms` passed; returns whether it held.
    pub fn run_until(&mut self, duration_ms: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let limit = self.now + duration_ms;
        while !done(self) {
            if !self.step(limit) {
                return done(self);
            }
        }
        true
    }

    /// Queues a request that must be accepted.
    pub fn request(&mut self, method: Code, options: &[(u16, &[u8])], payload: &[u8]) -> RequestId {
        self.client
            .request(&jeton_core::coap::Request::new(method, options, payload))
            .expect("the request is queued")
    }

    pub fn outcomes_for(&self, id: RequestId) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.id() == id).collect()
    }
}

/// `(number, value)` options for a path of segments.
pub fn path(segments: &[&'static str]) -> Vec<(u16, &'static [u8])> {
    segments
        .iter()
        .map(|segment| (option::URI_PATH, segment.as_bytes()))
        .collect()
}
