//! What the person sees: every [`UiEvent`] the token emits, the one-line form jeton-sim and the
//! RIOT shell print ([`UiEvent::line`]), and the [`Ui`] trait a platform implements.

use core::fmt;

use super::{CallEnd, RejectionReason, TokenError, UndecryptableReason, WithheldCode};

/// What the user sees: every UI event the token emits through [`Ui`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UiEvent<'a> {
    /// Login succeeded.
    LoggedIn {
        /// The user.
        user_id: &'a str,
        /// The device id (kept across reboots).
        device_id: &'a str,
    },
    /// Device keys and one-time keys are on the server.
    KeysPublished {
        /// One-time keys the server now holds.
        one_time_keys: u32,
    },
    /// A sync was processed.
    Synced,
    /// A message arrived.
    Message {
        /// The room.
        room_id: &'a str,
        /// The sender.
        sender: &'a str,
        /// The event id.
        event_id: &'a str,
        /// The text.
        body: &'a str,
        /// Whether it was end-to-end encrypted (false: shown as unencrypted).
        encrypted: bool,
        /// Whether the sending device was verified by SAS (encrypted messages only).
        sender_verified: bool,
    },
    /// An encrypted message could not be shown.
    Undecryptable {
        /// The room.
        room_id: &'a str,
        /// The sender.
        sender: &'a str,
        /// The event id.
        event_id: &'a str,
        /// Why.
        reason: UndecryptableReason,
    },
    /// A room key was rejected.
    RoomKeyRejected {
        /// Who sent it.
        sender: &'a str,
        /// Why.
        reason: RejectionReason,
    },
    /// A sender's device keeps a room key from this device (`m.room_key.withheld`); the
    /// messages of that session show [`UndecryptableReason::Withheld`].
    RoomKeyWithheld {
        /// Who sent the notice.
        sender: &'a str,
        /// The room of the key (`None` for a notice about the device as a whole).
        room_id: Option<&'a str>,
        /// Why.
        code: WithheldCode,
    },
    /// A device was not added to the device table.
    DeviceRejected {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
        /// Why.
        reason: RejectionReason,
    },
    /// A message is on flash and will be sent.
    Queued {
        /// The number [`Token::send_text`](super::Token::send_text) returned.
        local_id: u32,
        /// The room.
        room_id: &'a str,
    },
    /// The homeserver has the message.
    Delivered {
        /// The number [`Token::send_text`](super::Token::send_text) returned.
        local_id: u32,
        /// The room.
        room_id: &'a str,
        /// Its event id.
        event_id: &'a str,
    },
    /// A message was dropped without being sent.
    SendFailed {
        /// The number [`Token::send_text`](super::Token::send_text) returned.
        local_id: u32,
        /// Why.
        error: TokenError,
    },
    /// An invite waits for the user (`join` accepts it).
    Invited {
        /// The room.
        room_id: &'a str,
        /// Who invited.
        inviter: &'a str,
    },
    /// The token joined a room.
    Joined {
        /// The room.
        room_id: &'a str,
    },
    /// The token left a room (or was removed from it): its keys and members are forgotten.
    Left {
        /// The room.
        room_id: &'a str,
    },
    /// Someone joined a room the token is in; the room's next messages are readable by them.
    MemberJoined {
        /// The room.
        room_id: &'a str,
        /// Who joined.
        user_id: &'a str,
    },
    /// Someone left a room the token is in; the room's next messages are not readable by them.
    MemberLeft {
        /// The room.
        room_id: &'a str,
        /// Who left.
        user_id: &'a str,
    },
    /// A person the token talks to has a new device, which gets the room keys from now on.
    NewDevice {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
    },
    /// A device is gone from its user's devices: it gets no more room keys.
    DeviceRemoved {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
    },
    /// A room key was dropped to make room for a newer one: earlier messages of `sender` in the
    /// room that arrive from now on cannot be shown.
    RoomKeyDropped {
        /// The room.
        room_id: &'a str,
        /// Who sent the key.
        sender: &'a str,
    },
    /// The Olm session with a device was dropped to make room for another: the token starts a
    /// new one the next time either side needs it.
    OlmSessionDropped {
        /// The device's user.
        user_id: &'a str,
        /// The device.
        device_id: &'a str,
    },
    /// A file transfer of more than a few blocks advanced.
    FileProgress {
        /// Whether the token is sending (else receiving) the file.
        sending: bool,
        /// Bytes transferred.
        done: u64,
        /// Bytes in all.
        total: u64,
        /// The file's name.
        name: &'a str,
    },
    /// A file is uploaded, and its event is queued as message `local_id`.
    FileUploaded {
        /// The number of the event's message ([`UiEvent::Queued`], [`UiEvent::Delivered`]).
        local_id: u32,
        /// The file's size.
        size: u64,
        /// The file's name.
        name: &'a str,
    },
    /// A file arrived, its hash checked, and it is stored under `name`.
    FileReceived {
        /// The room.
        room_id: &'a str,
        /// The sender.
        sender: &'a str,
        /// Its size.
        size: u64,
        /// Its MIME type.
        mimetype: &'a str,
        /// The name it is stored under.
        name: &'a str,
    },
    /// The file just received ([`UiEvent::FileReceived`], stored under `name`) is a voice
    /// message (`m.audio` with `org.matrix.msc3245.voice`): shown as one besides its file line.
    #[cfg(feature = "voice")]
    VoiceReceived {
        /// The room.
        room_id: &'a str,
        /// The sender.
        sender: &'a str,
        /// How long it plays, in milliseconds, as its event says (0 when it does not).
        duration_ms: u32,
        /// The name its file is stored under.
        name: &'a str,
    },
    /// A file transfer failed; nothing was stored (receiving) or sent (sending).
    FileFailed {
        /// Why.
        error: crate::files::FileError,
        /// The file's name.
        name: &'a str,
    },
    /// Something failed; the token carries on.
    Error(TokenError),
    /// Cross-signing is set up: the user's keys, made on the token, are published and the
    /// token's device is signed by them (`Token::cross_sign`).
    #[cfg(feature = "cross-signing")]
    CrossSigned {
        /// The user.
        user_id: &'a str,
        /// The master key (unpadded base64), which the user's other devices show.
        master_key: &'a str,
    },
    /// Setting up cross-signing failed.
    #[cfg(feature = "cross-signing")]
    CrossSigningFailed {
        /// Why, in the person's words.
        reason: super::CrossSigningFailure,
    },
    /// A device asks to verify the token (a request, or a start without one):
    /// [`Token::confirm_verification`](super::Token::confirm_verification) accepts.
    VerificationRequested {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
    },
    /// The short authentication string to compare with the other device's screen:
    /// [`Token::confirm_verification`](super::Token::confirm_verification) if they match,
    /// [`Token::cancel_verification`](super::Token::cancel_verification) if not.
    ShortAuthString {
        /// The other device's user.
        user_id: &'a str,
        /// The other device.
        device_id: &'a str,
        /// Three numbers from 1000 to 9191.
        decimals: [u16; 3],
        /// Seven indices into [`jeton_olm::sas::EMOJI`], when both sides offered emoji.
        emoji: Option<[u8; 7]>,
    },
    /// The device is verified and remembered as such.
    DeviceVerified {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
    },
    /// A verification ended without verifying.
    VerificationCancelled {
        /// The other device's user.
        user_id: &'a str,
        /// The other device.
        device_id: &'a str,
        /// The cancel code (`m.mismatched_sas`, `m.timeout`, ...).
        code: &'a str,
        /// Whether the other device cancelled (false: the token did).
        by_peer: bool,
    },
    /// The protected link to the gateway has a new security context (EDHOC completed).
    LinkEstablished {
        /// The key id of the token's credential, as `jeton pair` printed it.
        kid: &'a [u8],
        /// The key id of the gateway's credential the token is paired with.
        gateway_kid: &'a [u8],
    },
    /// Something a sync carried could not be taken in and was skipped; the rest of the sync
    /// was taken in.
    Skipped {
        /// What it was: `to-device`, `timeline`, `state`, `invite`, `room`, `device-list`, ...
        item: &'a str,
        /// The room it belongs to (empty for none).
        room_id: &'a str,
        /// Who sent it (empty if unknown).
        sender: &'a str,
        /// Its event id, or its type for an event without one (empty if unknown).
        id: &'a str,
        /// Why.
        error: TokenError,
    },
    /// An event too large for the token: the gateway sent a stub in its place, and the token
    /// skipped it.
    EventTooLarge {
        /// The room (empty for a to-device message).
        room_id: &'a str,
        /// The event's type.
        event_type: &'a str,
        /// Its sender.
        sender: &'a str,
        /// Its event id (empty for a to-device message).
        event_id: &'a str,
        /// Its size in bytes, as the gateway encoded it.
        size: u64,
    },
    /// The homeserver left messages of a room out of a sync (a `limited` timeline) and the
    /// token could not fetch them all: messages before the ones it back-filled were not
    /// fetched, and the token does not show them.
    Gap {
        /// The room.
        room_id: &'a str,
        /// The earlier events the token did fetch, shown after this notice.
        fetched: u16,
    },
    /// A call rings; `decline` answers it ([`Token::decline`](super::Token::decline)).
    CallIncoming {
        /// The room.
        room_id: &'a str,
        /// Who calls.
        caller: &'a str,
        /// The call id (`decline` names it).
        call_id: &'a str,
    },
    /// A call stopped ringing.
    CallEnded {
        /// The room.
        room_id: &'a str,
        /// The call id.
        call_id: &'a str,
        /// Why.
        end: CallEnd,
    },
}

