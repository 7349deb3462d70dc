//! RFC 9175 Echo values: how the gateway learns that a client receives at the address it sends
//! from, without keeping anything per client until it does.
//!
//! A request from an address the gateway has not seen prove itself gets a 4.01 carrying an
//! Echo option and nothing else; a client that receives there repeats the request with that
//! value (RFC 9175 §2.3), which no one who only forges the address can do. A value is a coarse
//! time and a MAC of that time and the address (IP and port) under a key made when the
//! gateway starts, so checking one needs no table: it is fresh for [`ECHO_LIFETIME`] and good
//! for that address only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::message::{self, code};

pub use jeton_link::oscore::ECHO_OPTION;
/// Bytes of an Echo value the gateway makes: a 2-byte time and a 6-byte MAC.
pub const ECHO_LEN: usize = 8;
/// How long a value is taken back.
pub const ECHO_LIFETIME: Duration = Duration::from_secs(300);
/// The time inside a value counts in these.
const TICK: Duration = Duration::from_secs(4);

/// The key behind the gateway's Echo values. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct EchoKey {
    /// HMAC-SHA-256 keyed once; each value clones it.
    mac: Hmac<Sha256>,
    born: Instant,
}

impl core::fmt::Debug for EchoKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EchoKey").finish_non_exhaustive()
    }
}

impl EchoKey {
    /// A key from the operating system's randomness, its clock starting `now`.
    pub fn random(now: Instant) -> Self {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // Without randomness the values are predictable: every address would prove itself.
            tracing::error!("no OS randomness: Echo values are not secret");
        }
        let echo = Self::from_key(&key, now);
        zeroize::Zeroize::zeroize(&mut key);
        echo
    }

    /// A key from these bytes (tests).
    pub fn from_key(key: &[u8; 32], now: Instant) -> Self {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac, born: now }
    }

    /// The Echo value for `addr` at `now`.
    pub fn mint(&self, addr: SocketAddr, now: Instant) -> [u8; ECHO_LEN] {
        let tick = self.tick(now);
        let mut value = [0u8; ECHO_LEN];
        let (time, tag) = value.split_at_mut(2);
        time.copy_from_slice(&tick.to_be_bytes());
        tag.copy_from_slice(&self.tag(tick, addr)[..ECHO_LEN - 2]);
        value
    }

    /// Whether `value` is one this key made for `addr` within [`ECHO_LIFETIME`] of `now`.
    pub fn verify(&self, addr: SocketAddr, value: &[u8], now: Instant) -> bool {
        let Some((time, tag)) = value.split_first_chunk::<2>() else {
            return false;
        };
        let tick = u16::from_be_bytes(*time);
        let age = self.tick(now).wrapping_sub(tick);
        if value.len() != ECHO_LEN || u32::from(age) > lifetime_ticks() {
            return false;
        }
        let mut mac = self.mac.clone();
        feed(&mut mac, tick, addr);
        mac.verify_truncated_left(tag).is_ok()
    }

    /// The value in a request's Echo option, if it is one this key made for `addr` and fresh.
    pub fn proves(&self, addr: SocketAddr, request: &Packet, now: Instant) -> bool {
        request
            .get_first_option(CoapOption::Unknown(ECHO_OPTION))
            .is_some_and(|value| self.verify(addr, value, now))
    }

    /// The 4.01 with a fresh Echo value that asks the client of `request` at `addr` to repeat
    /// it (RFC 9175 §2.4 item 3): piggybacked on the ACK of a CON, a NON otherwise; no payload.
    pub fn challenge(&self, addr: SocketAddr, request: &Packet, now: Instant) -> Vec<u8> {
        let mut packet = message::response_to(request, code::UNAUTHORIZED);
        packet.add_option(
            CoapOption::Unknown(ECHO_OPTION),
            self.mint(addr, now).to_vec(),
        );
        message::to_datagram(&packet)
    }

    fn tick(&self, now: Instant) -> u16 {
        let ticks = now.saturating_duration_since(self.born).as_secs() / TICK.as_secs();
        // Wraps after about three days; a value that old is long past its lifetime.
        ticks as u16
    }

    fn tag(&self, tick: u16, addr: SocketAddr) -> [u8; 32] {
        let mut mac = self.mac.clone();
        feed(&mut mac, tick, addr);
        mac.finalize().into_bytes().into()
    }
}

fn lifetime_ticks() -> u32 {
    (ECHO_LIFETIME.as_secs() / TICK.as_secs()) as u32
}

/// What a value's MAC covers: its time, the address family, the IP and the port.
fn feed(mac: &mut Hmac<Sha256>, tick: u16, addr: SocketAddr) {
    mac.update(&tick.to_be_bytes());
    match addr {
        SocketAddr::V4(a) => {
            mac.update(&[4]);
            mac.update(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            mac.update(&[6]);
            mac.update(&a.ip().octets());
        }
    }
    mac.update(&addr.port().to_be_bytes());
}

/// Whether `reply` may go to an address that has not proven it receives there, in answer to a
/// request of `request_len` bytes: at most three times as large (RFC 9175 §2.4 item 3, as for
/// QUIC's unvalidated addresses).
pub fn within_amplification(reply: &[u8], request_len: usize) -> bool {
    reply.len() <= request_len.saturating_mul(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::MessageType;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_value_proves_its_address_for_its_lifetime_only() {
        let now = Instant::now();
        let key = EchoKey::from_key(&[7; 32], now);
        let value = key.mint(addr("192.0.2.1:5683"), now + Duration::from_secs(10));
        let later = now + Duration::from_secs(10) + ECHO_LIFETIME - TICK;
        assert!(key.verify(addr("192.0.2.1:5683"), &value, later));
        assert!(
            !key.verify(addr("192.0.2.1:5684"), &value, later),
            "another port"
        );
        assert!(
            !key.verify(addr("192.0.2.2:5683"), &value, later),
            "another host"
        );
        let expired = now + Duration::from_secs(20) + ECHO_LIFETIME;
        assert!(!key.verify(addr("192.0.2.1:5683"), &value, expired));
        let other = EchoKey::from_key(&[8; 32], now);
        assert!(
            !other.verify(addr("192.0.2.1:5683"), &value, later),
            "another key"
        );
        let mut forged = value;
        forged[7] ^= 1;
        assert!(!key.verify(addr("192.0.2.1:5683"), &forged, later));
        assert!(!key.verify(addr("192.0.2.1:5683"), &value[..7], later));
    }

    #[test]
    fn a_challenge_is_a_bare_4_01_with_echo() {
        let now = Instant::now();
        let key = EchoKey::from_key(&[7; 32], now);
        let request = message::build(MessageType::Confirmable, 1, 0x1234, b"tk");
        let challenge =
            message::parse(&key.challenge(addr("[2001:db8::1]:1"), &request, now)).unwrap();
        assert_eq!(challenge.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(challenge.header.message_id, 0x1234);
        assert_eq!(u8::from(challenge.header.code), code::UNAUTHORIZED);
        assert_eq!(challenge.get_token(), b"tk");
        assert!(challenge.payload.is_empty());
        assert!(key.proves(addr("[2001:db8::1]:1"), &challenge, now));
    }
}
