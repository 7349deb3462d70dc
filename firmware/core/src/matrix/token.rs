//! The token's face to the platform: the inputs it takes (datagrams, timeouts, the person's
//! commands), what it shows back, and `drive`, which hands the CoAP engine's events to the link
//! or the client and starts what is due after every input.

use core::fmt;

use heapless::String;

use super::*;
use crate::coap::Client;
use crate::link::{Incoming, Link, LinkStats, Outgoing, PlainLink};
use crate::platform::Platform;

/// The token: its Matrix client, the CoAP engine under it and the link under that, on
/// platform `P` ([`Platform`]: its RNG, flash and display) and link `L` ([`Link`]: plain CoAP
/// by default, `ProtectedLink` with the feature `link`). See
/// the [module documentation](super).
pub struct Token<P: Platform, L: Link = PlainLink> {
    pub(super) coap: Client<TransportRng, REQUEST_BYTES, RESPONSE_BYTES>,
    pub(super) link: L,
    pub(super) core: Core<P::Rng, P::Store, P::Ui>,
}

impl<P: Platform, L: Link + fmt::Debug> fmt::Debug for Token<P, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Token")
            .field("logged_in", &self.core.login.is_some())
            .field("sync", &self.core.sync)
            .field("operation", &self.core.operation)
            .field("coap", &self.coap)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// The token's state at a glance, for the `status` command. Its `Display` is the line
/// jeton-sim and the RIOT shell print.
#[derive(Clone, Copy, Debug)]
pub struct Status<'a> {
    /// Whether the token is logged in.
    pub logged_in: bool,
    /// The user, once logged in.
    pub user_id: Option<&'a str>,
    /// The device id, once logged in.
    pub device_id: Option<&'a str>,
    /// Rooms the token is in.
    pub rooms: usize,
    /// Messages waiting in the outbox.
    pub outbox: usize,
    /// The CoAP engine's counters.
    pub transport: crate::coap::ClientStats,
}

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status logged-in={} user={} device={} rooms={} outbox={} datagrams-sent={} retransmissions={}",
            self.logged_in,
            self.user_id.unwrap_or("-"),
            self.device_id.unwrap_or("-"),
            self.rooms,
            self.outbox,
            self.transport.datagrams_sent,
            self.transport.retransmissions,
        )
    }
}

/// How full each table of the token is, against its capacity ([`super::lifecycles`]). Its
/// `Display` is a line in the style of [`Status`]'s: `tables rooms=<n>/<cap> ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occupancy {
    /// Rooms the token is in.
    pub rooms: usize,
    /// Users whose devices the token tracks.
    pub tracked_users: usize,
    /// Devices of tracked users.
    pub devices: usize,
    /// Olm sessions.
    pub olm_sessions: usize,
    /// Inbound Megolm sessions (room keys held).
    pub room_keys: usize,
    /// Room keys waiting for their room, sender or device.
    pub waiting_keys: usize,
    /// Messages in the outbox.
    pub outbox: usize,
}

impl fmt::Display for Occupancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tables rooms={}/{MAX_ROOMS} tracked-users={}/{MAX_TRACKED_USERS} devices={}/{MAX_DEVICES} \
             olm-sessions={}/{MAX_OLM_SESSIONS} room-keys={}/{MAX_INBOUND_SESSIONS} \
             waiting-keys={}/{MAX_PENDING_ROOM_KEYS} outbox={}/{OUTBOX_DEPTH}",
            self.rooms,
            self.tracked_users,
            self.devices,
            self.olm_sessions,
            self.room_keys,
            self.waiting_keys,
            self.outbox,
        )
    }
}

impl<P: Platform, L: Link> Token<P, L> {
    /// How full each table is.
    pub fn occupancy(&self) -> Occupancy {
        let core = &self.core;
        Occupancy {
            rooms: core.rooms.iter().count(),
            tracked_users: core.devices.tracked_len(),
            devices: core.devices.len(),
            olm_sessions: core.sessions.len(),
            room_keys: core.room_keys.len(),
            waiting_keys: core.pending_keys.len(),
            outbox: core.outbox.len(),
        }
    }

