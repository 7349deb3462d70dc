//! jeton-olm on a Cortex-M4: runs the Olm and Megolm operations a token performs, checks
//! that each one round-trips (a failure fails the QEMU run), and reports the instructions
//! and the stack each took. Also the flash probe of jeton-olm.
//!
//! The random source is a fixed-seed SplitMix64, so every run executes the very same
//! instructions; it stands in for the board's hardware RNG and is not a secure generator.
//!
//! Built with the crate's default `cortex-m4-asm` feature, jeton-olm computes X25519 and
//! Ed25519 signing on salty's Cortex-M4 assembly; `build` also makes this image without it,
//! as `olm-dalek`, so both backends are reported side by side.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use jeton_cortex_m::{FixedSeedRng, InstructionCounter, fail, keep, measured, pass};
use jeton_olm::Pickle;
use jeton_olm::megolm::{GroupSession, InboundGroupSession, MegolmMessage, megolm_message_len};
use jeton_olm::olm::{Account, OlmMessage, PreKeyMessage, olm_message_len};

jeton_cortex_m::panic_handler!(report);

const PLAINTEXT: &[u8; 100] = b"jeton: a hundred bytes of plaintext, about the size of a short chat message with its JSON envelope!.";

/// Measures `f`, prints its row and hands back its result.
#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        fail("peripherals taken twice")
    };
    let mut c = InstructionCounter::new(p.SYST);
    let mut rng = FixedSeedRng(0x6a65_746f_6e00_0001);
    hprintln!(
        "{:<44} {:>12} {:>8}",
        "operation (jeton-olm, thumbv7em)",
        "instructions",
        "stack B"
    );

    let mut alice: Account = measured(&mut c, "account creation", || Account::new(&mut rng));
    let mut bob: Account = Account::new(&mut rng);
    measured(&mut c, "generate 1 one-time key", || {
        bob.generate_one_time_keys(&mut rng, 1)
    });
    let Some((_, bob_otk)) = bob.one_time_keys().next() else {
        fail("no one-time key")
    };
    let signature = measured(&mut c, "Ed25519 sign 100 B", || alice.sign(PLAINTEXT));
    let verified = measured(&mut c, "Ed25519 verify 100 B", || {
        alice.ed25519_key().verify(PLAINTEXT, &signature)
    });
    if verified.is_err() {
        fail("Ed25519 signature did not verify");
    }

    // Olm: Alice starts a session to Bob, Bob accepts it from the pre-key message.
    let outbound = measured(&mut c, "Olm outbound session creation (3 DH)", || {
        alice.create_outbound_session(&mut rng, bob.curve25519_key(), bob_otk)
    });
    let Ok(mut alice_session) = outbound else {
        fail("outbound session")
    };
    let mut wire = [0u8; olm_message_len(100) + 200];
    let sent = measured(&mut c, "Olm encrypt 100 B (pre-key)", || {
        alice_session.encrypt(&mut rng, PLAINTEXT, &mut wire)
    });
    let Ok(sent) = sent else { fail("Olm encrypt") };
    let Ok(pre_key) = PreKeyMessage::from_bytes(&wire[..sent.len]) else {
        fail("pre-key message decode")
    };
    let mut plain = [0u8; 128];
    let inbound = measured(&mut c, "Olm inbound session + decrypt 100 B", || {
        bob.create_inbound_session(alice.curve25519_key(), &pre_key, &mut plain)
    });
    let Ok(inbound) = inbound else {
        fail("inbound session")
    };
    if plain.get(..inbound.plaintext_len) != Some(&PLAINTEXT[..]) {
        fail("Olm pre-key message decrypted to something else");
    }
    let mut bob_session = inbound.session;
    // Bob's reply makes a new ratchet key: the encrypt that follows a receive does a DH.
    let reply = measured(&mut c, "Olm encrypt 100 B (ratchet step)", || {
        bob_session.encrypt(&mut rng, PLAINTEXT, &mut wire)
    });
    let Ok(reply) = reply else {
        fail("Olm reply encrypt")
    };
    let Ok(message) = OlmMessage::from_parts(reply.message_type, &wire[..reply.len]) else {
        fail("Olm message decode")
    };
    let got = measured(&mut c, "Olm decrypt 100 B (ratchet step)", || {
        alice_session.decrypt(&message, &mut plain)
    });
    if got.ok().and_then(|n| plain.get(..n)) != Some(&PLAINTEXT[..]) {
        fail("Olm reply decrypted to something else");
    }
    let again = measured(&mut c, "Olm encrypt 100 B (same chain)", || {
        bob_session.encrypt(&mut rng, PLAINTEXT, &mut wire)
    });
    let Ok(again) = again else {
        fail("Olm encrypt on the same chain")
    };
    let Ok(message) = OlmMessage::from_parts(again.message_type, &wire[..again.len]) else {
        fail("Olm message decode")
    };
    let got = measured(&mut c, "Olm decrypt 100 B (same chain)", || {
        alice_session.decrypt(&message, &mut plain)
    });
    if got.ok().and_then(|n| plain.get(..n)) != Some(&PLAINTEXT[..]) {
        fail("second Olm message decrypted to something else");
    }

    // Megolm: a room session, its key shared, a message both ways.
    let mut group = measured(&mut c, "Megolm outbound session creation", || {
        GroupSession::new(&mut rng)
    });
    let key = group.session_key();
    let mut inbound_group = measured(&mut c, "Megolm inbound session from a checked key", || {
        InboundGroupSession::new(&key)
    });
    let mut megolm_wire = [0u8; megolm_message_len(100)];
    let n = measured(&mut c, "Megolm encrypt 100 B (incl. Ed25519 sign)", || {
        group.encrypt(PLAINTEXT, &mut megolm_wire)
    });
    let Ok(n) = n else { fail("Megolm encrypt") };
    let Ok(message) = MegolmMessage::from_bytes(&megolm_wire[..n]) else {
        fail("Megolm message decode")
    };
    let got = measured(
        &mut c,
        "Megolm decrypt 100 B (incl. Ed25519 verify)",
        || inbound_group.decrypt(&message, &mut plain),
    );
    let Ok(got) = got else { fail("Megolm decrypt") };
    if plain.get(..got.plaintext_len) != Some(&PLAINTEXT[..]) {
        fail("Megolm message decrypted to something else");
    }
    let advanced = measured(&mut c, "Megolm ratchet advance by 2^16", || {
        inbound_group.advance_to(1 << 16)
    });
    keep(advanced);

    // Pickles: what the token writes to flash and reads back at boot.
    let pickle_key = [7u8; 32];
    let mut pickle = [0u8; <Account as Pickle>::MAX_PICKLE_SIZE];
    let len = measured(&mut c, "Account pickle (encrypt)", || {
        alice.pickle(&mut rng, &pickle_key, &mut pickle)
    });
    let Ok(len) = len else { fail("Account pickle") };
    let restored: Result<Account, _> = measured(&mut c, "Account unpickle (decrypt)", || {
        Account::from_pickle(&mut pickle[..len], &pickle_key)
    });
    match restored {
        Ok(restored) if restored.curve25519_key() == alice.curve25519_key() => {}
        _ => fail("Account pickle did not restore the same identity"),
    }
    alice.mark_keys_as_published();

    hprintln!(
        "sizes: Account {} B, Session {} B, GroupSession {} B, InboundGroupSession {} B",
        core::mem::size_of::<Account>(),
        core::mem::size_of_val(&alice_session),
        core::mem::size_of::<GroupSession>(),
        core::mem::size_of::<InboundGroupSession>()
    );
    pass()
}