impl<'a> UiEvent<'a> {
    /// The event as one line of text, the form jeton-sim and the RIOT shell print so that
    /// people and scripts read the same thing from both: a kind word, then the fields
    /// separated by spaces, a message body last with `\` and newlines escaped. `None` for
    /// an event that prints nothing ([`UiEvent::Synced`]).
    pub fn line(&self) -> Option<EventLine<'_, 'a>> {
        (!matches!(self, UiEvent::Synced)).then_some(EventLine(self))
    }
}

/// One [`UiEvent`] as a line of text; see [`UiEvent::line`].
#[derive(Debug, Clone, Copy)]
pub struct EventLine<'e, 'a>(&'e UiEvent<'a>);

impl fmt::Display for EventLine<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            UiEvent::FileProgress { .. }
            | UiEvent::FileUploaded { .. }
            | UiEvent::FileReceived { .. }
            | UiEvent::FileFailed { .. } => file_line(self.0, f),
            #[cfg(feature = "voice")]
            UiEvent::VoiceReceived {
                room_id,
                sender,
                duration_ms,
                name,
            } => write!(
                f,
                "voice {room_id} {sender} {duration_ms} {}",
                EscapedBody(name)
            ),
            UiEvent::VerificationRequested { .. }
            | UiEvent::ShortAuthString { .. }
            | UiEvent::DeviceVerified { .. }
            | UiEvent::VerificationCancelled { .. }
            | UiEvent::LinkEstablished { .. } => device_line(self.0, f),
            UiEvent::Left { .. }
            | UiEvent::MemberJoined { .. }
            | UiEvent::MemberLeft { .. }
            | UiEvent::NewDevice { .. }
            | UiEvent::DeviceRemoved { .. }
            | UiEvent::RoomKeyDropped { .. }
            | UiEvent::OlmSessionDropped { .. } => table_line(self.0, f),
            UiEvent::Skipped { .. } | UiEvent::EventTooLarge { .. } | UiEvent::Gap { .. } => {
                sync_line(self.0, f)
            }
            UiEvent::CallIncoming {
                room_id,
                caller,
                call_id,
            } => write!(f, "call-incoming {room_id} {caller} {call_id}"),
            UiEvent::CallEnded {
                room_id,
                call_id,
                end,
            } => write!(f, "call-ended {room_id} {call_id} {end}"),
            event => message_line(event, f),
        }
    }
}

