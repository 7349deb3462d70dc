//! The withheld notices: what senders' devices said of the room keys they keep from the token.
//!
//! A sender's device that keeps a key from the token says so with `m.room_key.withheld` (a
//! to-device event in the clear): the notice is shown ([`UiEvent::RoomKeyWithheld`]) and
//! remembered against its session (or, for `m.no_olm` without one, against the sender), so that
//! the session's messages say why they cannot be read ([`UndecryptableReason::Withheld`]) rather
//! than that no key came. A key that does come for the session forgets the notice. Notices live
//! in RAM only, the last [`MAX_WITHHELD_NOTICES`] of them.

use jeton_proto::view::{Binary, Map, Value};

use super::super::bodies::binary32;
use super::*;

/// The to-device event type by which a sender's device says it keeps a room key from this one.
pub(in crate::matrix) const WITHHELD_EVENT: &str = "m.room_key.withheld";

/// An `m.room_key.withheld` notice, kept to say why a session's messages cannot be read.
pub(in crate::matrix) struct Withheld {
    /// Who sent it about which session: [`withheld_tag`].
    tag: [u8; 8],
    code: WithheldCode,
}

/// Names a withheld notice by its sender and the session it is about (`None`: the sender's
/// device as a whole; `m.no_olm` names no session): the first 8 bytes of SHA-256 over both.
/// Small enough for the token's RAM, and no user can pick an id whose notices pass for
/// another's.
fn withheld_tag(sender: &str, session_id: Option<&[u8; 32]>) -> [u8; 8] {
    let sender = sender.as_bytes();
    let hash = match session_id {
        Some(session_id) => crate::matrix::sync::hash_parts(&[sender, session_id]),
        None => crate::matrix::sync::hash_parts(&[sender]),
    };
    let [a, b, c, d, e, f, g, h, ..] = hash;
    [a, b, c, d, e, f, g, h]
}

impl RoomKeys {
    /// Remembers `notice`, in place of an earlier one of the same sender about the same
    /// session, else pushing out the oldest.
    fn remember_withheld(&mut self, notice: Withheld) {
        self.withheld.retain(|w| w.tag != notice.tag);
        if self.withheld.is_full() {
            self.withheld.remove(0);
        }
        let _ = self.withheld.push(notice);
    }

    /// Why `sender` withheld the key of session `session_id`: its notice about the session, else
    /// one about its device as a whole.
    pub(super) fn withheld(&self, sender: &str, session_id: &[u8; 32]) -> Option<WithheldCode> {
        let code = |tag: [u8; 8]| self.withheld.iter().find(|w| w.tag == tag).map(|w| w.code);
        code(withheld_tag(sender, Some(session_id))).or_else(|| code(withheld_tag(sender, None)))
    }

    /// Forgets the notices a room key of `sender` for `session_id` answers: the one about that
    /// session, and the sender's about its device as a whole (the key came over Olm after all).
    pub(super) fn forget_withheld(&mut self, sender: &str, session_id: &[u8; 32]) {
        let answered = [
            withheld_tag(sender, Some(session_id)),
            withheld_tag(sender, None),
        ];
        self.withheld.retain(|w| !answered.contains(&w.tag));
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Takes `sender`'s `m.room_key.withheld` notice (`content`): remembered and shown. One
    /// without a `code` is shown as a malformed room key; one without a readable `session_id`
    /// is taken as about the sender's device as a whole, as `m.no_olm` is.
    pub(in crate::matrix) fn on_room_key_withheld(&mut self, sender: &str, content: Map<'_>) {
        let text = |name| match content.get(name) {
            Ok(Some(Value::Text(text))) => Some(text),
            _ => None,
        };
        let Some(code) = text("code").map(WithheldCode::from_code) else {
            self.env.ui.event(&UiEvent::RoomKeyRejected {
                sender,
                reason: RejectionReason::Malformed,
            });
            return;
        };
        let session_id = match content.get("session_id") {
            Ok(Some(Value::Bytes(bytes))) => binary32(Binary::Bytes(bytes)),
            Ok(Some(Value::Text(text))) => binary32(Binary::Base64(text)),
            _ => None,
        };
        self.room_keys.remember_withheld(Withheld {
            tag: withheld_tag(sender, session_id.as_ref()),
            code,
        });
        self.env.ui.event(&UiEvent::RoomKeyWithheld {
            sender,
            room_id: text("room_id"),
            code,
        });
    }
}
