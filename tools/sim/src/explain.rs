//! What a person reads when something fails: the token's errors said as what went wrong and
//! what to do, with the CoAP code in brackets for whoever reads the gateway's log, instead of
//! a bare code. Errors this does not know keep the token's own words.

use std::net::SocketAddr;

use jeton_core::coap::ExchangeError;
use jeton_core::console::Refusal;
use jeton_core::matrix::{self, CommandError, Limit, TokenError};

/// `error` in words, for the token talking to the gateway at `gateway`; `during_login`: the
/// error ended a login (no other request runs before it completes).
pub(crate) fn error(error: &TokenError, gateway: SocketAddr, during_login: bool) -> String {
    match error {
        TokenError::Server(code) if during_login => login_refused(*code),
        TokenError::Server(code) => server(*code),
        TokenError::Exchange(ExchangeError::Timeout) => format!(
            "no answer from the gateway at {gateway}: is jeton-gateway running there, and is \
             the token paired with it?"
        ),
        TokenError::Exchange(ExchangeError::Reset) => format!(
            "the gateway at {gateway} reset the exchange: it may have restarted (try again), \
             or it does not speak this profile"
        ),
        TokenError::LimitReached(limit) => self::limit(*limit),
        other => other.to_string(),
    }
}

/// Why a command was refused, in words.
pub(crate) fn refusal(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Token(CommandError::Failed(TokenError::LimitReached(l))) => limit(*l),
        other => other.to_string(),
    }
}

/// A full table or a value too long, with the token's bound and, where there is one, what
/// the person can do.
fn limit(limit: Limit) -> String {
    let (bound, what, todo) = match limit {
        Limit::Rooms => (matrix::MAX_ROOMS, "rooms", Some("leave one first")),
        Limit::Members => (matrix::MAX_MEMBERS, "members per room", None),
        Limit::TrackedUsers => (matrix::MAX_TRACKED_USERS, "users it tracks", None),
        Limit::Devices => (matrix::MAX_DEVICES, "devices", None),
        Limit::OlmSessions => (matrix::MAX_OLM_SESSIONS, "Olm sessions", None),
        Limit::InboundSessions => (matrix::MAX_INBOUND_SESSIONS, "room keys", None),
        Limit::PendingRoomKeys => (
            matrix::MAX_PENDING_ROOM_KEYS,
            "room keys awaiting verification",
            None,
        ),
        Limit::Outbox => (
            matrix::OUTBOX_DEPTH,
            "unsent messages",
            Some("wait until they are sent"),
        ),
        Limit::Invites => (
            matrix::MAX_INVITES,
            "pending invites",
            Some("join or refuse one first"),
        ),
        Limit::MessageLength => (
            matrix::MAX_MESSAGE_LEN,
            "bytes in a message",
            Some("send a shorter one"),
        ),
        Limit::IdLength => (matrix::MAX_ID_LEN, "bytes in an id", None),
        Limit::PasswordLength => (
            matrix::MAX_PASSWORD_LEN,
            "bytes of a password for xsign",
            None,
        ),
        _ => return format!("the limit of {limit} is reached"),
    };
    match todo {
        Some(todo) => format!("the token holds at most {bound} {what}: {todo}"),
        None => format!("the token holds at most {bound} {what}"),
    }
}

/// `class.detail`, as CoAP writes its codes.
fn dotted(code: u16) -> String {
    format!("{}.{:02}", code / 100, code % 100)
}

/// A login the homeserver (through the gateway) did not accept.
fn login_refused(code: u16) -> String {
    match code {
        401 | 403 => format!("login failed: wrong user or password ({})", dotted(code)),
        429 => format!(
            "login failed: the homeserver limits login attempts, wait a minute and try again ({})",
            dotted(code)
        ),
        _ => format!("login failed: {}", server(code)),
    }
}

/// A CoAP error code from the gateway, which maps the homeserver's HTTP status onto it.
fn server(code: u16) -> String {
    let what = match code {
        400 => "the homeserver refused the request as invalid",
        401 => {
            "the gateway or the homeserver did not accept the token's credentials: log in \
             again, or pair the token if the gateway wants the protected link"
        }
        403 => "the homeserver does not allow this",
        404 => "the homeserver knows no such room, user or event: check the id",
        413 => "the request is larger than the gateway accepts",
        429 => "the gateway or the homeserver asks the token to slow down: try again later",
        502 => {
            "the gateway cannot reach the homeserver: is the homeserver running? (the \
             gateway's log names the address it tries)"
        }
        503 => "the gateway is busy: try again shortly",
        504 => "the homeserver did not answer the gateway in time",
        500..=599 => "the gateway failed: its log says why",
        _ => return format!("the server answered {}", dotted(code)),
    };
    format!("{what} ({})", dotted(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "127.0.0.1:5683";

    fn said(e: TokenError, during_login: bool) -> String {
        error(&e, GATEWAY.parse().unwrap(), during_login)
    }

    #[test]
    fn codes_become_sentences_that_say_what_to_do() {
        assert_eq!(
            said(TokenError::Server(403), true),
            "login failed: wrong user or password (4.03)"
        );
        assert_eq!(
            said(TokenError::Server(502), true),
            "login failed: the gateway cannot reach the homeserver: is the homeserver running? \
             (the gateway's log names the address it tries) (5.02)"
        );
        assert_eq!(
            said(TokenError::Server(404), false),
            "the homeserver knows no such room, user or event: check the id (4.04)"
        );
        assert_eq!(
            said(TokenError::Exchange(ExchangeError::Timeout), false),
            "no answer from the gateway at 127.0.0.1:5683: is jeton-gateway running there, and \
             is the token paired with it?"
        );
        // A code with no sentence of its own still shows, in CoAP's notation.
        assert_eq!(
            said(TokenError::Server(402), false),
            "the server answered 4.02"
        );
        assert_eq!(said(TokenError::Crypto, false), "encryption failed");
        assert_eq!(
            refusal(&Refusal::Token(CommandError::Failed(
                TokenError::LimitReached(Limit::MessageLength)
            ))),
            "the token holds at most 512 bytes in a message: send a shorter one"
        );
    }
}
