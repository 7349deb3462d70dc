//! The token's core scenario on a Cortex-M4, against canned gateway responses: a
//! `jeton-core` [`Token`] logs in and uploads its keys, accepts an invite and joins the
//! room, receives a room key over Olm and a Megolm message it decrypts and shows, and sends
//! a Megolm message. Then the power is cycled: the token boots again from its store and
//! must be the same logged-in device.
//!
//! Built twice: as `scenario`, the token in plain CoAP, and with the `link` feature as
//! `scenario-link` (`tests/cortex-m/build` names it), the token paired with its gateway: it
//! runs EDHOC first, as a step of its own, and every Matrix exchange goes over OSCORE; the
//! reboot must resume the link's security context.
//!
//! The gateway's datagrams come from `fixtures/core-scenario.bin` (`core-scenario-link.bin`),
//! recorded on the host by `firmware/core/tests/matrix/cortex_m_fixture.rs` against the fake
//! gateway and a vodozemac peer (that test also fails when a fixture is stale). The image replays every call the
//! host made into its token, with the same seed and the same clock, and demands the same
//! outcome byte for byte: every datagram the token sends, every line it shows. On top it
//! checks what a user sees: the peer's text decrypted, the message sent as a Megolm event
//! to the room (over the link: every request protected, the access token never in clear),
//! delivered. Any difference fails the QEMU run.
//!
//! It reports the instructions of each step (all the token's work in it, datagrams,
//! timeouts and commands) and the peak stack, measured by painting the stack at each step's
//! start (boots included: the token is built in place, as on a device). The token lives in
//! a static, so `.bss` holds its RAM; its store lives in a
//! static named `JETON_FLASH_STAND_IN`, which `build` leaves out of the RAM figure because
//! a device keeps those records on flash.
#![no_std]
#![no_main]

use core::fmt::{self, Write as _};
use core::mem::MaybeUninit;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use jeton_core::coap::message::{Code, Message};
use jeton_core::coap::option;
#[cfg(feature = "link")]
use jeton_core::link::{KeyFile, ProtectedLink};
use jeton_core::matrix::{Config, Token, Ui, UiEvent};
use jeton_core::platform::{Instant, Platform};
use jeton_core::store::{RecordId, Store, StoreError};
use jeton_cortex_m::{
    FixedSeedRng, InstructionCounter, fail, fail_with, paint_stack, pass, stack_peak_since_paint,
};
use jeton_proto::TableVersion;
use jeton_proto::view::{Binary, EncryptedContent, MEGOLM_ALGORITHM, Value};

jeton_cortex_m::panic_handler!(report);

/// The recorded exchange; see `tests/cortex-m/fixtures/README.md`.
#[cfg(not(feature = "link"))]
static FIXTURE: &[u8] = include_bytes!("../../fixtures/core-scenario.bin");
#[cfg(feature = "link")]
static FIXTURE: &[u8] = include_bytes!("../../fixtures/core-scenario-link.bin");

/// What the peer wrote and what the token sends, as a user of either device reads them.
const RECEIVED_TEXT: &str = "Hello token";
const SENT_TEXT: &str = "Hello peer";
/// The room of the recorded scenario (firmware/core/tests/matrix: a room version 12 id).
const ROOM: &str = "!Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI";
const PEER: &str = "@peer:localhost";

/// The fixture's record kinds, as `cortex_m_fixture.rs` writes them.
mod kind {
    pub const BOOT: u8 = 0;
    pub const LOGIN: u8 = 1;
    pub const JOIN: u8 = 2;
    pub const SEND: u8 = 3;
    pub const DATAGRAM: u8 = 4;
    pub const TIMEOUT: u8 = 5;
    pub const TRANSMIT: u8 = 6;
    pub const QUIET: u8 = 7;
    pub const UI: u8 = 8;
    pub const PHASE: u8 = 9;
}

#[derive(Clone, Copy)]
struct Record {
    kind: u8,
    now: Instant,
    payload: &'static [u8],
}

impl Record {
    /// The payload's two NUL-separated text fields.
    fn two_texts(&self) -> (&'static str, &'static str) {
        let text = core::str::from_utf8(self.payload).unwrap_or_else(|_| fail("fixture text"));
        text.split_once('\0')
            .unwrap_or_else(|| fail("fixture record with two fields"))
    }

    fn text(&self) -> &'static str {
        core::str::from_utf8(self.payload).unwrap_or_else(|_| fail("fixture text"))
    }
}