/// The line of an event of the login, keys, rooms and messages.
fn message_line(event: &UiEvent<'_>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match event {
        UiEvent::LoggedIn { user_id, device_id } => {
            write!(f, "logged-in {user_id} {device_id}")
        }
        UiEvent::KeysPublished { one_time_keys } => write!(f, "keys-published {one_time_keys}"),
        UiEvent::Synced => Ok(()),
        UiEvent::Message {
            room_id,
            sender,
            event_id,
            body,
            encrypted,
            sender_verified,
        } => write!(
            f,
            "message {room_id} {sender} {event_id} {} {}",
            match (encrypted, sender_verified) {
                (true, true) => "e2e-verified",
                (true, false) => "e2e",
                (false, _) => "unencrypted",
            },
            EscapedBody(body)
        ),
        UiEvent::Undecryptable {
            room_id,
            sender,
            event_id,
            reason,
        } => write!(f, "undecryptable {room_id} {sender} {event_id} {reason}"),
        UiEvent::RoomKeyRejected { sender, reason } => {
            write!(f, "room-key-rejected {sender} {reason}")
        }
        UiEvent::RoomKeyWithheld {
            sender,
            room_id,
            code,
        } => write!(
            f,
            "room-key-withheld {} {sender} {code}",
            room_id.unwrap_or("*")
        ),
        UiEvent::DeviceRejected {
            user_id,
            device_id,
            reason,
        } => write!(f, "device-rejected {user_id} {device_id} {reason}"),
        UiEvent::Queued { local_id, room_id } => write!(f, "queued {local_id} {room_id}"),
        UiEvent::Delivered {
            local_id,
            room_id,
            event_id,
        } => write!(f, "delivered {local_id} {room_id} {event_id}"),
        UiEvent::SendFailed { local_id, error } => write!(f, "send-failed {local_id} {error}"),
        UiEvent::Invited { room_id, inviter } => write!(f, "invited {room_id} {inviter}"),
        UiEvent::Joined { room_id } => write!(f, "joined {room_id}"),
        UiEvent::Error(error) => write!(f, "error {error}"),
        #[cfg(feature = "cross-signing")]
        UiEvent::CrossSigned {
            user_id,
            master_key,
        } => write!(f, "cross-signed {user_id} master {master_key}"),
        #[cfg(feature = "cross-signing")]
        UiEvent::CrossSigningFailed { reason } => {
            write!(f, "error cross-signing failed: {reason}")
        }
        _ => Ok(()),
    }
}

