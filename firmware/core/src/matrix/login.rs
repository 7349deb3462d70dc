//! The login: who the token is on the homeserver (user and device id), its access token, its
//! sync filter and whether its device keys are published, on flash in [`record::LOGIN`].
//!
//! A password login keeps the device id of an earlier login, so that a token that logs in
//! again stays the same device for its peers; the password goes into the request and is not
//! kept. The filter is created once after the login and keeps sync to what the token reads.

use minicbor::Decoder;
use minicbor::Encoder;
use minicbor::encode::write::Cursor;

use jeton_proto::TableVersion;
use jeton_proto::path::endpoint;
use jeton_proto::view::{Value, ViewError};

use super::bodies::{BodyEncoder, cbor, key};
use super::flash::{Flash, corrupt, text};
use super::*;
use crate::store::record;

/// Event types the token reads from a room's state and timeline.
const ROOM_EVENT_TYPES: [&str; 4] = [
    "m.room.encrypted",
    "m.room.encryption",
    "m.room.member",
    "m.room.message",
];

/// Call event types the token reads from a room's timeline besides those
/// ([`super::calls`]); an encrypted room's come as `m.room.encrypted`.
const CALL_EVENT_TYPES: [&str; 8] = [
    "m.call.invite",
    "m.call.hangup",
    "m.call.answer",
    "m.call.select_answer",
    "m.call.reject",
    "m.call.notify",
    "org.matrix.msc4075.rtc.notification",
    "m.rtc.notification",
];

/// Login state kept in [`record::LOGIN`].
#[derive(Clone, Debug, Default)]
pub(super) struct Login {
    pub(super) user_id: UserId,
    pub(super) device_id: DeviceId,
    pub(super) access_token: String<MAX_ACCESS_TOKEN_LEN>,
    pub(super) filter_id: String<MAX_CURSOR_LEN>,
    pub(super) keys_uploaded: bool,
}

impl Login {
    /// Writes the login to flash.
    pub(super) fn save<S: Store>(&self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        flash.put(record::LOGIN, |e| {
            e.array(5)?
                .str(&self.user_id)?
                .str(&self.device_id)?
                .str(&self.access_token)?
                .str(&self.filter_id)?
                .bool(self.keys_uploaded)?;
            Ok(())
        })
    }

    /// Reads the login from flash. Out of line: its temporaries stay out of the boot's frame,
    /// under which every other load of a boot runs.
    #[inline(never)]
    pub(super) fn load<S: Store>(flash: &mut Flash<S>) -> Result<Option<Login>, TokenError> {
        let id = record::LOGIN;
        let Some((meta, _)) = flash.get(id)? else {
            return Ok(None);
        };
        let mut d = Decoder::new(meta);
        d.array().map_err(corrupt(id))?;
        Ok(Some(Login {
            user_id: text(&mut d, id)?,
            device_id: text(&mut d, id)?,
            access_token: text(&mut d, id)?,
            filter_id: text(&mut d, id)?,
            keys_uploaded: d.bool().map_err(corrupt(id))?,
        }))
    }
}

/// The `/login` body for a password login, keeping the device id when there is one.
fn login_body(
    out: &mut [u8],
    user: &str,
    password: &str,
    device_id: Option<&str>,
    display_name: &str,
) -> Result<usize, TokenError> {
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(if device_id.is_some() { 5 } else { 4 }))?;
    password_fields(&mut e, user, password)?;
    if let Some(device_id) = device_id {
        key(&mut e, "device_id")?;
        cbor(e.str(device_id))?;
    }
    key(&mut e, "initial_device_display_name")?;
    cbor(e.str(display_name))?;
    Ok(e.writer().position())
}

/// The three fields of a password login (`type`, `identifier` of `user`, `password`), as
/// `/login` and user-interactive auth's `m.login.password` stage take them.
pub(super) fn password_fields(
    e: &mut BodyEncoder<'_>,
    user: &str,
    password: &str,
) -> Result<(), TokenError> {
    key(e, "type")?;
    cbor(e.str("m.login.password"))?;
    key(e, "identifier")?;
    cbor(e.map(2))?;
    key(e, "type")?;
    cbor(e.str("m.id.user"))?;
    key(e, "user")?;
    cbor(e.str(user))?;
    key(e, "password")?;
    cbor(e.str(password))?;
    Ok(())
}

