//! jeton-olm and vodozemac side by side on the same operations, then a table of the ratios
//! jeton/vodozemac of the mean times. Run with `cargo bench -p jeton-olm`.
//!
//! Both use curve25519-dalek's precomputed tables here: vodozemac enables them by default and
//! cargo unifies the feature, which is jeton's `precomputed-tables` feature on the host.

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use criterion::{BatchSize, Criterion};
use jeton_olm::{
    Pickle,
    megolm::{GroupSession, InboundGroupSession, MegolmMessage, megolm_message_len},
    olm::{Account, OlmMessage, PreKeyMessage, Session, olm_message_len},
};
use vodozemac::{megolm as vzm, olm as vz};

const PLAINTEXT: [u8; 100] = [b'x'; 100];
const PICKLE_KEY: [u8; 32] = [7; 32];

/// The benchmarks in the order of the table: (group, what it measures).
const OPERATIONS: [(&str, &str); 10] = [
    ("account_creation", "account creation"),
    ("one_time_keys_50", "generate 50 one-time keys"),
    (
        "session_creation",
        "outbound + inbound session (with first message)",
    ),
    ("olm_encrypt_100", "Olm encrypt 100 B"),
    ("olm_decrypt_100", "Olm decrypt 100 B"),
    ("megolm_encrypt_100", "Megolm encrypt 100 B"),
    ("megolm_decrypt_100", "Megolm decrypt 100 B"),
    ("account_pickle", "pickle account (50 one-time keys)"),
    ("account_unpickle", "unpickle account (50 one-time keys)"),
    ("session_pickle_roundtrip", "pickle + unpickle Olm session"),
];

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