/// The line of an event of the tables' lifecycles: who is in a room, which devices get its
/// keys, what was dropped.
fn table_line(event: &UiEvent<'_>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match event {
        UiEvent::Left { room_id } => write!(f, "left {room_id}"),
        UiEvent::MemberJoined { room_id, user_id } => {
            write!(f, "member-joined {room_id} {user_id}")
        }
        UiEvent::MemberLeft { room_id, user_id } => write!(f, "member-left {room_id} {user_id}"),
        UiEvent::NewDevice { user_id, device_id } => write!(f, "new-device {user_id} {device_id}"),
        UiEvent::DeviceRemoved { user_id, device_id } => {
            write!(f, "device-removed {user_id} {device_id}")
        }
        UiEvent::RoomKeyDropped { room_id, sender } => {
            write!(f, "room-key-dropped {room_id} {sender}")
        }
        UiEvent::OlmSessionDropped { user_id, device_id } => {
            write!(f, "olm-session-dropped {user_id} {device_id}")
        }
        _ => Ok(()),
    }
}

/// The line of what a sync could not bring: an item skipped, an event too large, a gap. An
/// empty field prints as `-`.
fn sync_line(event: &UiEvent<'_>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    fn or_dash(text: &str) -> &str {
        if text.is_empty() { "-" } else { text }
    }
    match event {
        UiEvent::Skipped {
            item,
            room_id,
            sender,
            id,
            error,
        } => write!(
            f,
            "skipped {item} {} {} {} ({error})",
            or_dash(room_id),
            or_dash(sender),
            or_dash(id)
        ),
        UiEvent::EventTooLarge {
            room_id,
            event_type,
            sender,
            event_id,
            size,
        } => write!(
            f,
            "event-too-large {} {event_type} {sender} {} {size} skipped",
            if room_id.is_empty() {
                "to-device"
            } else {
                room_id
            },
            or_dash(event_id)
        ),
        UiEvent::Gap { room_id, fetched } => write!(
            f,
            "gap {room_id} earlier messages were not fetched ({fetched} back-filled)"
        ),
        _ => Ok(()),
    }
}

