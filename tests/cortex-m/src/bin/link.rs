//! jeton-link on a Cortex-M4, the token's side only (what a token links): the P-256 backend
//! against RFC 9529's keys and shared secret, EDHOC as the initiator against a recorded
//! message_2, then OSCORE protect of a request and unprotect of its response, with the
//! sequence number persisted as RFC 8613 appendix B.1.1 asks. Each result is checked against
//! the RFC's values or bytes recorded on the host from the same fixed seeds (jeton-link's test
//! handshake, `tests/fuzz/link/checks.rs`): a mismatch fails the QEMU run. Also the flash
//! probe of jeton-link.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use jeton_cortex_m::{InstructionCounter, fail, keep, measured, pass};
use jeton_link::device_check::{p256_ecdh, p256_is_x_coordinate, p256_public_key};
use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{Credential, Identity, Initiator, Message, OptionList};

jeton_cortex_m::panic_handler!(report);

/// The gateway's CCS in the test handshake (kid 0x0b).
const GATEWAY_CCS: &str = "a202676761746577617908a101a5010202410b20012158202e5f1c739e33925353b971ca94ed42341b69b782ce93cf340404caba41eedc8f22582056fa9f2e25eedc198cf490d8ecd1b7d52eb75ad3dca43b1f81bd7053a5acf402";
/// message_1 and message_2 of the handshake (initiator seed [3; 32], responder [4; 32], C_R 5).
const MESSAGE_1: &str =
    "03025820ce41ba35350b2609df117faaf4d7f8b1dac859dbd550f778ac42daeb9ab5bde32c";
const MESSAGE_2: &str =
    "582b8cdf9cd83211cf09f4d1d7f3b2bee94437f6bae516cbe25b62f43d309ce9050128e4c90e7329d47ce6710a";
const MESSAGE_3: &str = "52c37e9d79a9d1dc9b12a5435f4ddd60db7afd";
/// The first protected request (GET versions with option 256) and the gateway's response.
const REQUEST_OPTION: &str = "090005";
const REQUEST_PAYLOAD: &str = "b3c5105cff3617a2310df17957b500564dd57745d4216cf799";
const RESPONSE_PAYLOAD: &str =
    "b81d7eef66546c24bfd57bbbba54be68864a3c73f2bb6edac9f312926de566928358";

include!("../../../../firmware/link/src/rfc9529_p256.rs");

fn key(text: &str) -> [u8; 32] {
    let bytes = unhex::<32>(text);
    bytes
        .as_slice()
        .try_into()
        .unwrap_or_else(|_| fail("a 32-byte test value"))
}

/// The P-256 backend against RFC 9529's values: public keys, ECDH, and the refusals.
fn check_p256(c: &mut InstructionCounter) {
    let public = measured(c, "P-256 public key (RFC 9529 SK_I)", || {
        p256_public_key(&keep(key(SK_I)))
    });
    if public != Some((key(G_I_X), key(G_I_Y))) {
        fail("the public key of RFC 9529's SK_I differs");
    }
    if p256_public_key(&key(X)).map(|(x, _)| x) != Some(key(G_X)) {
        fail("the public key of RFC 9529's X differs");
    }
    let shared = measured(c, "P-256 ECDH (RFC 9529 G_XY)", || {
        p256_ecdh(&keep(key(X)), &key(G_Y))
    });
    if shared != Some(key(G_XY)) {
        fail("ECDH of RFC 9529's X and G_Y differs from G_XY");
    }
    if p256_public_key(&key(N)).is_some() || p256_public_key(&[0; 32]).is_some() {
        fail("a scalar outside 1..n was taken as a private key");
    }
    if !p256_is_x_coordinate(&key(G_Y)) || p256_is_x_coordinate(&key(NOT_X)) {
        fail("the x-coordinate check differs");
    }
    if p256_ecdh(&key(X), &key(NOT_X)).is_some() {
        fail("ECDH took a point off the curve");
    }
}

fn unhex<const N: usize>(text: &str) -> heapless::Vec<u8, N> {
    let mut out = heapless::Vec::new();
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    };
    for pair in text.as_bytes().chunks(2) {
        if let [hi, lo] = pair {
            let _ = out.push(digit(*hi) << 4 | digit(*lo));
        }
    }
    out
}

#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        fail("peripherals taken twice")
    };
    let mut c = InstructionCounter::new(p.SYST);
    hprintln!(
        "{:<44} {:>12} {:>8}",
        "operation (jeton-link, thumbv7em)",
        "instructions",
        "stack B"
    );

    check_p256(&mut c);
    let token = measured(&mut c, "P-256 key pair + CCS (provisioning)", || {
        Identity::generate(keep([1; 32]), b"\x0a", "token")
    });
    let Ok(token) = token else { fail("identity") };
    let Ok(gateway) = Credential::parse(&unhex::<192>(GATEWAY_CCS)) else {
        fail("gateway credential")
    };
    let started = measured(&mut c, "EDHOC message_1 (ephemeral key)", || {
        Initiator::start(keep([3; 32]))
    });
    let Ok((initiator, message_1)) = started else {
        fail("message_1")
    };
    if message_1.as_bytes() != unhex::<64>(MESSAGE_1).as_slice() {
        fail("message_1 differs from the host's");
    }
    let message_2 = unhex::<64>(MESSAGE_2);
    let done = measured(&mut c, "EDHOC message_2 -> message_3 + OSCORE keys", || {
        initiator.process_message_2(&token, &gateway, &message_2)
    });
    let Ok((message_3, material)) = done else {
        fail("message_2 did not verify")
    };
    if message_3.as_bytes() != unhex::<32>(MESSAGE_3).as_slice() {
        fail("message_3 differs from the host's");
    }
    let Ok(context) = material.security_context() else {
        fail("context")
    };
    let mut context = context.with_persisted_sequence();
    if let Some(mark) = context.sequence_to_persist() {
        // The token writes `mark` to flash here before using the numbers below it.
        context.sequence_persisted(keep(mark));
    }

    let Ok(options) = OptionList::from_sorted(&[(11, b"versions"), (256, b"syt_x")]) else {
        fail("options")
    };
    let request = Message {
        code: 0x01,
        options,
        payload: &[],
    };
    let mut buf = [0u8; 128];
    let protected = measured(&mut c, "OSCORE protect request (GET, 2 options)", || {
        context
            .protect_request(&request, &mut buf)
            .map(|(outer, binding)| {
                let ok = outer.options.get(OSCORE_OPTION)
                    == Some(unhex::<8>(REQUEST_OPTION).as_slice())
                    && outer.payload == unhex::<64>(REQUEST_PAYLOAD).as_slice();
                (ok, binding)
            })
    });
    let Ok((true, binding)) = protected else {
        fail("the protected request differs from the host's")
    };

    let response_payload = unhex::<64>(RESPONSE_PAYLOAD);
    let Ok(mut response_options) = OptionList::from_sorted(&[]) else {
        fail("options")
    };
    if response_options.push(OSCORE_OPTION, &[]).is_err() {
        fail("options");
    }
    let outer = Message {
        code: 0x44,
        options: response_options,
        payload: &response_payload,
    };
    let mut plain = [0u8; 64];
    let opened = measured(&mut c, "OSCORE unprotect response (22 B body)", || {
        context
            .unprotect_response(&binding, &outer, &mut plain)
            .map(|inner| inner.code == 0x45 && inner.payload == b"{\"versions\":[\"v1.11\"]}")
    });
    if opened != Ok(true) {
        fail("the response did not verify");
    }
    pass()
}
