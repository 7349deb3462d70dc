// The properties jeton-link's fuzz targets check, shared by the targets (`fuzz_targets/*.rs`)
// and the corpus replay test of jeton-link (`firmware/link/tests/fuzz_corpus.rs`), which
// `include!` this file.
//
// The first byte of an input picks the decoder, the rest is the bytes from the air.

use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{
    Identity, Initiator, Message, OptionList, OscoreMaterial, PartialIv, RequestBinding, Responder,
    SecurityContext,
};

/// The fixed identities and handshake the checks run against (deterministic seeds), made
/// once per process so the fuzzer spends its time on the decoders.
pub fn identities() -> (Identity, Identity) {
    static IDENTITIES: std::sync::OnceLock<(Identity, Identity)> = std::sync::OnceLock::new();
    IDENTITIES
        .get_or_init(|| {
            (
                Identity::generate([1; 32], b"\x0a", "token").expect("an identity"),
                Identity::generate([2; 32], b"\x0b", "gateway").expect("an identity"),
            )
        })
        .clone()
}

type Handshake = (Vec<u8>, Vec<u8>, Vec<u8>, OscoreMaterial, OscoreMaterial);

/// A completed handshake: (message_1, message_2, message_3, token side, gateway side).
pub fn handshake() -> Handshake {
    static HANDSHAKE: std::sync::OnceLock<Handshake> = std::sync::OnceLock::new();
    HANDSHAKE.get_or_init(run_handshake).clone()
}

fn run_handshake() -> Handshake {
    let (token, gateway) = identities();
    let (initiator, m1) = Initiator::start([3; 32]).expect("message_1");
    let (responder, m2) = Responder::respond([4; 32], &gateway, m1.as_bytes(), &[0x05]).expect("message_2");
    let (m3, token_side) = initiator.process_message_2(&token, gateway.credential(), m2.as_bytes()).expect("message_3");
    let (gateway_side, _) = responder
        .process_message_3(m3.as_bytes(), |_| Some(*token.credential()))
        .expect("completes");
    (m1.as_bytes().to_vec(), m2.as_bytes().to_vec(), m3.as_bytes().to_vec(), token_side, gateway_side)
}

/// EDHOC: input[0] % 3 picks message_1 (to the responder), message_2 (to the initiator) or
/// message_3 (to a responder that sent message_2). No panic; a message that is not the
/// genuine one never completes a handshake.
pub fn check_edhoc(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let (token, gateway) = identities();
    let (m1, m2, m3, _, _) = handshake();
    match which % 3 {
        0 => {
            let _ = Responder::respond([4; 32], &gateway, bytes, &[0x05]);
        }
        1 => {
            let (initiator, _) = Initiator::start([3; 32]).expect("message_1");
            let result = initiator.process_message_2(&token, gateway.credential(), bytes);
            assert!(result.is_err() || bytes == m2.as_slice(), "a forged message_2 was accepted");
        }
        _ => {
            let (responder, _) = Responder::respond([4; 32], &gateway, &m1, &[0x05]).expect("message_2");
            let result = responder.process_message_3(bytes, |_| Some(*token.credential()));
            assert!(result.is_err() || bytes == m3.as_slice(), "a forged message_3 was accepted");
        }
    }
}

/// The token's first protected request of the fixed handshake: (OSCORE option value, payload).
pub fn genuine_request(token_side: &OscoreMaterial) -> (Vec<u8>, Vec<u8>) {
    let mut client = token_side.security_context().expect("a context");
    let request = Message {
        code: 0x01,
        options: OptionList::from_sorted(&[(11, b"versions"), (256, b"syt_x")]).expect("sorted"),
        payload: &[],
    };
    let mut buf = [0u8; 128];
    let (outer, _) = client.protect_request(&request, &mut buf).expect("protects");
    let option = outer.options.get(OSCORE_OPTION).expect("an OSCORE option").to_vec();
    (option, outer.payload.to_vec())
}

/// OSCORE: input[0] picks a request (to the server) or a response (to the client); input[1]
/// is the length of the OSCORE option value, then the option value, then the payload. No
/// panic, and nothing but the genuine request verifies.
pub fn check_oscore(data: &[u8]) {
    let [which, option_len, rest @ ..] = data else {
        return;
    };
    let split = usize::from(*option_len).min(rest.len());
    let (option, payload) = rest.split_at(split);
    let (_, _, _, token_side, gateway_side) = handshake();
    let mut options = OptionList::new();
    if options.push(OSCORE_OPTION, option).is_err() {
        return;
    }
    let outer = Message { code: 0x02, options, payload };
    let mut out = vec![0u8; payload.len()];
    if which % 2 == 0 {
        let mut server: SecurityContext = gateway_side.security_context().expect("a context");
        let result = server.unprotect_request(&outer, &mut out);
        let genuine = genuine_request(&token_side);
        assert!(
            result.is_err() || (option, payload) == (genuine.0.as_slice(), genuine.1.as_slice()),
            "a forged request verified"
        );
    } else {
        let mut client: SecurityContext = token_side.security_context().expect("a context");
        let binding = RequestBinding {
            kid: *client.sender_id(),
            piv: PartialIv::from_sequence(0),
        };
        let result = client.unprotect_response(&binding, &outer, &mut out);
        assert!(result.is_err(), "a forged response verified");
    }
}