/// The line of a file transfer's event.
fn file_line(event: &UiEvent<'_>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match event {
        UiEvent::FileProgress {
            sending,
            done,
            total,
            name,
        } => write!(
            f,
            "file-progress {} {done}/{total} {}",
            if *sending { "send" } else { "receive" },
            EscapedBody(name)
        ),
        UiEvent::FileUploaded {
            local_id,
            size,
            name,
        } => write!(f, "file-uploaded {local_id} {size} {}", EscapedBody(name)),
        UiEvent::FileReceived {
            room_id,
            sender,
            size,
            mimetype,
            name,
        } => write!(
            f,
            "file-received {room_id} {sender} {size} {mimetype} {}",
            EscapedBody(name)
        ),
        UiEvent::FileFailed { error, name } => {
            write!(f, "file-failed {} ({error})", EscapedBody(name))
        }
        _ => Ok(()),
    }
}

/// The line of a verification's or the link's event.
fn device_line(event: &UiEvent<'_>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match event {
        UiEvent::VerificationRequested { user_id, device_id } => {
            write!(f, "verification-request {user_id} {device_id}")
        }
        UiEvent::ShortAuthString {
            user_id,
            device_id,
            decimals: [a, b, c],
            emoji,
        } => {
            write!(f, "sas {user_id} {device_id} {a} {b} {c}")?;
            if let Some(emoji) = emoji {
                f.write_str(" emoji")?;
                for (at, index) in emoji.iter().enumerate() {
                    let name = jeton_olm::sas::EMOJI
                        .get(usize::from(*index))
                        .map_or("?", |(_, name)| name);
                    f.write_str(if at == 0 { " " } else { "," })?;
                    f.write_str(name)?;
                }
            }
            Ok(())
        }
        UiEvent::DeviceVerified { user_id, device_id } => {
            write!(f, "verified {user_id} {device_id}")
        }
        UiEvent::VerificationCancelled {
            user_id,
            device_id,
            code,
            by_peer,
        } => write!(
            f,
            "verification-cancelled {user_id} {device_id} {code} {}",
            if *by_peer { "by-peer" } else { "by-token" }
        ),
        UiEvent::LinkEstablished { kid, gateway_kid } => {
            f.write_str("link-established kid=")?;
            hex(kid, f)?;
            f.write_str(" gateway-kid=")?;
            hex(gateway_kid, f)
        }
        _ => Ok(()),
    }
}

/// Bytes in lowercase hex, as `jeton pair` and the gateway's log write key ids.
fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
}

/// A message body on one line: `\` becomes `\\` and a newline `\n`, so the body can be
/// the last field of an event line and still be read back exactly.
#[derive(Debug, Clone, Copy)]
pub struct EscapedBody<'a>(pub &'a str);

impl fmt::Display for EscapedBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// Where UI events go: a display, a log, the simulator's stdout.
///
/// The token calls [`Ui::event`] from inside its input methods; the event borrows the
/// token's buffers, so an implementation copies what it keeps. It must not block.
pub trait Ui {
    /// Shows or records `event`.
    fn event(&mut self, event: &UiEvent<'_>);
}

impl<U: Ui + ?Sized> Ui for &mut U {
    fn event(&mut self, event: &UiEvent<'_>) {
        (**self).event(event);
    }
}

#[cfg(test)]
mod event_line_tests {
    use super::*;

    #[test]
    fn a_message_line_ends_with_its_body_escaped_onto_one_line() {
        let event = UiEvent::Message {
            room_id: "!r:s",
            sender: "@a:s",
            event_id: "$e",
            body: "two\nlines \\ here",
            encrypted: true,
            sender_verified: false,
        };
        let line = event.line().map(|l| l.to_string());
        assert_eq!(
            line.as_deref(),
            Some("message !r:s @a:s $e e2e two\\nlines \\\\ here")
        );
    }