/// `kind: u8, now_ms: u32 LE, len: u16 LE, payload` records.
#[derive(Clone)]
struct Records(&'static [u8]);

impl Iterator for Records {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let (&kind, rest) = self.0.split_first()?;
        let now = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
        let len = usize::from(u16::from_le_bytes(rest.get(4..6)?.try_into().ok()?));
        let payload = rest.get(6..6 + len)?;
        self.0 = rest.get(6 + len..)?;
        Some(Record {
            kind,
            now: Instant::from_millis(u64::from(now)),
            payload,
        })
    }
}

const STORE_BYTES: usize = 24 * 1024;
const STORE_RECORDS: usize = 48;

/// The token's records, packed back to back: what a device keeps on flash.
struct FlashStandIn {
    /// `(id, length)` in the order the records lie in `bytes`.
    index: [(RecordId, u16); STORE_RECORDS],
    records: usize,
    bytes: [u8; STORE_BYTES],
    used: usize,
    most_used: usize,
}

impl FlashStandIn {
    /// `(position in index, offset, length)` of record `id`.
    fn find(&self, id: RecordId) -> Option<(usize, usize, usize)> {
        let mut offset = 0;
        for (i, &(found, len)) in self.index.get(..self.records)?.iter().enumerate() {
            if found == id {
                return Some((i, offset, usize::from(len)));
            }
            offset += usize::from(len);
        }
        None
    }
}

impl Store for FlashStandIn {
    fn get(&mut self, id: RecordId, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let Some((_, offset, len)) = self.find(id) else {
            return Ok(None);
        };
        let (Some(dst), Some(src)) = (out.get_mut(..len), self.bytes.get(offset..offset + len))
        else {
            return Err(StoreError::BufferTooSmall);
        };
        dst.copy_from_slice(src);
        Ok(Some(len))
    }

    fn put(&mut self, id: RecordId, data: &[u8]) -> Result<(), StoreError> {
        self.remove(id)?;
        let len = u16::try_from(data.len()).map_err(|_| StoreError::Io)?;
        let (Some(slot), Some(dst)) = (
            self.index.get_mut(self.records),
            self.bytes.get_mut(self.used..self.used + data.len()),
        ) else {
            return Err(StoreError::Io);
        };
        dst.copy_from_slice(data);
        *slot = (id, len);
        self.records += 1;
        self.used += data.len();
        self.most_used = self.most_used.max(self.used);
        Ok(())
    }

    fn remove(&mut self, id: RecordId) -> Result<(), StoreError> {
        let Some((i, offset, len)) = self.find(id) else {
            return Ok(());
        };
        self.bytes.copy_within(offset + len..self.used, offset);
        self.index.copy_within(i + 1..self.records, i);
        self.records -= 1;
        self.used -= len;
        Ok(())
    }
}

/// The display: every line the token shows must be the next one the host's token showed.
struct Screen {
    expected: Records,
    received_shown: bool,
    delivered: bool,
}

/// Compares formatted text with expected bytes as it is written, without a buffer.
struct Compare {
    rest: &'static [u8],
    equal: bool,
}

impl fmt::Write for Compare {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.rest.strip_prefix(s.as_bytes()) {
            Some(rest) if self.equal => self.rest = rest,
            _ => self.equal = false,
        }
        Ok(())
    }
}

impl Ui for Screen {
    fn event(&mut self, event: &UiEvent<'_>) {
        match *event {
            UiEvent::Message {
                room_id,
                sender,
                body,
                encrypted,
                ..
            } if room_id == ROOM && sender == PEER && body == RECEIVED_TEXT && encrypted => {
                self.received_shown = true;
            }
            UiEvent::Delivered { room_id, .. } if room_id == ROOM => self.delivered = true,
            _ => {}
        }
        let Some(line) = event.line() else { return };
        let Some(expected) = self.expected.find(|r| r.kind == kind::UI) else {
            fail_with(format_args!(
                "FAILED: the token showed an extra line: {line}"
            ))
        };
        let mut compare = Compare {
            rest: expected.payload,
            equal: true,
        };
        let _ = write!(compare, "{line}");
        if !compare.equal || !compare.rest.is_empty() {
            fail_with(format_args!(
                "FAILED: the token showed\n  {line}\nwhere the host's showed\n  {}",
                expected.text()
            ));
        }
    }
}

/// The image's platform: the fixture's seeded RNG, the flash stand-in, the screen.
struct Scenario;

impl Platform for Scenario {
    type Rng = FixedSeedRng;
    type Store = &'static mut FlashStandIn;
    type Ui = Screen;
}

#[cfg(feature = "link")]
type ScenarioToken = Token<Scenario, ProtectedLink>;
#[cfg(not(feature = "link"))]
type ScenarioToken = Token<Scenario>;