fn accounts(c: &mut Criterion) {
    let mut g = c.benchmark_group("account_creation");
    g.bench_function("jeton", |b| {
        b.iter(|| black_box(Account::<50>::new(&mut rand::rng())))
    });
    g.bench_function("vodozemac", |b| b.iter(|| black_box(vz::Account::new())));
    g.finish();

    let mut g = c.benchmark_group("one_time_keys_50");
    g.bench_function("jeton", |b| {
        b.iter_batched_ref(
            || Account::<50>::new(&mut rand::rng()),
            |a| a.generate_one_time_keys(&mut rand::rng(), 50),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("vodozemac", |b| {
        b.iter_batched_ref(
            vz::Account::new,
            |a| a.generate_one_time_keys(50),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("session_creation");
    g.bench_function("jeton", |b| {
        let alice: Account = Account::new(&mut rand::rng());
        b.iter_batched_ref(
            || {
                let mut bob: Account = Account::new(&mut rand::rng());
                bob.generate_one_time_keys(&mut rand::rng(), 1);
                bob
            },
            |bob| {
                let mut rng = rand::rng();
                let (_, otk) = bob.one_time_keys().next().unwrap();
                let mut a = alice
                    .create_outbound_session(&mut rng, bob.curve25519_key(), otk)
                    .unwrap();
                let mut wire = [0u8; olm_message_len(100)];
                let sent = a.encrypt(&mut rng, &PLAINTEXT, &mut wire).unwrap();
                let message = PreKeyMessage::from_bytes(&wire[..sent.len]).unwrap();
                let mut out = [0u8; 128];
                bob.create_inbound_session(alice.curve25519_key(), &message, &mut out)
                    .unwrap()
                    .plaintext_len
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("vodozemac", |b| {
        let alice = vz::Account::new();
        b.iter_batched_ref(
            || {
                let mut bob = vz::Account::new();
                bob.generate_one_time_keys(1);
                bob
            },
            |bob| {
                let otk = *bob.one_time_keys().values().next().unwrap();
                let mut a = alice
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
                    alice.curve25519_key(),
                    &m,
                )
                .unwrap()
                .plaintext
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn olm(c: &mut Criterion) {
    let mut g = c.benchmark_group("olm_encrypt_100");
    g.bench_function("jeton", |b| {
        let (_, mut bob) = our_session_pair();
        let mut rng = rand::rng();
        let mut wire = [0u8; olm_message_len(100)];
        b.iter(|| bob.encrypt(&mut rng, &PLAINTEXT, &mut wire).unwrap())
    });
    g.bench_function("vodozemac", |b| {
        let (_, mut bob) = vz_session_pair();
        b.iter(|| bob.encrypt(PLAINTEXT).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("olm_decrypt_100");
    g.bench_function("jeton", |b| {
        let (mut alice, mut bob) = our_session_pair();
        let mut rng = rand::rng();
        b.iter_batched_ref(
            || {
                let mut wire = vec![0u8; olm_message_len(100)];
                let sent = bob.encrypt(&mut rng, &PLAINTEXT, &mut wire).unwrap();
                wire.truncate(sent.len);
                (sent.message_type, wire)
            },
            |(kind, wire)| {
                let message = OlmMessage::from_parts(*kind, wire).unwrap();
                let mut out = [0u8; 128];
                alice.decrypt(&message, &mut out).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("vodozemac", |b| {
        let (mut alice, mut bob) = vz_session_pair();
        b.iter_batched_ref(
            || bob.encrypt(PLAINTEXT).unwrap().to_parts(),
            |(kind, wire)| {
                let message = vz::OlmMessage::from_parts(*kind, wire).unwrap();
                alice.decrypt(&message).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn megolm(c: &mut Criterion) {
    let mut g = c.benchmark_group("megolm_encrypt_100");
    g.bench_function("jeton", |b| {
        let mut session = GroupSession::new(&mut rand::rng());
        let mut wire = [0u8; megolm_message_len(100)];
        b.iter(|| session.encrypt(&PLAINTEXT, &mut wire).unwrap())
    });
    g.bench_function("vodozemac", |b| {
        let mut session = vzm::GroupSession::new(vzm::SessionConfig::version_1());
        b.iter(|| session.encrypt(PLAINTEXT).to_bytes())
    });
    g.finish();

    let mut g = c.benchmark_group("megolm_decrypt_100");
    g.bench_function("jeton", |b| {
        let mut outbound = GroupSession::new(&mut rand::rng());
        let mut inbound = InboundGroupSession::from(&outbound);
        b.iter_batched_ref(
            || {
                let mut wire = vec![0u8; megolm_message_len(100)];
                let len = outbound.encrypt(&PLAINTEXT, &mut wire).unwrap();
                wire.truncate(len);
                wire
            },
            |wire| {
                let message = MegolmMessage::from_bytes(wire).unwrap();
                let mut out = [0u8; 128];
                inbound.decrypt(&message, &mut out).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("vodozemac", |b| {
        let mut outbound = vzm::GroupSession::new(vzm::SessionConfig::version_1());
        let mut inbound = vzm::InboundGroupSession::from(&outbound);
        b.iter_batched_ref(
            || outbound.encrypt(PLAINTEXT).to_bytes(),
            |wire| {
                let message = vzm::MegolmMessage::from_bytes(wire).unwrap();
                inbound.decrypt(&message).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn pickles(c: &mut Criterion) {
    let mut rng = rand::rng();
    let mut ours: Account = Account::new(&mut rng);
    ours.generate_one_time_keys(&mut rng, 50);
    let mut theirs = vz::Account::new();
    theirs.generate_one_time_keys(50);

    let mut g = c.benchmark_group("account_pickle");
    g.bench_function("jeton", |b| {
        let mut out = vec![0u8; <Account as Pickle>::MAX_PICKLE_SIZE];
        b.iter(|| {
            ours.pickle(&mut rand::rng(), &PICKLE_KEY, &mut out)
                .unwrap()
        })
    });
    g.bench_function("vodozemac", |b| {
        b.iter(|| theirs.pickle().encrypt(&PICKLE_KEY))
    });
    g.finish();

    let mut g = c.benchmark_group("account_unpickle");
    g.bench_function("jeton", |b| {
        let mut pickle = vec![0u8; <Account as Pickle>::MAX_PICKLE_SIZE];
        let len = ours
            .pickle(&mut rand::rng(), &PICKLE_KEY, &mut pickle)
            .unwrap();
        pickle.truncate(len);
        b.iter_batched_ref(
            || pickle.clone(),
            |p| <Account as Pickle>::from_pickle(p, &PICKLE_KEY).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("vodozemac", |b| {
        let pickle = theirs.pickle().encrypt(&PICKLE_KEY);
        b.iter(|| {
            vz::Account::from_pickle(
                vz::AccountPickle::from_encrypted(&pickle, &PICKLE_KEY).unwrap(),
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("session_pickle_roundtrip");
    g.bench_function("jeton", |b| {
        let (alice, _) = our_session_pair();
        let mut out = vec![0u8; Session::MAX_PICKLE_SIZE];
        b.iter(|| {
            let len = alice
                .pickle(&mut rand::rng(), &PICKLE_KEY, &mut out)
                .unwrap();
            Session::from_pickle(&mut out[..len], &PICKLE_KEY).unwrap()
        })
    });
    g.bench_function("vodozemac", |b| {
        let (alice, _) = vz_session_pair();
        b.iter(|| {
            let pickle = alice.pickle().encrypt(&PICKLE_KEY);
            vz::Session::from_pickle(
                vz::SessionPickle::from_encrypted(&pickle, &PICKLE_KEY).unwrap(),
            )
        })
    });
    g.finish();
}

/// The mean of a benchmark measured in this run (older results on disk are ignored).
fn mean_ns(dir: &std::path::Path, group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let path = dir
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn print_ratio_table(dir: &std::path::Path, since: SystemTime) {
    println!("\n| operation | jeton-olm | vodozemac | jeton/vodozemac |");
    println!("| --- | ---: | ---: | ---: |");
    for (group, what) in OPERATIONS {
        match (
            mean_ns(dir, group, "jeton", since),
            mean_ns(dir, group, "vodozemac", since),
        ) {
            (Some(ours), Some(theirs)) => println!(
                "| {what} | {:.1} µs | {:.1} µs | {:.2}x |",
                ours / 1000.0,
                theirs / 1000.0,
                ours / theirs
            ),
            _ => println!("| {what} | not run | | |"),
        }
    }
}

fn main() {
    let since = SystemTime::now();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion-olm");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    accounts(&mut c);
    olm(&mut c);
    megolm(&mut c);
    pickles(&mut c);
    c.final_summary();
    print_ratio_table(&dir, since);
}