    #[test]
    fn a_withheld_key_is_shown_with_its_reason_in_words() {
        let code = WithheldCode::from_code("m.unverified");
        let notice = UiEvent::RoomKeyWithheld {
            sender: "@a:s",
            room_id: Some("!r:s"),
            code,
        };
        assert_eq!(
            notice.line().map(|l| l.to_string()).as_deref(),
            Some(
                "room-key-withheld !r:s @a:s the sender's device does not trust this device yet (unverified)"
            )
        );
        let message = UiEvent::Undecryptable {
            room_id: "!r:s",
            sender: "@a:s",
            event_id: "$e",
            reason: UndecryptableReason::Withheld(WithheldCode::from_code("m.blacklisted")),
        };
        assert_eq!(
            message.line().map(|l| l.to_string()).as_deref(),
            Some(
                "undecryptable !r:s @a:s $e the room key was withheld: the sender's device has blocked this device (blacklisted)"
            )
        );
    }

    #[test]
    fn delivery_and_joins_print_their_ids_and_a_sync_prints_nothing() {
        let delivered = UiEvent::Delivered {
            local_id: 7,
            room_id: "!r:s",
            event_id: "$e",
        };
        assert_eq!(
            delivered.line().map(|l| l.to_string()).as_deref(),
            Some("delivered 7 !r:s $e")
        );
        let joined = UiEvent::Joined { room_id: "!r:s" };
        assert_eq!(
            joined.line().map(|l| l.to_string()).as_deref(),
            Some("joined !r:s")
        );
        assert!(UiEvent::Synced.line().is_none());
    }

    #[test]
    fn lifecycle_events_print_their_kind_and_ids() {
        let line = |event: UiEvent<'_>| event.line().map(|l| l.to_string()).unwrap_or_default();
        let (room_id, user_id, device_id) = ("!r:s", "@a:s", "DEV");
        assert_eq!(line(UiEvent::Left { room_id }), "left !r:s");
        assert_eq!(
            line(UiEvent::MemberJoined { room_id, user_id }),
            "member-joined !r:s @a:s"
        );
        assert_eq!(
            line(UiEvent::MemberLeft { room_id, user_id }),
            "member-left !r:s @a:s"
        );
        assert_eq!(
            line(UiEvent::NewDevice { user_id, device_id }),
            "new-device @a:s DEV"
        );
        assert_eq!(
            line(UiEvent::DeviceRemoved { user_id, device_id }),
            "device-removed @a:s DEV"
        );
        assert_eq!(
            line(UiEvent::RoomKeyDropped {
                room_id,
                sender: user_id
            }),
            "room-key-dropped !r:s @a:s"
        );
        assert_eq!(
            line(UiEvent::OlmSessionDropped { user_id, device_id }),
            "olm-session-dropped @a:s DEV"
        );
    }

    #[test]
    fn what_a_sync_could_not_bring_is_named_on_one_line() {
        let line = |event: UiEvent<'_>| event.line().map(|l| l.to_string()).unwrap();
        assert_eq!(
            line(UiEvent::EventTooLarge {
                room_id: "",
                event_type: "m.room.encrypted",
                sender: "@eve:s",
                event_id: "",
                size: 5_120,
            }),
            "event-too-large to-device m.room.encrypted @eve:s - 5120 skipped"
        );
        assert_eq!(
            line(UiEvent::Skipped {
                item: "state",
                room_id: "!r:s",
                sender: "@ninth:s",
                id: "$m9",
                error: TokenError::LimitReached(crate::matrix::Limit::Members),
            }),
            "skipped state !r:s @ninth:s $m9 (the limit of members per room is reached)"
        );
        assert_eq!(
            line(UiEvent::Gap {
                room_id: "!r:s",
                fetched: 20
            }),
            "gap !r:s earlier messages were not fetched (20 back-filled)"
        );
    }

    #[test]
    fn a_call_rings_and_ends_on_one_line_each() {
        let line = |event: UiEvent<'_>| event.line().map(|l| l.to_string()).unwrap();
        assert_eq!(
            line(UiEvent::CallIncoming {
                room_id: "!r:s",
                caller: "@a:s",
                call_id: "c1"
            }),
            "call-incoming !r:s @a:s c1"
        );
        assert_eq!(
            line(UiEvent::CallEnded {
                room_id: "!r:s",
                call_id: "c1",
                end: CallEnd::HungUp
            }),
            "call-ended !r:s c1 hung-up"
        );
    }
}
