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

    fn keep_own(&mut self, room: &str, sender: &str, line: &str) {
        self.0.keep_own(room, sender, line);
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

/// `@a:s` says "hi" in `!r:s`.
fn hi_arrives(token: &mut Token<Host>) {
    token.ui().0.on_event(&UiEvent::Message {
        room_id: "!r:s",
        sender: "@a:s",
        event_id: "$e",
        body: "hi",
        encrypted: true,
        sender_verified: false,
    });
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
fn help_on_one_command_gives_its_usage_and_what_its_arguments_may_be() {
    with_token(|token| {
        assert_eq!(
            answer(token, "help send", None),
            "usage: send <room> <text>\n  send an encrypted message\n  <room>: a room id, or \
             its number in `rooms`. <text>: the rest of the line. The message waits on flash \
             until the homeserver has it (`delivered`).\n"
        );
        assert!(answer(token, "help join", None).contains("an invite's number in `invites`"));
        assert_eq!(
            answer(token, "help fly", None),
            "error there is no command fly (help lists them)\n"
        );
        assert_eq!(answer(token, "help", None).lines().count(), COMMANDS.len());
    });
    let mut help = String::new();
    write_help_on(&mut help, &[entry("quit", "", "leave")], Some("quit")).unwrap();
    assert_eq!(help, "usage: quit\n  leave\n");
}

#[test]
fn a_room_number_names_the_room_its_list_shows_with_it() {
    let rooms = ["!a:s", "!b:s"];
    let named = |given| numbered(given, "rooms", || rooms.iter().copied());
    assert_eq!(named("2").ok().unwrap().as_str(), "!b:s");
    assert_eq!(named("!c:s").ok().unwrap().as_str(), "!c:s");
    for wrong in ["0", "3"] {
        let Err(Stopped::Refused(refusal)) = named(wrong) else {
            panic!("{wrong} named a room");
        };
        assert_eq!(
            refusal.to_string(),
            format!(
                "there is no {wrong} in `rooms`, which lists 2: give a number from it or a room id"
            )
        );
    }
    with_token(|token| {
        assert_eq!(
            answer(token, "join 1", None),
            "error there is no 1 in `invites`, which lists 0: give a number from it or a room id\n"
        );
        assert!(answer(token, "log 1", None).starts_with("error there is no 1 in `rooms`"));
    });
}

#[test]
fn log_keeps_what_the_person_sent_next_to_what_arrived() {
    with_token(|token| {
        hi_arrives(token);
        keep_own(token, "!r:s", "hello\nthere");
        assert_eq!(
            answer(token, "log", None),
            "log !r:s @a:s: hi\nlog !r:s me: hello\\nthere\n"
        );
    });
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
        hi_arrives(token);
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
fn the_events_that_wait_for_the_person_say_what_to_type() {
    let asked = UiEvent::VerificationRequested {
        user_id: "@a:s",
        device_id: "DEV",
    };
    assert_eq!(
        next_step(&asked),
        Some("to verify: confirm, then compare what both devices show; to refuse: cancel")
    );
    let invited = UiEvent::Invited {
        room_id: "!r:s",
        inviter: "@a:s",
    };
    assert!(
        next_step(&invited)
            .unwrap()
            .starts_with("to accept: join <room>")
    );
    assert_eq!(next_step(&UiEvent::Synced), None);
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

#[test]
fn xsign_takes_an_optional_password_and_says_what_it_needs() {
    assert_eq!(
        parse("xsign hunter2"),
        Line::Command(Command::CrossSign {
            password: Some("hunter2")
        })
    );
    with_token(|token| {
        assert_eq!(
            answer(token, "xsign", None),
            "error xsign needs your account password: xsign <password>, or start the shell with \
             one\n"
        );
        assert_eq!(
            answer(token, "xsign hunter2", None),
            "error the token is not logged in\n"
        );
    });
}
