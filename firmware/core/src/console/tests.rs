use std::string::String;

use super::*;
use crate::matrix::{Config, Ui, UiEvent};
use crate::platform::Rng;
use crate::store::MemoryStore;

struct CountingRng(u8);

impl Rng for CountingRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            self.0 = self.0.wrapping_mul(5).wrapping_add(3);
            *byte = self.0;
        }
    }
}

/// A screen that keeps the room log, as both shells do.
#[derive(Default)]
struct Screen(RoomLog<2, 4, 80>);

impl Ui for Screen {
    fn event(&mut self, event: &UiEvent<'_>) {
        self.0.on_event(event);
    }
}

impl KeepsLog for Screen {
    fn write_log(&self, room: Option<&str>, out: &mut dyn Write) -> fmt::Result {
        self.0.write(room, out)
    }
}

struct Host;

impl Platform for Host {
    type Rng = CountingRng;
    type Store = MemoryStore<16>;
    type Ui = Screen;
}

/// Runs `test` on a fresh token, booted in place on the heap (a test thread's stack is
/// smaller than a token in a debug build).
fn with_token(test: impl FnOnce(&mut Token<Host>)) {
    let mut slot = Box::new(core::mem::MaybeUninit::uninit());
    let config = Config::new([1; 32]);
    let screen = Screen::default();
    let store = MemoryStore::new();
    test(
        Token::new_in(
            &mut slot,
            config,
            CountingRng(1),
            store,
            screen,
            Instant::ZERO,
        )
        .unwrap(),
    );
}

/// What the console answers to `line`, with or without the time of day.
fn answer(token: &mut Token<Host>, line: &str, unix_time_ms: Option<u64>) -> String {
    let clock = Clock {
        now: Instant::ZERO,
        unix_time_ms,
    };
    let mut out = String::new();
    assert!(run(token, line, clock, &mut out).unwrap(), "{line}");
    out
}

#[test]
fn a_line_parses_into_its_command_with_the_text_as_typed() {
    assert_eq!(
        parse("  send !r:s  hello,  world "),
        Line::Command(Command::Send {
            room: "!r:s",
            text: "hello,  world"
        })
    );
    assert_eq!(
        parse("login"),
        Line::Command(Command::Login {
            user: None,
            password: None
        })
    );
    assert_eq!(parse("   "), Line::Empty);
    assert_eq!(parse("quit now"), Line::Other("quit"));
}

#[test]
fn a_command_without_its_arguments_says_what_it_needs() {
    assert_eq!(
        parse("send !r:s"),
        Line::Incomplete("send needs a room id and a text")
    );
    assert_eq!(
        parse("verify @a:s"),
        Line::Incomplete("verify needs a user id and a device id")
    );
    with_token(|token| {
        assert_eq!(answer(token, "join", None), "error join needs a room id\n");
        assert_eq!(
            answer(token, "login alice", None),
            "error login needs a user and a password\n"
        );
    });
}

#[test]
fn help_lists_every_command_and_the_platforms_own() {
    let mut help = String::new();
    write_help(&mut help, &[entry("quit", "", "leave")]).unwrap();
    for entry in COMMANDS {
        assert!(help.contains(&format!("  {} ", entry.name)), "{help}");
    }
    assert!(help.ends_with("leave\n"), "{help}");
    assert_eq!(help.lines().count(), COMMANDS.len() + 1);
}

#[test]
fn commands_answer_in_the_shell_s_words() {
    with_token(|token| {
        assert_eq!(
            answer(token, "join !r:s", None),
            "error the token is not logged in\n"
        );
        let status = answer(token, "status", None);
        assert!(status.starts_with("status logged-in=false "), "{status}");
        assert!(
            !status.contains("link="),
            "a plain link shows none: {status}"
        );
        let keys = answer(token, "keys", None);
        let (keys, fingerprint) = keys.split_once('\n').unwrap();
        let ed25519 = keys.split("ed25519=").nth(1).unwrap();
        assert_eq!(
            fingerprint.replace(' ', ""),
            format!("fingerprint{ed25519}\n")
        );
        assert_eq!(&fingerprint[11..17], format!(" {} ", &ed25519[..4]));
    });
}

#[test]
fn request_without_the_time_of_day_is_refused_and_log_shows_messages() {
    with_token(|token| {
        let refused = answer(token, "request @a:s DEV", None);
        assert!(
            refused.starts_with("error request needs the time of day"),
            "{refused}"
        );
        token.ui().0.on_event(&UiEvent::Message {
            room_id: "!r:s",
            sender: "@a:s",
            event_id: "$e",
            body: "hi",
            encrypted: true,
            sender_verified: false,
        });
        assert_eq!(answer(token, "log", None), "log !r:s @a:s: hi\n");
        assert_eq!(answer(token, "log !other:s", None), "");
    });
}

#[test]
fn a_shell_learns_which_commands_were_refused_and_may_word_the_refusal() {
    with_token(|token| {
        let clock = Clock {
            now: Instant::ZERO,
            unix_time_ms: None,
        };
        let mut out = String::new();
        let join = Command::Join { room: "!r:s" };
        assert_eq!(
            execute(token, join, clock, &mut out).unwrap(),
            Outcome::Refused
        );
        assert_eq!(out, "error the token is not logged in\n");
        out.clear();
        let outcome = execute_explained(token, join, clock, &mut out, |refusal, out| {
            assert!(matches!(refusal, Refusal::Token(_)), "{refusal:?}");
            out.write_str("log in first")
        });
        assert_eq!(outcome.unwrap(), Outcome::Refused);
        assert_eq!(out, "error log in first\n");
        out.clear();
        assert_eq!(
            execute(token, Command::Rooms, clock, &mut out).unwrap(),
            Outcome::Done
        );
    });
}

#[test]
fn decline_takes_an_optional_call_id_and_says_when_nothing_rings() {
    assert_eq!(
        parse("decline c1"),
        Line::Command(Command::Decline { call: Some("c1") })
    );
    assert_eq!(
        parse("decline"),
        Line::Command(Command::Decline { call: None })
    );
    with_token(|token| {
        assert_eq!(
            answer(token, "decline", None),
            "error no call rings with that call id\n"
        );
    });
}
