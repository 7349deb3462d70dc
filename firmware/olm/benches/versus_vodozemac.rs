//! jeton-olm and vodozemac side by side on the same operations: criterion measures each, then
//! a paired run prints the table of ratios jeton/vodozemac. The machine this runs on is shared,
//! so the table alternates the two libraries in short rounds (about 20 ms each) and reports
//! medians, which keeps a load change from favouring either side.
//! Run with `cargo bench -p jeton-olm --bench versus_vodozemac`.
//!
//! Both use curve25519-dalek's precomputed tables here: vodozemac enables them by default and
//! cargo unifies the feature, which is jeton's `precomputed-tables` feature on the host.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::Criterion;
use jeton_olm::{
    Pickle,
    megolm::{GroupSession, InboundGroupSession, MegolmMessage, megolm_message_len},
    olm::{Account, OlmMessage, PreKeyMessage, Session, olm_message_len},
};
use vodozemac::{megolm as vzm, olm as vz};

const PLAINTEXT: [u8; 100] = [b'x'; 100];
const PICKLE_KEY: [u8; 32] = [7; 32];

/// Runs an operation `n` times (after any untimed setup) and returns the time it took.
type Timed = Box<dyn FnMut(u64) -> Duration>;

struct Operation {
    group: &'static str,
    what: &'static str,
    jeton: Timed,
    vodozemac: Timed,
}

/// Times `routine` over `n` inputs made by `setup` beforehand.
fn batched<I, O>(
    mut setup: impl FnMut() -> I,
    mut routine: impl FnMut(&mut I) -> O,
) -> impl FnMut(u64) -> Duration {
    move |n| {
        let mut inputs: Vec<I> = (0..n).map(|_| setup()).collect();
        let start = Instant::now();
        for input in &mut inputs {
            black_box(routine(input));
        }
        let elapsed = start.elapsed();
        drop(inputs);
        elapsed
    }
}

/// Times `n` runs of `routine` on one state.
fn repeated<O>(mut routine: impl FnMut() -> O) -> impl FnMut(u64) -> Duration {
    move |n| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(routine());
        }
        start.elapsed()
    }
}

fn our_session_pair() -> (Session, Session) {
    let mut rng = rand::rng();
    let alice: Account = Account::new(&mut rng);
    let mut bob: Account = Account::new(&mut rng);
    bob.generate_one_time_keys(&mut rng, 1);
    let (_, otk) = bob.one_time_keys().next().unwrap();
    let mut a = alice
        .create_outbound_session(&mut rng, bob.curve25519_key(), otk)
        .unwrap();
    let mut wire = [0u8; olm_message_len(2)];
    let sent = a.encrypt(&mut rng, b"hi", &mut wire).unwrap();
    let message = PreKeyMessage::from_bytes(&wire[..sent.len]).unwrap();
    let b = bob
        .create_inbound_session(alice.curve25519_key(), &message, &mut [0u8; 16])
        .unwrap()
        .session;
    (a, b)
}

