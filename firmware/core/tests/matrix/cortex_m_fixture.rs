//! Records the core scenario the Cortex-M4 tier replays (`tests/cortex-m/src/bin/scenario.rs`):
//! the token logs in and uploads its keys, is invited to a room and joins it, receives a room
//! key over Olm and a Megolm message it decrypts, and sends a Megolm message, against this
//! crate's fake gateway and a vodozemac peer. Twice: in plain CoAP
//! (`tests/cortex-m/fixtures/core-scenario.bin`), and paired with its gateway over the
//! protected link (`core-scenario-link.bin`: EDHOC first, then OSCORE on every exchange, with
//! the gateway's end of `link_gateway.rs` in front of the fake gateway). Every call into the
//! token, every datagram either way and every UI line is written to the fixture, so that the
//! image can drive its own token through the same calls and demand the same datagrams and
//! lines, byte for byte.
//!
//! The token's random source is seeded and the clock is virtual, so its side is reproducible.
//! vodozemac draws its keys from the operating system; to make the peer reproducible too, the
//! peer's account, its Olm session to the token and its Megolm session are restored from
//! pickles kept next to the fixture (`core-scenario-peer.json`, `core-scenario-link-peer.json`),
//! made once when the fixture was generated. The test below runs the scenario and fails if the transcript differs from
//! the fixture, so the fixture cannot go stale. After a change to the token or the fake
//! gateway, regenerate both files with
//! `JETON_REGENERATE_FIXTURES=1 cargo test -p jeton-core --test matrix cortex_m`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::{Value, json};
use vodozemac::Curve25519PublicKey;
use vodozemac::megolm::{GroupSession, GroupSessionPickle};
use vodozemac::olm::{Account, AccountPickle, Session, SessionConfig, SessionPickle};

use super::gateway::{FakeGateway, TOKEN_USER};
use super::link_gateway::LinkGateway;
use super::{Flash, Peer, ROOM, SharedStore, encrypted_room_batch};
use super::{PEER, PEER_DEVICE};
use jeton_core::link::{KeyFile, ProtectedLink};
use jeton_core::matrix::{Config, Token, Ui, UiEvent};
use jeton_core::platform::{Instant, Platform};
use jeton_link::Identity;

use crate::support::TestRng;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/cortex-m/fixtures");
/// The key the peer's pickles are encrypted with: test data, not a secret.
const PICKLE_KEY: [u8; 32] = *b"jeton cortex-m fixture peer key.";
/// The token's random seed (the image reads it from the fixture's boot record).
const SEED: u64 = 0x6a65_746f_6e4d_3401;
const RECEIVED_TEXT: &str = "Hello token";
const SENT_TEXT: &str = "Hello peer";

/// The scenario without the link (plain CoAP) or over it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Plain,
    Link,
}

impl Variant {
    /// The fixture's path and its peer's.
    fn files(self) -> (String, String) {
        let name = match self {
            Variant::Plain => "core-scenario",
            Variant::Link => "core-scenario-link",
        };
        (
            format!("{FIXTURES}/{name}.bin"),
            format!("{FIXTURES}/{name}-peer.json"),
        )
    }
}

/// The fixture's record kinds. A record is `kind: u8, now_ms: u32 LE, len: u16 LE, payload`.
/// The image's reader (`tests/cortex-m/src/bin/scenario.rs`) keeps the same numbers.
mod kind {
    /// `Token::with_link` with the default `Config`; the payload is the seed (u64 LE), then
    /// the token's pairing material (`KeyFile::encode`) if it has any.
    pub(super) const BOOT: u8 = 0;
    /// `login`: user, NUL, password.
    pub(super) const LOGIN: u8 = 1;
    /// `join`: the room id.
    pub(super) const JOIN: u8 = 2;
    /// `send_text`: room id, NUL, text.
    pub(super) const SEND: u8 = 3;
    /// `handle_datagram` with the gateway's datagram.
    pub(super) const DATAGRAM: u8 = 4;
    /// `handle_timeout`.
    pub(super) const TIMEOUT: u8 = 5;
    /// `poll_transmit` returned this datagram.
    pub(super) const TRANSMIT: u8 = 6;
    /// `poll_transmit` returned nothing.
    pub(super) const QUIET: u8 = 7;
    /// The UI showed this line (`UiEvent::line`).
    pub(super) const UI: u8 = 8;
    /// A step of the scenario starts (its name), for the image's instruction counts.
    pub(super) const PHASE: u8 = 9;
}

#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<u8>>>);