/// A filter that keeps sync small: only the event fields and room event types the token
/// reads, short timelines, no presence, account data, receipts or typing.
fn filter_body(out: &mut [u8]) -> Result<usize, TokenError> {
    let mut e = Encoder::new(Cursor::new(out));
    // The types of `lists`, one after the other.
    let types = |e: &mut Encoder<Cursor<&mut [u8]>>, lists: &[&[&str]]| -> Result<(), TokenError> {
        key(e, "types")?;
        cbor(e.array(lists.iter().map(|l| l.len() as u64).sum()))?;
        for item in lists.iter().copied().flatten() {
            cbor(e.str(item))?;
        }
        Ok(())
    };
    let none = |e: &mut Encoder<Cursor<&mut [u8]>>| -> Result<(), TokenError> {
        cbor(e.map(1))?;
        types(e, &[])
    };
    cbor(e.map(4))?;
    key(&mut e, "event_fields")?;
    // Inside `content`, only what the token reads: the homeserver leaves out the rest (the
    // deprecated Megolm sender_key and device_id, 49 bytes an event, formatting, relations).
    let fields = [
        "type",
        "sender",
        "state_key",
        "event_id",
        "room_id",
        "content.membership",
        "content.algorithm",
        "content.rotation_period_ms",
        "content.rotation_period_msgs",
        "content.ciphertext",
        "content.session_id",
        "content.msgtype",
        "content.body",
        "content.call_id",
        "content.version",
        "content.lifetime",
        "content.invitee",
        "content.notify_type",
        "content.notification_type",
        "unsigned.age",
    ];
    cbor(e.array(fields.len() as u64))?;
    for field in fields {
        cbor(e.str(field))?;
    }
    key(&mut e, "presence")?;
    none(&mut e)?;
    key(&mut e, "account_data")?;
    none(&mut e)?;
    key(&mut e, "room")?;
    cbor(e.map(4))?;
    key(&mut e, "ephemeral")?;
    none(&mut e)?;
    key(&mut e, "account_data")?;
    none(&mut e)?;
    key(&mut e, "state")?;
    cbor(e.map(1))?;
    types(&mut e, &[&ROOM_EVENT_TYPES])?;
    key(&mut e, "timeline")?;
    cbor(e.map(2))?;
    key(&mut e, "limit")?;
    cbor(e.u8(10))?;
    types(&mut e, &[&ROOM_EVENT_TYPES, &CALL_EVENT_TYPES])?;
    Ok(e.writer().position())
}

/// A response's top-level map.
fn response_map(body: &[u8]) -> Result<jeton_proto::view::Map<'_>, TokenError> {
    match Value::parse(body, TableVersion::V2)? {
        Value::Map(map) => Ok(map),
        _ => Err(TokenError::Malformed(ViewError::WrongType { offset: 0 })),
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Starts a password login.
    pub(super) fn start_login(
        &mut self,
        coap: &mut Coap,
        user: &str,
        password: &str,
    ) -> Result<(), TokenError> {
        let device_id = Login::load(&mut self.env.flash)?.map(|login| login.device_id);
        let len = login_body(
            &mut self.env.work,
            user,
            password,
            device_id.as_deref(),
            &self.env.settings.device_display_name,
        )?;
        self.start(coap, Operation::Login, Code::POST, &[endpoint::LOGIN], len)
    }

    /// The login succeeded: the login is on flash before the person is told.
    pub(super) fn on_login(&mut self, body: &[u8]) -> Result<(), TokenError> {
        let map = response_map(body)?;
        let text = |name: &'static str| -> Result<&str, TokenError> {
            match map.get(name)? {
                Some(Value::Text(t)) => Ok(t),
                _ => Err(TokenError::Malformed(ViewError::Missing { field: name })),
            }
        };
        let previous = Login::load(&mut self.env.flash)?;
        let device_id: DeviceId = bounded(text("device_id")?)?;
        let keys_uploaded = previous
            .as_ref()
            .is_some_and(|p| p.keys_uploaded && p.device_id == device_id);
        let login = Login {
            user_id: bounded(text("user_id")?)?,
            device_id,
            access_token: bounded(text("access_token")?)?,
            filter_id: previous.map(|p| p.filter_id).unwrap_or_default(),
            keys_uploaded,
        };
        login.save(&mut self.env.flash)?;
        self.env.ui.event(&UiEvent::LoggedIn {
            user_id: &login.user_id,
            device_id: &login.device_id,
        });
        // Track the own user, for the user's other devices.
        let own = login.user_id.clone();
        self.login = Some(login);
        self.gateway.forget_all();
        self.track(&own);
        Ok(())
    }

    /// Creates the sync filter for `user`.
    pub(super) fn start_filter(&mut self, coap: &mut Coap, user: &str) -> Result<(), TokenError> {
        let len = filter_body(&mut self.env.work)?;
        self.start(
            coap,
            Operation::Filter,
            Code::POST,
            &[endpoint::FILTER, user],
            len,
        )
    }

    /// The filter is created: its id is on flash with the login.
    pub(super) fn on_filter(&mut self, body: &[u8]) -> Result<(), TokenError> {
        let map = response_map(body)?;
        let Some(Value::Text(filter_id)) = map.get("filter_id")? else {
            return Err(TokenError::Malformed(ViewError::Missing {
                field: "filter_id",
            }));
        };
        let filter_id = bounded(filter_id)?;
        if let Some(login) = &mut self.login {
            login.filter_id = filter_id;
            login.save(&mut self.env.flash)?;
        }
        Ok(())
    }
}