static mut TOKEN: MaybeUninit<ScenarioToken> = MaybeUninit::uninit();
/// Zeroed at reset like all of `.bss`; all zeroes is an empty store.
#[unsafe(no_mangle)]
static mut JETON_FLASH_STAND_IN: MaybeUninit<FlashStandIn> = MaybeUninit::zeroed();

/// The OSCORE option (RFC 8613).
const OSCORE_OPTION: u16 = 9;

/// Checks a request the token sends over the link: an EDHOC message to
/// `/.well-known/edhoc`, or an OSCORE-protected request whose outer message shows neither the
/// Matrix path nor the access token. Returns whether it was protected.
fn check_protected(datagram: &[u8]) -> bool {
    let Ok(message) = Message::decode(datagram) else {
        fail("the token sent a datagram that is not CoAP")
    };
    if !message.header.code.is_request() {
        return false;
    }
    let mut path = message
        .options()
        .filter(|(number, _)| *number == option::URI_PATH)
        .map(|(_, value)| value);
    let edhoc = path.next() == Some(b".well-known".as_slice())
        && path.next() == Some(b"edhoc".as_slice())
        && path.next().is_none();
    if edhoc {
        return false;
    }
    let shown = |number| message.options().any(|(n, _)| n == number);
    if !shown(OSCORE_OPTION) || shown(option::URI_PATH) || shown(option::ACCESS_TOKEN) {
        fail("a request left the token without OSCORE");
    }
    true
}

/// Checks the room message the token sends in plain CoAP: a PUT of an `m.room.encrypted`
/// event (the `we` path) to the room, Megolm-encrypted.
fn check_room_send(datagram: &[u8]) -> bool {
    let Ok(message) = Message::decode(datagram) else {
        fail("the token sent a datagram that is not CoAP")
    };
    let mut path = message
        .options()
        .filter(|(number, _)| *number == option::URI_PATH)
        .map(|(_, value)| value);
    if path.next() != Some(b"we".as_slice()) {
        return false;
    }
    if message.header.code != Code::PUT || path.next() != Some(ROOM.as_bytes()) {
        fail("the room message is not a PUT to the room");
    }
    let Ok(Value::Map(content)) = Value::parse(message.payload, TableVersion::V2) else {
        fail("the room message's body is not a profile CBOR map")
    };
    let content = EncryptedContent(content);
    let ciphertext = content.megolm_ciphertext();
    if content.algorithm() != Ok(MEGOLM_ALGORITHM)
        || !matches!(ciphertext, Ok(Binary::Bytes(c)) if c.len() > SENT_TEXT.len())
        || content.session_id().is_err()
    {
        fail("the room message is not a Megolm event");
    }
    true
}

/// The boot record's payload: the RNG seed, then the token's pairing material if it has any.
fn boot_record(payload: &[u8]) -> (u64, &[u8]) {
    let Some((seed, key_file)) = payload.split_first_chunk::<8>() else {
        fail("boot record without a seed")
    };
    (u64::from_le_bytes(*seed), key_file)
}

/// The pairing material a device reads from its flash at boot.
#[cfg(feature = "link")]
fn pairing(key_file: &[u8]) -> Option<KeyFile> {
    let material = KeyFile::decode(key_file);
    Some(material.unwrap_or_else(|_| fail("the pairing material does not decode")))
}

#[cfg(not(feature = "link"))]
fn pairing(key_file: &[u8]) {
    if !key_file.is_empty() {
        fail("a fixture with pairing material, in an image without the link");
    }
}

/// Boots the token in place into its static, as the RIOT firmware does
/// (`Token::with_link_in` after reading its pairing material from flash, `Token::new_in`
/// without the link): only what the boot path needs passes through the stack, and boot's peak
/// counts it. Out of line, so that its frame is measured as boot's.
#[inline(never)]
fn boot(
    slot: &'static mut MaybeUninit<ScenarioToken>,
    seed: u64,
    key_file: &[u8],
    store: &'static mut FlashStandIn,
    screen: Screen,
    now: Instant,
) -> Option<&'static mut ScenarioToken> {
    #[cfg(feature = "link")]
    let booted = Token::with_link_in(
        slot,
        Config::new([7u8; 32]),
        pairing(key_file),
        FixedSeedRng(seed),
        store,
        screen,
        now,
    );
    #[cfg(not(feature = "link"))]
    let booted = {
        pairing(key_file);
        Token::new_in(
            slot,
            Config::new([7u8; 32]),
            FixedSeedRng(seed),
            store,
            screen,
            now,
        )
    };
    booted.ok()
}