impl Log {
    fn record(&self, kind: u8, now: u64, payload: &[u8]) {
        let mut log = self.0.borrow_mut();
        log.push(kind);
        log.extend_from_slice(&u32::try_from(now).unwrap().to_le_bytes());
        log.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_le_bytes());
        log.extend_from_slice(payload);
    }
}

/// The screen: every line is kept for the assertions and logged for the image.
struct RecordingUi {
    log: Log,
    lines: Rc<RefCell<Vec<String>>>,
}

impl Ui for RecordingUi {
    fn event(&mut self, event: &UiEvent<'_>) {
        if let Some(line) = event.line() {
            let line = line.to_string();
            self.log.record(kind::UI, 0, line.as_bytes());
            self.lines.borrow_mut().push(line);
        }
    }
}

/// The platform of the recording: the fixture's RNG, the flash, the logging UI.
struct RecordingPlatform;

impl Platform for RecordingPlatform {
    type Rng = TestRng;
    type Store = SharedStore;
    type Ui = RecordingUi;
}

/// The token, the fake gateway and a lossless link with 1 ms of latency, every token call
/// logged.
struct Recording {
    now: u64,
    token: Token<RecordingPlatform, ProtectedLink>,
    gw: FakeGateway,
    /// The gateway's end of the link, in front of `gw` (with the link).
    link: Option<LinkGateway>,
    /// `(arrival, to the gateway?, bytes)`, in arrival order.
    in_flight: VecDeque<(u64, bool, Vec<u8>)>,
    log: Log,
    lines: Rc<RefCell<Vec<String>>>,
}

impl Recording {
    fn boot(variant: Variant) -> Box<Self> {
        let log = Log::default();
        let lines = Rc::default();
        let now = 1_000;
        let mut boot = SEED.to_le_bytes().to_vec();
        let (link, material) = match variant {
            Variant::Plain => (None, None),
            Variant::Link => {
                let gateway = Identity::generate([0x61; 32], b"\x01", "test-gateway").unwrap();
                let token = Identity::generate([0x62; 32], b"\x02", "test-token").unwrap();
                let link = LinkGateway::new(gateway.clone(), vec![*token.credential()]);
                let material = KeyFile {
                    identity: token,
                    peer: Some(*gateway.credential()),
                };
                let mut file = [0u8; jeton_link::pairing::MAX_KEY_FILE_LEN];
                let len = material.encode(&mut file).unwrap();
                boot.extend_from_slice(&file[..len]);
                (Some(link), Some(material))
            }
        };
        log.record(kind::BOOT, now, &boot);
        let token = Token::with_link(
            Config::new([7u8; 32]),
            material,
            TestRng(SEED),
            SharedStore(
                Rc::new(RefCell::new(Flash::new())),
                crate::files::CountingFiles::default(),
            ),
            RecordingUi {
                log: log.clone(),
                lines: Rc::clone(&lines),
            },
            Instant::from_millis(now),
        )
        .unwrap();
        Box::new(Recording {
            now,
            token,
            gw: FakeGateway::new(),
            link,
            in_flight: VecDeque::new(),
            log,
            lines,
        })
    }

    fn instant(&self) -> Instant {
        Instant::from_millis(self.now)
    }

    fn phase(&self, name: &str) {
        self.log.record(kind::PHASE, self.now, name.as_bytes());
    }