fn vz_session_pair() -> (vz::Session, vz::Session) {
    let alice = vz::Account::new();
    let mut bob = vz::Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().unwrap();
    let mut a = alice
        .create_outbound_session(vz::SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let vz::OlmMessage::PreKey(message) = a.encrypt("hi").unwrap() else {
        unreachable!()
    };
    let b = bob
        .create_inbound_session(
            vz::SessionConfig::version_1(),
            alice.curve25519_key(),
            &message,
        )
        .unwrap()
        .session;
    (a, b)
}

fn operations() -> Vec<Operation> {
    let mut rng = rand::rng();
    let mut ours: Account = Account::new(&mut rng);
    ours.generate_one_time_keys(&mut rng, 50);
    let mut theirs = vz::Account::new();
    theirs.generate_one_time_keys(50);
    let mut our_pickle = vec![0u8; <Account as Pickle>::MAX_PICKLE_SIZE];
    let len = ours.pickle(&mut rng, &PICKLE_KEY, &mut our_pickle).unwrap();
    our_pickle.truncate(len);
    let their_pickle = theirs.pickle().encrypt(&PICKLE_KEY);
    let our_alice: Account = Account::new(&mut rng);
    let their_alice = vz::Account::new();

    let (mut our_olm_a, mut our_olm_b) = our_session_pair();
    let (mut their_olm_a, mut their_olm_b) = vz_session_pair();
    let (our_pickled_session, _) = our_session_pair();
    let (their_pickled_session, _) = vz_session_pair();
    let mut our_sender = GroupSession::new(&mut rng);
    let mut our_receiver = InboundGroupSession::from(&our_sender);
    let mut their_sender = vzm::GroupSession::new(vzm::SessionConfig::version_1());
    let mut their_receiver = vzm::InboundGroupSession::from(&their_sender);
    let (mut our_olm_encryptor, _) = our_session_pair();
    let (mut their_olm_encryptor, _) = vz_session_pair();
    let mut our_group = GroupSession::new(&mut rng);
    let mut their_group = vzm::GroupSession::new(vzm::SessionConfig::version_1());

    vec![
        Operation {
            group: "account_creation",
            what: "account creation",
            jeton: Box::new(repeated(|| Account::<50>::new(&mut rand::rng()))),
            vodozemac: Box::new(repeated(vz::Account::new)),
        },
        Operation {
            group: "one_time_keys_50",
            what: "generate 50 one-time keys",
            jeton: Box::new(batched(
                || Account::<50>::new(&mut rand::rng()),
                |a| a.generate_one_time_keys(&mut rand::rng(), 50),
            )),
            vodozemac: Box::new(batched(vz::Account::new, |a| a.generate_one_time_keys(50))),
        },
        Operation {
            group: "session_creation",
            what: "outbound + inbound session (with first message)",
            jeton: Box::new(batched(
                || {
                    let mut bob: Account = Account::new(&mut rand::rng());
                    bob.generate_one_time_keys(&mut rand::rng(), 1);
                    bob
                },
                move |bob| {
                    let mut rng = rand::rng();
                    let (_, otk) = bob.one_time_keys().next().unwrap();
                    let mut a = our_alice
                        .create_outbound_session(&mut rng, bob.curve25519_key(), otk)
                        .unwrap();
                    let mut wire = [0u8; olm_message_len(100)];
                    let sent = a.encrypt(&mut rng, &PLAINTEXT, &mut wire).unwrap();
                    let message = PreKeyMessage::from_bytes(&wire[..sent.len]).unwrap();
                    let mut out = [0u8; 128];
                    bob.create_inbound_session(our_alice.curve25519_key(), &message, &mut out)
                        .unwrap()
                        .plaintext_len
                },
            )),
            vodozemac: Box::new(batched(
                || {
                    let mut bob = vz::Account::new();
                    bob.generate_one_time_keys(1);
                    bob
                },
                move |bob| {
                    let otk = *bob.one_time_keys().values().next().unwrap();
                    let mut a = their_alice
                        .create_outbound_session(
                            vz::SessionConfig::version_1(),
                            bob.curve25519_key(),
                            otk,
                        )
                        .unwrap();
                    let vz::OlmMessage::PreKey(m) = a.encrypt(PLAINTEXT).unwrap() else {
                        unreachable!()
                    };
                    bob.create_inbound_session(
                        vz::SessionConfig::version_1(),
                        their_alice.curve25519_key(),
                        &m,
                    )
                    .unwrap()
                    .plaintext
                },
            )),
        },
        Operation {
            group: "olm_encrypt_100",
            what: "Olm encrypt 100 B",
            jeton: Box::new(repeated(move || {
                let mut wire = [0u8; olm_message_len(100)];
                our_olm_encryptor
                    .encrypt(&mut rand::rng(), &PLAINTEXT, &mut wire)
                    .unwrap()
            })),
            vodozemac: Box::new(repeated(move || {
                their_olm_encryptor.encrypt(PLAINTEXT).unwrap()
            })),
        },
        Operation {
            group: "olm_decrypt_100",
            what: "Olm decrypt 100 B",
            jeton: Box::new(batched(
                move || {
                    let mut wire = vec![0u8; olm_message_len(100)];
                    let sent = our_olm_b
                        .encrypt(&mut rand::rng(), &PLAINTEXT, &mut wire)
                        .unwrap();
                    wire.truncate(sent.len);
                    (sent.message_type, wire)
                },
                move |(kind, wire)| {
                    let message = OlmMessage::from_parts(*kind, wire).unwrap();
                    let mut out = [0u8; 128];
                    our_olm_a.decrypt(&message, &mut out).unwrap()
                },
            )),
            vodozemac: Box::new(batched(
                move || their_olm_b.encrypt(PLAINTEXT).unwrap().to_parts(),
                move |(kind, wire)| {
                    let message = vz::OlmMessage::from_parts(*kind, wire).unwrap();
                    their_olm_a.decrypt(&message).unwrap()
                },
            )),
        },
        Operation {
            group: "megolm_encrypt_100",
            what: "Megolm encrypt 100 B",
            jeton: Box::new(repeated(move || {
                let mut wire = [0u8; megolm_message_len(100)];
                our_group.encrypt(&PLAINTEXT, &mut wire).unwrap()
            })),
            vodozemac: Box::new(repeated(move || their_group.encrypt(PLAINTEXT).to_bytes())),
        },
        Operation {
            group: "megolm_decrypt_100",
            what: "Megolm decrypt 100 B",
            jeton: Box::new(batched(
                move || {
                    let mut wire = vec![0u8; megolm_message_len(100)];
                    let len = our_sender.encrypt(&PLAINTEXT, &mut wire).unwrap();
                    wire.truncate(len);
                    wire
                },
                move |wire| {
                    let message = MegolmMessage::from_bytes(wire).unwrap();
                    let mut out = [0u8; 128];
                    our_receiver.decrypt(&message, &mut out).unwrap()
                },
            )),
            vodozemac: Box::new(batched(
                move || their_sender.encrypt(PLAINTEXT).to_bytes(),
                move |wire| {
                    let message = vzm::MegolmMessage::from_bytes(wire).unwrap();
                    their_receiver.decrypt(&message).unwrap()
                },
            )),
        },
        Operation {
            group: "account_pickle",
            what: "pickle account (50 one-time keys)",
            jeton: Box::new(repeated({
                let ours =
                    Account::<50>::from_pickle(&mut our_pickle.clone(), &PICKLE_KEY).unwrap();
                let mut out = vec![0u8; <Account as Pickle>::MAX_PICKLE_SIZE];
                move || {
                    ours.pickle(&mut rand::rng(), &PICKLE_KEY, &mut out)
                        .unwrap()
                }
            })),
            vodozemac: Box::new(repeated({
                let theirs = vz::Account::from_pickle(
                    vz::AccountPickle::from_encrypted(&their_pickle, &PICKLE_KEY).unwrap(),
                );
                move || theirs.pickle().encrypt(&PICKLE_KEY)
            })),
        },
        Operation {
            group: "account_unpickle",
            what: "unpickle account (50 one-time keys)",
            jeton: Box::new(batched(
                move || our_pickle.clone(),
                |p| <Account as Pickle>::from_pickle(p, &PICKLE_KEY).unwrap(),
            )),
            vodozemac: Box::new(repeated(move || {
                vz::Account::from_pickle(
                    vz::AccountPickle::from_encrypted(&their_pickle, &PICKLE_KEY).unwrap(),
                )
            })),
        },
        Operation {
            group: "session_pickle_roundtrip",
            what: "pickle + unpickle Olm session",
            jeton: Box::new(repeated({
                let mut out = vec![0u8; Session::MAX_PICKLE_SIZE];
                move || {
                    let len = our_pickled_session
                        .pickle(&mut rand::rng(), &PICKLE_KEY, &mut out)
                        .unwrap();
                    Session::from_pickle(&mut out[..len], &PICKLE_KEY).unwrap()
                }
            })),
            vodozemac: Box::new(repeated(move || {
                let pickle = their_pickled_session.pickle().encrypt(&PICKLE_KEY);
                vz::Session::from_pickle(
                    vz::SessionPickle::from_encrypted(&pickle, &PICKLE_KEY).unwrap(),
                )
            })),
        },
    ]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Alternates the two libraries in rounds of about 20 ms and prints medians and their ratio.
fn print_paired_table(operations: &mut [Operation]) {
    const ROUNDS: usize = 21;
    println!("\n| operation | jeton-olm | vodozemac | jeton/vodozemac |");
    println!("| --- | ---: | ---: | ---: |");
    for op in operations {
        let once = (op.jeton)(1).max((op.vodozemac)(1)).as_secs_f64().max(1e-7);
        let n = ((0.02 / once) as u64).clamp(1, 100_000);
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let a = (op.jeton)(n).as_secs_f64() / n as f64;
            let b = (op.vodozemac)(n).as_secs_f64() / n as f64;
            ours.push(a);
            theirs.push(b);
            ratios.push(a / b);
        }
        println!(
            "| {} | {:.1} µs | {:.1} µs | {:.2}x |",
            op.what,
            median(&mut ours) * 1e6,
            median(&mut theirs) * 1e6,
            median(&mut ratios)
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    let mut operations = operations();
    for op in &mut operations {
        let mut group = c.benchmark_group(op.group);
        group.bench_function("jeton", |b| b.iter_custom(|n| (op.jeton)(n)));
        group.bench_function("vodozemac", |b| b.iter_custom(|n| (op.vodozemac)(n)));
        group.finish();
    }
    c.final_summary();
    print_paired_table(&mut operations);
}