/// A power cycle: the token boots again, in the same static, from what its store holds
/// (account, login, room, Olm and Megolm sessions), as a device does at every power-up, and
/// must be the same logged-in device. That boot's stack counts in the budget too. Out of
/// line, so that what it compares stays out of `main`'s frame (which every step's figure
/// includes).
#[inline(never)]
fn power_cycle(
    token: &'static mut ScenarioToken,
    key_file: &[u8],
    counter: &mut InstructionCounter,
    now: Instant,
) -> (&'static mut ScenarioToken, Step) {
    let link = token.link_state();
    let identity = token.identity();
    // SAFETY: `token`, the only reference into the two statics, is not used after this. The
    // token in TOKEN was booted by `main` and is dropped once, here, to make room for the
    // rebooted one; the records stay in their own static.
    let (slot, store) = unsafe {
        let slot = &mut *core::ptr::addr_of_mut!(TOKEN);
        slot.assume_init_drop();
        let store = (*core::ptr::addr_of_mut!(JETON_FLASH_STAND_IN)).assume_init_mut();
        (slot, store)
    };
    // The reboot shows nothing: any line fails the run.
    let screen = Screen {
        expected: Records(&[]),
        received_shown: false,
        delivered: false,
    };
    paint_stack();
    let (rebooted, instructions) =
        counter.measure(|| boot(slot, REBOOT_SEED, key_file, store, screen, now));
    let peak_stack = stack_peak_since_paint();
    let Some(token) = rebooted else {
        fail("the token did not boot again from its store")
    };
    let again = token.identity();
    if again.curve25519 != identity.curve25519
        || again.ed25519 != identity.ed25519
        || again.user_id.is_none()
        || again.device_id != identity.device_id
    {
        fail("the rebooted token is not the same logged-in device");
    }
    if token.link_state() != link {
        fail("the rebooted token did not resume its link's security context");
    }
    let step = Step {
        name: if link.0 {
            "reboot (account, login, sessions, link read back)"
        } else {
            "reboot (account, login, sessions read back)"
        },
        instructions,
        peak_stack,
        boot: true,
    };
    (token, step)
}

/// Runs a command of the user's and returns its instructions; a refusal fails the run.
fn command<E>(
    counter: &mut InstructionCounter,
    name: &str,
    f: impl FnOnce() -> Result<(), E>,
) -> Option<u64> {
    let (result, instructions) = counter.measure(f);
    if result.is_err() {
        fail_with(format_args!("FAILED: the token refused the {name} command"));
    }
    instructions
}

/// A step of the scenario: its name, the instructions the token spent in it, its peak stack,
/// and whether it is a boot.
struct Step {
    name: &'static str,
    instructions: Option<u64>,
    peak_stack: usize,
    boot: bool,
}

const STEPS: usize = 7;

/// The RNG seed of the reboot, which draws only the CoAP engine's seed.
const REBOOT_SEED: u64 = 0x5eed;