    fn flush(&mut self) {
        let mut buf = [0u8; 1280];
        loop {
            let mut progressed = false;
            let now = self.instant();
            while let Some(len) = self.token.poll_transmit(now, &mut buf) {
                self.log.record(kind::TRANSMIT, self.now, &buf[..len]);
                self.in_flight
                    .push_back((self.now + 1, true, buf[..len].to_vec()));
                progressed = true;
            }
            self.log.record(kind::QUIET, self.now, &[]);
            if let Some(link) = &mut self.link {
                link.wrap_outbox(&mut self.gw);
            }
            for bytes in std::mem::take(&mut self.gw.outbox) {
                self.in_flight.push_back((self.now + 1, false, bytes));
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    fn step(&mut self, limit: u64) -> bool {
        self.flush();
        let next = [
            self.in_flight.front().map(|(at, _, _)| *at),
            self.token.poll_timeout().map(Instant::as_millis),
            self.gw.next_timer(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next.filter(|n| *n <= limit) else {
            return false;
        };
        self.now = self.now.max(next);
        while self
            .in_flight
            .front()
            .is_some_and(|(at, _, _)| *at <= self.now)
        {
            let (_, to_gateway, bytes) = self.in_flight.pop_front().unwrap();
            if to_gateway {
                match &mut self.link {
                    Some(link) => link.handle_datagram(&mut self.gw, self.now, &bytes),
                    None => self.gw.handle_datagram(self.now, &bytes),
                }
            } else {
                self.log.record(kind::DATAGRAM, self.now, &bytes);
                let now = self.instant();
                self.token.handle_datagram(&bytes, now);
            }
        }
        self.log.record(kind::TIMEOUT, self.now, &[]);
        let now = self.instant();
        self.token.handle_timeout(now);
        self.gw.handle_timeout(self.now);
        self.flush();
        true
    }

    fn run_until(&mut self, ms: u64, mut done: impl FnMut(&Recording) -> bool) {
        let limit = self.now + ms;
        while !done(self) {
            assert!(self.step(limit), "stuck: {:?}", self.lines.borrow());
        }
    }

    fn run_for(&mut self, ms: u64) {
        let limit = self.now + ms;
        while self.step(limit) {}
        self.now = limit;
    }

    fn saw(&self, line: &str) -> bool {
        self.lines.borrow().iter().any(|l| l == line)
    }
}

/// The peer's vodozemac state before the scenario: fresh (and saved) when regenerating,
/// restored from the saved pickles otherwise.
struct PeerPickles {
    account: String,
    group: String,
    olm: Option<String>,
}

impl PeerPickles {
    fn load(variant: Variant) -> Self {
        let (_, path) = variant.files();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}; regenerate with JETON_REGENERATE_FIXTURES=1"));
        let value: Value = serde_json::from_str(&text).unwrap();
        let field = |name: &str| value[name].as_str().unwrap().to_string();
        PeerPickles {
            account: field("account"),
            group: field("group"),
            olm: Some(field("olm")),
        }
    }

    fn peer(&self) -> Peer {
        let mut peer = Peer::new(PEER, PEER_DEVICE);
        peer.account = Account::from_pickle(
            AccountPickle::from_encrypted(&self.account, &PICKLE_KEY).unwrap(),
        );
        peer.group = GroupSession::from_pickle(
            GroupSessionPickle::from_encrypted(&self.group, &PICKLE_KEY).unwrap(),
        );
        peer
    }
}

/// Runs the scenario; returns the transcript and the peer's pickles.
fn record(variant: Variant, regenerate: bool) -> (Vec<u8>, PeerPickles) {
    let mut pickles = if regenerate {
        let mut peer = Peer::new(PEER, PEER_DEVICE);
        peer.account.generate_one_time_keys(5);
        PeerPickles {
            account: peer.account.pickle().encrypt(&PICKLE_KEY),
            group: peer.group.pickle().encrypt(&PICKLE_KEY),
            olm: None,
        }
    } else {
        PeerPickles::load(variant)
    };
    let mut peer = pickles.peer();
    let mut rec = Recording::boot(variant);

    if variant == Variant::Link {
        rec.phase("EDHOC handshake (link established)");
        rec.run_until(60_000, |r| r.token.link_state() == (true, true));
        assert_eq!(rec.link.as_ref().unwrap().handshakes, 1);
    }

    rec.phase("login + keys upload");
    let now = rec.instant();
    rec.log
        .record(kind::LOGIN, rec.now, b"token\0secret".as_slice());
    rec.token.login("token", "secret", now).unwrap();
    rec.run_until(60_000, |r| r.gw.processed.iter().any(|p| p == "v"));
    rec.run_for(1_000);
    let device = rec.gw.hs.device_id.clone().unwrap();
    assert!(rec.saw(&format!("logged-in {TOKEN_USER} {device}")));

    rec.phase("invite + join + device keys");
    peer.publish_generated(&mut rec.gw.hs);
    let invite = json!({"invite_state": {"events": [
        {"type": "m.room.member", "state_key": TOKEN_USER, "sender": PEER,
         "content": {"membership": "invite"}},
    ]}});
    let now = rec.now;
    rec.gw
        .push_sync(now, json!({"rooms": {"invite": {ROOM: invite}}}));
    rec.run_until(60_000, |r| r.saw(&format!("invited {ROOM} {PEER}")));
    let now = rec.instant();
    rec.log.record(kind::JOIN, rec.now, ROOM.as_bytes());
    rec.token.join(ROOM, now).unwrap();
    rec.run_until(60_000, |r| r.saw(&format!("joined {ROOM}")));
    let now = rec.now;
    rec.gw
        .push_sync(now, encrypted_room_batch(&[TOKEN_USER, PEER]));
    rec.run_until(60_000, |r| r.gw.processed.iter().any(|p| p == "3h"));
    rec.run_for(5_000);

    rec.phase("sync + Olm room key + Megolm decrypt");
    // The peer claims one of the token's one-time keys and starts an Olm session on it.
    let (token_curve, _) = Peer::token_keys(&rec.gw.hs, &device);
    let (_, otk) = rec
        .gw
        .hs
        .one_time_keys
        .get_mut(&(TOKEN_USER.to_string(), device.clone()))
        .unwrap()
        .remove(0);
    let session = match &pickles.olm {
        Some(pickle) => {
            Session::from_pickle(SessionPickle::from_encrypted(pickle, &PICKLE_KEY).unwrap())
        }
        None => {
            let session = peer
                .account
                .create_outbound_session(
                    SessionConfig::version_1(),
                    Curve25519PublicKey::from_base64(&token_curve).unwrap(),
                    Curve25519PublicKey::from_base64(otk["key"].as_str().unwrap()).unwrap(),
                )
                .unwrap();
            pickles.olm = Some(session.pickle().encrypt(&PICKLE_KEY));
            session
        }
    };
    peer.olm.insert(token_curve, session);
    let payload = peer.room_key_payload(&rec.gw.hs, &device);
    let to_device = peer.olm_event(&mut rec.gw.hs, &device, &payload);
    let event = peer.megolm_event("$m1", RECEIVED_TEXT);
    let now = rec.now;
    rec.gw.push_sync(
        now,
        json!({
            "to_device": {"events": [to_device]},
            "rooms": {"join": {ROOM: {"timeline": {"events": [event]}}}},
        }),
    );
    let shown = format!("message {ROOM} {PEER} $m1 e2e {RECEIVED_TEXT}");
    rec.run_until(60_000, |r| r.saw(&shown));
    rec.run_for(1_000);

    rec.phase("send (Olm key share + Megolm encrypt)");
    let now = rec.instant();
    rec.log.record(
        kind::SEND,
        rec.now,
        format!("{ROOM}\0{SENT_TEXT}").as_bytes(),
    );
    let local_id = rec.token.send_text(ROOM, SENT_TEXT, now).unwrap();
    let delivered = format!("delivered {local_id} {ROOM} ");
    rec.run_until(60_000, |r| {
        r.lines.borrow().iter().any(|l| l.starts_with(&delivered))
    });
    rec.run_for(1_000);

    // What a user of the peer device sees: the token's message, decrypted.
    peer.receive_to_device(&rec.gw.hs);
    assert_eq!(rec.gw.hs.sent.len(), 1);
    let (room, _, _, content) = &rec.gw.hs.sent[0];
    assert_eq!(room, ROOM);
    let (plaintext, _) = peer.decrypt(content).expect("the peer decrypts");
    assert_eq!(plaintext["content"]["body"], SENT_TEXT);
    assert!(
        !rec.lines.borrow().iter().any(|l| l.starts_with("error")),
        "{:?}",
        rec.lines.borrow()
    );
    if let Some(link) = &rec.link {
        // Every Matrix exchange went over OSCORE, the access token never in clear.
        assert_eq!((link.unprotected, link.rejected), (0, 0));
        assert!(link.access_token_sent > 0);
    }
    let transcript = rec.log.0.borrow().clone();
    (transcript, pickles)
}

/// Records `variant`, regenerating its files first when asked, and compares with its fixture.
fn check(variant: Variant) {
    let (fixture, peer_state) = variant.files();
    if std::env::var_os("JETON_REGENERATE_FIXTURES").is_some() {
        let (transcript, pickles) = record(variant, true);
        let name = std::path::Path::new(&fixture)
            .file_name()
            .unwrap()
            .to_string_lossy();
        let peer = json!({
            "note": format!("vodozemac pickles (key: PICKLE_KEY in firmware/core/tests/matrix/cortex_m_fixture.rs) of the test peer of {name}"),
            "account": pickles.account,
            "group": pickles.group,
            "olm": pickles.olm,
        });
        std::fs::write(
            &peer_state,
            serde_json::to_string_pretty(&peer).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(&fixture, &transcript).unwrap();
    }
    let (transcript, _) = record(variant, false);
    let recorded = std::fs::read(&fixture).unwrap();
    assert!(
        transcript == recorded,
        "{fixture} is stale ({} bytes recorded now, {} in the file); \
         regenerate it with JETON_REGENERATE_FIXTURES=1 cargo test -p jeton-core --test matrix cortex_m",
        transcript.len(),
        recorded.len()
    );
}

#[test]
fn cortex_m_fixture_is_what_this_harness_records() {
    check(Variant::Plain);
}

#[test]
fn cortex_m_link_fixture_is_what_this_harness_records() {
    check(Variant::Link);
}