    /// Feeds a datagram from the gateway.
    #[inline(never)]
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        match self
            .link
            .incoming(datagram, &mut self.core.env.flash.scratch, now)
        {
            Incoming::Pass => self.coap.handle_datagram(datagram, now),
            Incoming::Rewritten(len) => {
                let plain = self.core.env.flash.scratch.get(..len).unwrap_or_default();
                self.coap.handle_datagram(plain, now);
            }
            Incoming::Drop => {}
            Incoming::Fail(message_id) => {
                // A RST for the ACK's id fails its exchange as if the gateway refused it.
                let [high, low] = message_id.to_be_bytes();
                self.coap.handle_datagram(&[0x70, 0x00, high, low], now);
            }
        }
        self.drive(now);
    }

    /// Wakes the token when [`Token::poll_timeout`]'s instant has come.
    #[inline(never)]
    pub fn handle_timeout(&mut self, now: Instant) {
        self.coap.handle_timeout(now);
        self.drive(now);
    }

    /// When the token next needs [`Token::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let backoff = self
            .core
            .operation
            .deadline()
            .filter(|_| self.core.login.is_some());
        let sync_retry = self
            .core
            .sync
            .deadline()
            .filter(|_| self.core.login.is_some());
        [
            self.coap.poll_timeout(),
            backoff,
            sync_retry,
            self.core.verification_deadline(),
            self.core.calls.deadline(),
            self.link.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Writes the next datagram to send into `buf` (1152 bytes suffice) and returns its
    /// length, or `None` when there is nothing to send now.
    #[inline(never)]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        // Without a security context only the link's handshake starts: a Matrix request
        // would be held back, and the handshake would wait for it to time out.
        self.coap.pause(!self.link.is_ready());
        loop {
            let len = match self.coap.poll_transmit(now, buf) {
                Ok(len) => len?,
                Err(_) => {
                    self.core.env.ui.event(&UiEvent::Error(TokenError::Exchange(
                        crate::coap::ExchangeError::TransmitBufferTooSmall,
                    )));
                    return None;
                }
            };
            // A datagram the link holds back is retransmitted by the engine later.
            let (mut store, scratch) = self.core.env.flash.sealed_store();
            match self.link.outgoing(buf, len, &mut store, scratch) {
                Ok(Outgoing::Send(len)) => return Some(len),
                Ok(Outgoing::Hold) => {}
                Err(error) => self.core.error(error.into()),
            }
        }
    }

    /// The protected link's counters.
    pub fn link_stats(&self) -> LinkStats {
        self.link.stats()
    }

    /// Whether the link to the gateway is protected (pairing material was given), and
    /// whether its security context is ready.
    pub fn link_state(&self) -> (bool, bool) {
        (self.link.is_enabled(), self.link.is_ready())
    }

    /// The CoAP engine's counters.
    pub fn transport_stats(&self) -> crate::coap::ClientStats {
        self.coap.stats()
    }

    /// Logs in with a password. The password goes into the request and is not kept.
    #[inline(never)]
    pub fn login(&mut self, user: &str, password: &str, now: Instant) -> Result<(), CommandError> {
        if self.core.login.is_some() || !self.core.operation.is_idle() {
            return Err(CommandError::AlreadyLoggedIn);
        }
        self.core.start_login(&mut self.coap, user, password)?;
        self.drive(now);
        Ok(())
    }

    /// Sets up cross-signing for the token's user (see jeton-core's `matrix::cross_signing`):
    /// master, self-signing and user-signing keys made on the token (or those it made before),
    /// published with `password` when the homeserver asks for it, and the token's device
    /// signed; [`UiEvent::CrossSigned`] or [`UiEvent::CrossSigningFailed`] follows. The
    /// password is held in RAM until then and never stored.
    #[cfg(feature = "cross-signing")]
    pub fn cross_sign(&mut self, password: &str, now: Instant) -> Result<(), CommandError> {
        self.core.start_cross_signing(password)?;
        self.drive(now);
        Ok(())
    }

    /// Queues a text for a room. The message is on flash when this returns, and
    /// [`UiEvent::Queued`] was emitted; [`UiEvent::Delivered`] follows.
    #[inline(never)]
    pub fn send_text(
        &mut self,
        room_id: &str,
        text: &str,
        now: Instant,
    ) -> Result<u32, CommandError> {
        let local_id = self.core.enqueue(room_id, text)?;
        self.drive(now);
        Ok(local_id)
    }

    /// Sends the file at `path` (as the platform's [`crate::files::FileStore`] names it) to
    /// `room_id`, end-to-end encrypted: [`UiEvent::FileProgress`] while it uploads,
    /// [`UiEvent::FileUploaded`] then [`UiEvent::Queued`] and [`UiEvent::Delivered`] for its
    /// event. One transfer at a time.
    pub fn send_file(
        &mut self,
        room_id: &str,
        path: &str,
        mimetype: &str,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.core.start_file_upload(room_id, path, mimetype)?;
        self.drive(now);
        Ok(())
    }

    /// Sends the recorded voice message at `path` (an Ogg Opus, as the platform's
    /// [`crate::files::FileStore`] names it) to `room_id` as [`Token::send_file`] sends a file,
    /// its event carrying `voice` (duration and waveform) the way clients show a voice message
    /// ([`crate::files::voice`]).
    #[cfg(feature = "voice")]
    pub fn send_voice(
        &mut self,
        room_id: &str,
        path: &str,
        voice: crate::files::voice::VoiceInfo,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.core.start_voice_upload(room_id, path, voice)?;
        self.drive(now);
        Ok(())
    }

    /// Whether a file is being sent or received.
    pub fn is_transferring(&self) -> bool {
        self.core.transfer.is_busy()
    }

    /// Accepts the invite to `room_id` (or joins a room by id).
    #[inline(never)]
    pub fn join(&mut self, room_id: &str, now: Instant) -> Result<(), CommandError> {
        if self.core.login.is_none() {
            return Err(CommandError::NotLoggedIn);
        }
        self.core.rooms.join(room_id)?;
        self.drive(now);
        Ok(())
    }

    /// Forgets the invite to `room_id` without joining.
    pub fn refuse(&mut self, room_id: &str) -> Result<(), CommandError> {
        if !self.core.rooms.refuse(room_id) {
            return Err(CommandError::NoSuchInvite);
        }
        Ok(())
    }

    /// Starts verifying `device_id` of `user_id` by SAS: the token sends
    /// `m.key.verification.start`; [`UiEvent::ShortAuthString`] follows when the other
    /// device accepted. See [the verification module](verification).
    pub fn verify(
        &mut self,
        user_id: &str,
        device_id: &str,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.core.verify_device(user_id, device_id, None, now)?;
        self.drive(now);
        Ok(())
    }

    /// Asks `device_id` of `user_id` to verify by SAS (`m.key.verification.request`, the flow
    /// Element expects); when it is ready, the token starts. A request carries the
    /// wall-clock time: `unix_time_ms`, milliseconds since the Unix epoch, from a platform
    /// that has a real-time clock.
    pub fn request_verification(
        &mut self,
        user_id: &str,
        device_id: &str,
        unix_time_ms: u64,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.core
            .verify_device(user_id, device_id, Some(unix_time_ms), now)?;
        self.drive(now);
        Ok(())
    }

    /// The person's button: accepts a verification request, or confirms that the short
    /// authentication strings on both screens match.
    pub fn confirm_verification(&mut self, now: Instant) -> Result<(), CommandError> {
        self.core.confirm_verification(now)?;
        self.drive(now);
        Ok(())
    }

    /// The person's cancel: `m.mismatched_sas` after the strings were shown, `m.user`
    /// before.
    pub fn cancel_verification(&mut self, now: Instant) -> Result<(), CommandError> {
        self.core.cancel_verification()?;
        self.drive(now);
        Ok(())
    }

    /// Declines the ringing call `call_id` (the one that rang last without it): a legacy
    /// call's answer (`m.call.reject`, or `m.call.hangup` to a version 0 invite) is queued
    /// like a message ([`UiEvent::Queued`]), and [`UiEvent::CallEnded`] follows at once. A
    /// MatrixRTC ring is only silenced. See jeton-core's `matrix::calls` module.
    pub fn decline(&mut self, call_id: Option<&str>, now: Instant) -> Result<(), CommandError> {
        self.core.decline_call(call_id)?;
        self.drive(now);
        Ok(())
    }

    /// Whether the device `device_id` of `user_id` was verified.
    pub fn is_verified(&self, user_id: &str, device_id: &str) -> bool {
        self.core
            .devices
            .find(user_id, device_id)
            .is_some_and(|d| d.verified)
    }

    /// The rooms the token is in.
    pub fn rooms(&self) -> impl Iterator<Item = RoomSummary<'_>> {
        self.core.rooms.iter().map(|room| RoomSummary {
            room_id: &room.id,
            encrypted: room.encrypted,
            members: room.members.len(),
        })
    }

    /// Pending invites.
    pub fn invites(&self) -> impl Iterator<Item = Invite<'_>> {
        self.core.rooms.invites().map(|(room, inviter)| Invite {
            room_id: room.as_str(),
            inviter: inviter.as_str(),
        })
    }

    /// The token's state at a glance (login, rooms, outbox, transport counters).
    pub fn status(&self) -> Status<'_> {
        let login = self.core.login.as_ref();
        Status {
            logged_in: login.is_some(),
            user_id: login.map(|l| l.user_id.as_str()),
            device_id: login.map(|l| l.device_id.as_str()),
            rooms: self.rooms().count(),
            outbox: self.outbox_len(),
            transport: self.coap.stats(),
        }
    }

    /// Messages in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.core.outbox.len()
    }

    /// Whether the token is logged in.
    pub fn is_logged_in(&self) -> bool {
        self.core.login.is_some()
    }

    /// The device's identity keys; the Ed25519 key is its fingerprint.
    pub fn identity(&self) -> Identity {
        let keys = self.core.account.olm.identity_keys();
        let mut ed = [0u8; 43];
        Identity {
            user_id: self.core.login.as_ref().map(|l| l.user_id.clone()),
            device_id: self.core.login.as_ref().map(|l| l.device_id.clone()),
            curve25519: self.core.account.curve_b64.clone(),
            ed25519: String::try_from(keys.ed25519.to_base64(&mut ed)).unwrap_or_default(),
        }
    }

    /// The store, for a platform that inspects it (the simulator, tests).
    pub fn store(&self) -> &P::Store {
        &self.core.env.flash.store
    }

    /// The UI, for a platform that inspects it.
    pub fn ui(&mut self) -> &mut P::Ui {
        &mut self.core.env.ui
    }

    /// Processes the engine's events, then starts what is due.
    pub(super) fn drive(&mut self, now: Instant) {
        // The engine queues events only from datagrams and timeouts, never from a request,
        // so one pass takes them all.
        while let Some(event) = self.coap.poll_event() {
            if self.link.owns(&event) {
                let (mut store, _) = self.core.env.flash.sealed_store();
                let done = self.link.on_event(event, &mut store, now);
                if let Err(error) = done {
                    self.core.error(error.into());
                }
            } else {
                self.core.on_event(event, now);
                // What a notification carried could not be stored: it comes again.
                if self.core.sync.take_decline() {
                    self.coap.decline_notification();
                }
            }
        }
        if let Err(error) = self.link.plan(&mut self.coap, &mut self.core.env.rng, now) {
            self.core.error(error.into());
        }
        if self.link.take_established() {
            // A new context: the gateway holds neither the access token nor the
            // observation of an earlier one.
            self.core.gateway.token_lost();
            // Its next registration carries the token again.
            self.core.sync.on_new_link_context();
            let (kid, gateway_kid) = self.link.kids().unwrap_or_default();
            self.core
                .env
                .ui
                .event(&UiEvent::LinkEstablished { kid, gateway_kid });
        }
        if !self.link.is_ready() {
            // Matrix requests wait for the link's context.
            return;
        }
        self.core.check_verification_timeout(now);
        self.core.expire_calls(now);
        if let Err(error) = self.core.plan(&mut self.coap, now) {
            self.core.env.ui.event(&UiEvent::Error(error));
        }
    }
}