#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        fail("peripherals taken twice")
    };
    let mut counter = InstructionCounter::new(p.SYST);
    // SAFETY: main runs once; these are the only references to the two statics.
    let (mut token_slot, store) = unsafe {
        (
            Some(&mut *core::ptr::addr_of_mut!(TOKEN)),
            (*core::ptr::addr_of_mut!(JETON_FLASH_STAND_IN)).assume_init_mut(),
        )
    };
    let mut steps: heapless::Vec<Step, STEPS> = heapless::Vec::new();
    let mut step = Step {
        name: "boot (new device: Olm account created)",
        instructions: Some(0),
        peak_stack: 0,
        boot: true,
    };
    let mut records = Records(FIXTURE);
    let mut token: Option<&mut ScenarioToken> = None;
    let mut store = Some(store);
    let mut sends = 0;
    let mut protected = 0;
    let mut buf = [0u8; 1152];
    let mut last = Instant::ZERO;
    paint_stack();
    for record in records.by_ref() {
        if record.kind == kind::PHASE {
            step.peak_stack = stack_peak_since_paint();
            if steps.push(step).is_err() {
                fail("more steps than STEPS");
            }
            step = Step {
                name: record.text(),
                instructions: Some(0),
                peak_stack: 0,
                boot: false,
            };
            paint_stack();
            continue;
        }
        if record.kind == kind::UI {
            continue;
        }
        let now = record.now;
        last = now;
        let (transmitted, instructions) = match (record.kind, token.as_deref_mut()) {
            (kind::BOOT, None) => {
                let (seed, key_file) = boot_record(record.payload);
                let (Some(store), Some(token_slot)) = (store.take(), token_slot.take()) else {
                    fail("booted twice")
                };
                let screen = Screen {
                    expected: Records(FIXTURE),
                    received_shown: false,
                    delivered: false,
                };
                let (booted, n) =
                    counter.measure(|| boot(token_slot, seed, key_file, store, screen, now));
                let Some(booted) = booted else {
                    fail("the token did not boot")
                };
                token = Some(booted);
                (None, n)
            }
            (kind::LOGIN, Some(token)) => {
                let (user, password) = record.two_texts();
                (
                    None,
                    command(&mut counter, "login", || token.login(user, password, now)),
                )
            }
            (kind::JOIN, Some(token)) => {
                let room = record.text();
                (
                    None,
                    command(&mut counter, "join", || token.join(room, now)),
                )
            }
            (kind::SEND, Some(token)) => {
                let (room, text) = record.two_texts();
                let send = || token.send_text(room, text, now).map(drop);
                (None, command(&mut counter, "send", send))
            }
            (kind::DATAGRAM, Some(token)) => {
                let ((), n) = counter.measure(|| token.handle_datagram(record.payload, now));
                (None, n)
            }
            (kind::TIMEOUT, Some(token)) => {
                let ((), n) = counter.measure(|| token.handle_timeout(now));
                (None, n)
            }
            (kind::TRANSMIT | kind::QUIET, Some(token)) => {
                let (len, n) = counter.measure(|| token.poll_transmit(now, &mut buf));
                (Some(len.and_then(|len| buf.get(..len))), n)
            }
            _ => fail("fixture record out of order"),
        };
        step.instructions = step.instructions.zip(instructions).map(|(a, b)| a + b);
        match (record.kind, transmitted) {
            (kind::QUIET, Some(None)) | (_, None) => {}
            (kind::TRANSMIT, Some(Some(sent))) if sent == record.payload => {
                let paired = token.as_deref().is_some_and(|t| t.link_state().0);
                if paired && check_protected(sent) {
                    protected += 1;
                } else if !paired && check_room_send(sent) {
                    sends += 1;
                }
            }
            (_, Some(sent)) => fail_with(format_args!(
                "FAILED: at {} ms the token sent {:02x?}\nwhere the host's sent {:02x?}",
                now.as_millis(),
                sent,
                record.payload
            )),
        }
    }
    step.peak_stack = stack_peak_since_paint();
    if steps.push(step).is_err() {
        fail("more steps than STEPS");
    }
    if !records.0.is_empty() {
        fail("the fixture ends in a truncated record");
    }
    let Some(token) = token else {
        fail("the fixture never booted the token")
    };
    let outbox = token.outbox_len();
    let paired = token.link_state().0;
    let screen = token.ui();
    if screen.expected.any(|r| r.kind == kind::UI) {
        fail("the token showed fewer lines than the host's");
    }
    if !screen.received_shown {
        fail("the peer's message was not shown decrypted");
    }
    if (!paired && sends != 1) || (paired && protected == 0) || !screen.delivered || outbox != 0 {
        fail("the token's message was not sent once and delivered");
    }
    let Some(first) = Records(FIXTURE).next() else {
        fail("the fixture is empty")
    };
    let (_, key_file) = boot_record(first.payload);
    let (token, reboot) = power_cycle(token, key_file, &mut counter, last);
    if steps.push(reboot).is_err() {
        fail("more steps than STEPS");
    }
    let store = token.store();

    hprintln!(
        "{:<44} {:>12} {:>8}",
        "scenario step (jeton-core Token, thumbv7em)",
        "instructions",
        "stack B"
    );
    for step in &steps {
        jeton_cortex_m::report(step.name, step.instructions, step.peak_stack);
    }
    let peak = steps.iter().map(|s| s.peak_stack).max().unwrap_or(0);
    let after_boot = steps
        .iter()
        .filter(|s| !s.boot)
        .map(|s| s.peak_stack)
        .max()
        .unwrap_or(0);
    hprintln!(
        "shown: \"{}\" (decrypted); sent: \"{}\" (Megolm, delivered)",
        RECEIVED_TEXT,
        SENT_TEXT
    );
    if paired {
        hprintln!("{} requests over OSCORE, none in clear", protected);
    }
    hprintln!(
        "Token {} B; store: {} records, {} B at most (of {} B)",
        core::mem::size_of::<ScenarioToken>(),
        store.records,
        store.most_used,
        STORE_BYTES
    );
    hprintln!("peak-stack-bytes {}", peak);
    hprintln!("steady-stack-bytes {}", after_boot);
    pass()
}
