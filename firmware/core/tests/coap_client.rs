//! The CoAP client engine against a scripted server over a simulated network: loss,
//! duplication, reordering, delay and clock jumps, all from seeds.

mod support;

use jeton_core::coap::message::{Code, Message, MessageType};
use jeton_core::coap::option::{self, BlockValue};
use jeton_core::coap::{
    BodyDelivery, ClientConfig, Event, ExchangeError, Request, RequestError, RequestId,
};
use proptest::prelude::*;
use support::{Impairment, Outcome, SlowMode, World, path};

const CLEAN: Impairment = impaired(0, 0, 20);

/// A network losing and duplicating these percentages of datagrams, each delayed up to
/// `max_delay_ms` (which reorders them).
const fn impaired(loss: u64, duplication: u64, max_delay_ms: u64) -> Impairment {
    Impairment {
        loss,
        duplication,
        max_delay_ms,
    }
}

/// The outcomes of a world where request `id` failed and nothing else happened.
fn only_failure(id: RequestId, error: ExchangeError) -> Vec<Outcome> {
    vec![Outcome::Failed { id, error }]
}

fn echo_body(n: usize) -> Vec<u8> {
    format!("message {n} from the token").into_bytes()
}

#[test]
fn every_request_completes_exactly_once_under_loss_and_duplication() {
    let lossy = impaired(30, 10, 300);
    let echo = path(&["echo"]);
    let (mut succeeded, mut timed_out) = (0, 0);
    for seed in 0..20u64 {
        let mut world: World = World::new(seed, lossy, ClientConfig::default());
        let mut ids = Vec::new();
        let mut bodies = Vec::new();
        for n in 0..30 {
            let body = echo_body(n);
            // Keep the queue topped up, as a sending application would.
            let id = loop {
                match world
                    .client
                    .request(&Request::new(Code::POST, &echo, &body))
                {
                    Ok(id) => break id,
                    Err(RequestError::QueueFull) => assert!(world.step(u64::MAX)),
                    Err(other) => panic!("unexpected {other}"),
                }
            };
            ids.push(id);
            bodies.push(body);
        }
        world.run_until(3_600_000, |w| w.client.is_idle());
        for (id, body) in ids.iter().zip(&bodies) {
            let outcomes = world.outcomes_for(*id);
            assert_eq!(outcomes.len(), 1, "seed {seed}: {id:?} got {outcomes:?}");
            match outcomes[0] {
                Outcome::Response {
                    code, body: echoed, ..
                } => {
                    assert_eq!(*code, Code::CHANGED);
                    assert_eq!(echoed, body);
                    succeeded += 1;
                }
                Outcome::Failed { error, .. } => {
                    assert_eq!(*error, ExchangeError::Timeout);
                    timed_out += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
            // The server's duplicate cache and the engine's fixed message id mean the
            // request was processed at most once, whatever the network did.
            let processed = world
                .server
                .processed
                .iter()
                .filter(|(_, processed)| processed == body)
                .count();
            assert!(processed <= 1, "seed {seed}: processed {processed} times");
        }
    }
    // With 30% loss each way a CON exchange fails five times in a row with probability
    // about 0.51^5 = 3.5%; most complete.
    println!("600 requests: {succeeded} answered, {timed_out} timed out");
    assert!(succeeded >= 540, "{succeeded} of 600 answered");
}

#[test]
fn retransmissions_back_off_within_rfc7252_bounds() {
    let slow = path(&["slow"]);
    let mut first_timeouts = Vec::new();
    for seed in 0..30u64 {
        let mut world: World = World::new(seed, CLEAN, ClientConfig::default());
        world.server.slow = SlowMode::Silent;
        let start = world.now;
        let id = world.request(Code::GET, &slow, &[]);
        world.run_for(200_000);
        let sent: Vec<u64> = world.client_sent.iter().map(|(at, _)| at - start).collect();
        assert_eq!(
            sent.len(),
            5,
            "one transmission and MAX_RETRANSMIT = 4 retries"
        );
        let ids: Vec<u16> = world
            .client_sent
            .iter()
            .map(|(_, bytes)| Message::decode(bytes).unwrap().header.message_id)
            .collect();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "same message id each time"
        );
        let initial = sent[1] - sent[0];
        assert!(
            (2_000..3_000).contains(&initial),
            "ACK_TIMEOUT * [1, 1.5): {initial}"
        );
        first_timeouts.push(initial);
        for (k, pair) in sent.windows(2).enumerate() {
            assert_eq!(pair[1] - pair[0], initial << k, "doubling back-off");
        }
        let failed_at = world.outcomes.iter().position(|o| {
            *o == Outcome::Failed {
                id,
                error: ExchangeError::Timeout,
            }
        });
        assert!(failed_at.is_some());
        assert_eq!(world.stats_retransmissions(), 4);
        // The exchange gives up 31 initial timeouts after the first send: within
        // MAX_TRANSMIT_WAIT = 93 s.
        assert!(31 * initial <= 93_000);
    }
    first_timeouts.sort_unstable();
    first_timeouts.dedup();
    assert!(first_timeouts.len() > 20, "the jitter comes from the RNG");
}

trait Stats {
    fn stats_retransmissions(&self) -> u32;
}

impl<const A: usize, const B: usize> Stats for World<A, B> {
    fn stats_retransmissions(&self) -> u32 {
        self.client.stats().retransmissions
    }
}

#[test]
fn separate_response_is_acknowledged_and_delivered_once() {
    let slow = path(&["slow"]);
    let mut world: World = World::new(7, CLEAN, ClientConfig::default());
    world.server.slow = SlowMode::Separate(10_000);
    let id = world.request(Code::GET, &slow, &[]);
    world.run_for(5_000);
    assert!(
        world.outcomes.is_empty(),
        "still waiting after the empty ACK"
    );
    assert_eq!(
        world.client_sent.len(),
        1,
        "the empty ACK stopped retransmission"
    );
    world.run_for(60_000);
    assert_eq!(
        world.outcomes,
        vec![Outcome::Response {
            id,
            code: Code::CONTENT,
            body: b"late answer".to_vec()
        }]
    );
    let ack = Message::decode(&world.client_sent[1].1).unwrap();
    assert_eq!(ack.header.message_type, MessageType::Acknowledgement);
    assert_eq!(ack.header.code, Code::EMPTY);

    // The server's response again (as if our ACK were lost): ACKed again, not delivered.
    let response = world
        .server_sent
        .iter()
        .rfind(|bytes| {
            Message::decode(bytes).unwrap().header.message_type == MessageType::Confirmable
        })
        .unwrap()
        .clone();
    world.client.handle_datagram(&response, world.instant());
    world.flush();
    assert_eq!(world.outcomes.len(), 1);
    let again = Message::decode(&world.client_sent.last().unwrap().1).unwrap();
    assert_eq!(again.header.message_type, MessageType::Acknowledgement);
    assert_eq!(world.client.stats().duplicates, 1);
}

#[test]
fn separate_responses_survive_loss_and_duplication() {
    let slow = path(&["slow"]);
    for seed in 0..20 {
        let mut world: World = World::new(seed, impaired(20, 20, 500), ClientConfig::default());
        world.server.slow = SlowMode::Separate(3_000);
        let ids: Vec<_> = (0..4)
            .map(|_| world.request(Code::GET, &slow, &[]))
            .collect();
        world.run_until(1_000_000, |w| w.client.is_idle());
        for id in ids {
            assert_eq!(world.outcomes_for(id).len(), 1, "seed {seed}");
        }
    }
}

#[test]
fn reset_fails_the_exchange() {
    let slow = path(&["slow"]);
    let mut world: World = World::new(3, CLEAN, ClientConfig::default());
    world.server.slow = SlowMode::Reset;
    let id = world.request(Code::GET, &slow, &[]);
    world.run_for(10_000);
    assert_eq!(world.outcomes, only_failure(id, ExchangeError::Reset));
}

#[test]
fn unexpected_confirmable_messages_are_reset() {
    let mut world: World = World::new(3, CLEAN, ClientConfig::default());
    // A CON response with a token nobody asked for, and a CoAP ping (empty CON).
    let stray = b"\x41\x45\x12\x34\x99\xffhello";
    let ping = b"\x40\x00\x56\x78";
    world.client.handle_datagram(stray, world.instant());
    world.client.handle_datagram(ping, world.instant());
    world.flush();
    let replies: Vec<(MessageType, u16)> = world
        .client_sent
        .iter()
        .map(|(_, bytes)| {
            let message = Message::decode(bytes).unwrap();
            (message.header.message_type, message.header.message_id)
        })
        .collect();
    assert_eq!(
        replies,
        vec![(MessageType::Reset, 0x1234), (MessageType::Reset, 0x5678)]
    );
    assert!(world.outcomes.is_empty());
}

#[test]
fn block1_upload_follows_the_servers_smaller_block_size() {
    let echo = path(&["echo"]);
    let body: Vec<u8> = (0..3_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut world: World<4096, 2048> = World::new(11, CLEAN, ClientConfig::default());
    world.server.block_szx = 4; // the server wants 256-byte blocks
    let id = world.request(Code::POST, &echo, &body);
    world.run_until(60_000, |w| !w.outcomes.is_empty());
    assert_eq!(
        world.outcomes,
        vec![Outcome::Response {
            id,
            code: Code::CHANGED,
            body: b"3000 bytes".to_vec()
        }]
    );
    assert_eq!(world.server.processed, vec![("echo".into(), body.clone())]);
    // The first block goes out at 1024 bytes with Size1, then 256-byte blocks from offset
    // 1024 (block 4), as in RFC 7959 §2.5.
    let blocks: Vec<(BlockValue, Option<u32>)> = world
        .client_sent
        .iter()
        .map(|(_, bytes)| {
            let message = Message::decode(bytes).unwrap();
            let block = BlockValue::from_option(message.option(option::BLOCK1).unwrap()).unwrap();
            (block, message.uint_option(option::SIZE1))
        })
        .collect();
    assert_eq!(blocks[0].0.size(), 1024);
    assert_eq!(blocks[0].1, Some(3000));
    assert_eq!(blocks[1].0.num, 4);
    assert_eq!(blocks[1].0.size(), 256);
    assert!(blocks[1].1.is_none(), "Size1 only on the first block");
    assert_eq!(blocks.len(), 1 + (3000usize - 1024).div_ceil(256));
    assert!(!blocks.last().unwrap().0.more);
}

#[test]
fn a_body_sent_in_blocks_by_the_caller_gets_each_answer_continue_included() {
    // A file read from storage one block at a time: the caller queues block n only after the
    // answer to block n - 1, and the engine sends each as it is, with the caller's Block1.
    let echo = path(&["echo"]);
    let body: Vec<u8> = (0..2_500u32).map(|i| (i % 253) as u8).collect();
    for seed in 0..5 {
        let mut world: World<2048, 2048> =
            World::new(seed, impaired(20, 10, 200), ClientConfig::default());
        let blocks: Vec<&[u8]> = body.chunks(1024).collect();
        let mut codes = Vec::new();
        for (num, block) in blocks.iter().enumerate() {
            let block1 = BlockValue {
                num: num as u32,
                more: num + 1 < blocks.len(),
                szx: 6,
            };
            let request = Request {
                block1: Some(block1),
                ..Request::new(Code::POST, &echo, block)
            };
            let id = world.client.request(&request).unwrap();
            world.run_until(3_600_000, |w| !w.outcomes_for(id).is_empty());
            match world.outcomes_for(id)[..] {
                [Outcome::Response { code, .. }] => codes.push(*code),
                ref other => panic!("seed {seed} block {num}: {other:?}"),
            }
        }
        assert_eq!(codes, vec![Code::CONTINUE, Code::CONTINUE, Code::CHANGED]);
        assert_eq!(world.server.processed, vec![("echo".into(), body.clone())]);
        let sizes: Vec<Option<u32>> = world
            .client_sent
            .iter()
            .filter_map(|(_, bytes)| Message::decode(bytes).ok())
            .map(|message| message.uint_option(option::SIZE1))
            .collect();
        assert!(
            sizes.iter().all(Option::is_none),
            "no Size1: the caller knows the total"
        );
    }
}

#[test]
fn block1_upload_completes_under_loss() {
    let echo = path(&["echo"]);
    let body: Vec<u8> = (0..2_500u32).map(|i| (i % 256) as u8).collect();
    for seed in 0..10 {
        let mut world: World<4096, 2048> =
            World::new(seed, impaired(20, 10, 200), ClientConfig::default());
        let id = world.request(Code::POST, &echo, &body);
        world.run_until(3_600_000, |w| w.client.is_idle());
        let outcomes = world.outcomes_for(id);
        assert_eq!(outcomes.len(), 1, "seed {seed}");
        if let Outcome::Response { body: echoed, .. } = outcomes[0] {
            assert_eq!(echoed, b"2500 bytes");
            assert_eq!(world.server.processed, vec![("echo".into(), body.clone())]);
        }
    }
}

#[test]
fn block1_upload_with_a_block2_answer_fetches_the_rest_without_resending_the_body() {
    let mirror = path(&["mirror"]);
    let body = big_body(3_000);
    let mut world: World<4096, 4096> = World::new(41, CLEAN, ClientConfig::default());
    world.server.block_szx = 5; // 512-byte blocks both ways
    let id = world.request(Code::POST, &mirror, &body);
    world.run_until(60_000, |w| !w.outcomes.is_empty());
    assert_eq!(
        world.outcomes,
        vec![Outcome::Response {
            id,
            code: Code::CHANGED,
            body: body.clone()
        }]
    );
    assert_eq!(world.server.processed.len(), 1, "uploaded once");
    let follow_ups: Vec<Message<'_>> = world
        .client_sent
        .iter()
        .map(|(_, bytes)| Message::decode(bytes).unwrap())
        .filter(|message| message.option(option::BLOCK2).is_some())
        .collect();
    assert_eq!(follow_ups.len(), 3000usize.div_ceil(512) - 1);
    for message in follow_ups {
        assert_eq!(message.header.code, Code::POST);
        assert!(message.payload.is_empty());
        assert!(message.option(option::BLOCK1).is_none());
    }
}

fn big_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 256) as u8).collect()
}

#[test]
fn block2_download_reassembles_the_body() {
    let big = path(&["big"]);
    let mut world: World<1024, 8192> = World::new(5, CLEAN, ClientConfig::default());
    world.server.big = big_body(5_000);
    world.server.block_szx = 5; // 512-byte blocks
    let id = world.request(Code::GET, &big, &[]);
    world.run_until(60_000, |w| !w.outcomes.is_empty());
    assert_eq!(
        world.outcomes,
        vec![Outcome::Response {
            id,
            code: Code::CONTENT,
            body: big_body(5_000)
        }]
    );
    assert_eq!(world.client_sent.len(), 5_000usize.div_ceil(512));
}

#[test]
fn block2_download_larger_than_the_buffer_fails_cleanly() {
    let big = path(&["big"]);
    let mut world: World = World::new(5, CLEAN, ClientConfig::default());
    world.server.big = big_body(5_000);
    let id = world.request(Code::GET, &big, &[]);
    world.run_until(60_000, |w| !w.outcomes.is_empty());
    assert_eq!(
        world.outcomes,
        only_failure(id, ExchangeError::ResponseTooLarge)
    );
    // The engine is usable afterwards.
    world.server.big = big_body(100);
    let id = world.request(Code::GET, &big, &[]);
    world.run_until(60_000, |w| w.outcomes.len() == 2);
    assert!(
        matches!(&world.outcomes[1], Outcome::Response { id: got, body, .. } if *got == id && *body == big_body(100))
    );
}

#[test]
fn block2_streamed_delivers_every_block_in_order_under_loss() {
    let big = path(&["big"]);
    for seed in 0..10 {
        let mut world: World = World::new(seed, impaired(20, 10, 300), ClientConfig::default());
        world.server.big = big_body(10_000);
        let request = Request {
            delivery: BodyDelivery::Streamed,
            ..Request::new(Code::GET, &big, &[])
        };
        let id = world.client.request(&request).unwrap();
        world.run_until(3_600_000, |w| w.client.is_idle());
        let mut body = Vec::new();
        let mut finished = false;
        for outcome in world.outcomes_for(id) {
            match outcome {
                Outcome::Block {
                    offset,
                    body: block,
                    last,
                    ..
                } => {
                    assert_eq!(*offset, body.len());
                    assert!(!finished);
                    body.extend_from_slice(block);
                    finished = *last;
                }
                Outcome::Failed { error, .. } => {
                    assert_eq!(*error, ExchangeError::Timeout);
                    finished = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(finished, "seed {seed}");
        if body.len() == 10_000 {
            assert_eq!(body, big_body(10_000));
        }
    }
}

#[test]
fn a_streamed_response_resumes_at_the_block_the_caller_names() {
    let big = path(&["big"]);
    let mut world: World = World::new(7, CLEAN, ClientConfig::default());
    world.server.big = big_body(5_000);
    let request = Request {
        delivery: BodyDelivery::Streamed,
        block2: Some(BlockValue {
            num: 2,
            more: false,
            szx: 6,
        }),
        ..Request::new(Code::GET, &big, &[])
    };
    let id = world.client.request(&request).unwrap();
    world.run_until(60_000, |w| w.client.is_idle());
    let blocks: Vec<(usize, usize, bool)> = world
        .outcomes_for(id)
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Block {
                offset, body, last, ..
            } => (*offset, body.len(), *last),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        blocks,
        vec![(2048, 1024, false), (3072, 1024, false), (4096, 904, true)]
    );
    let first = Message::decode(&world.client_sent[0].1).unwrap();
    let asked = BlockValue::from_option(first.option(option::BLOCK2).unwrap()).unwrap();
    assert_eq!(
        asked.num, 2,
        "the first request asks for block 2 straight away"
    );
}

fn observe_config() -> ClientConfig {
    ClientConfig {
        observe_silence_ms: 60_000,
        ..ClientConfig::default()
    }
}

#[test]
fn observe_delivers_fresh_notifications_in_order_and_drops_stale_ones() {
    let obs = path(&["obs"]);
    let mut world: World = World::new(21, CLEAN, observe_config());
    world.server.notifications_confirmable = false;
    let id = world.client.observe(&obs).unwrap();
    world.run_for(1_000);
    assert_eq!(
        world.outcomes,
        vec![Outcome::Notification {
            id,
            sequence: 0,
            body: b"state 0".to_vec()
        }]
    );
    // Numbers 3, 2, 5, 4, 6 arrive in that order: 2 and 4 are older than what was shown.
    for sequence in [3u32, 2, 5, 4, 6] {
        world
            .server
            .notify_with_sequence(sequence, format!("state {sequence}").as_bytes());
        world.run_for(100);
    }
    let shown: Vec<u32> = world
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Notification { sequence, .. } => Some(*sequence),
            _ => None,
        })
        .collect();
    assert_eq!(shown, vec![0, 3, 5, 6]);
    assert_eq!(world.client.stats().stale_notifications, 2);

    // After 128 s without news, even a lower number is taken (RFC 7641 §3.4).
    world.run_for(50_000);
    world.now += 80_000; // a clock jump past the silence deadline too
    world.server.notify_with_sequence(1, b"after restart");
    world.run_for(100);
    assert!(world.outcomes.contains(&Outcome::Notification {
        id,
        sequence: 1,
        body: b"after restart".to_vec()
    }));
}

#[test]
fn observe_notifications_survive_loss_duplication_and_reordering() {
    let obs = path(&["obs"]);
    for seed in 0..10 {
        let mut world: World = World::new(seed, impaired(30, 10, 2_000), observe_config());
        let id = world.client.observe(&obs).unwrap();
        world.run_until(600_000, |w| !w.outcomes.is_empty());
        for n in 1..=20 {
            world
                .server
                .notify(world.now, format!("state {n}").as_bytes());
            world.run_for(1_500);
        }
        world.run_for(120_000);
        let sequences: Vec<u32> = world
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Notification {
                    id: got, sequence, ..
                } if *got == id => Some(*sequence),
                _ => None,
            })
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: delivered in order without repeats: {sequences:?}"
        );
        assert_eq!(
            sequences.last(),
            Some(&20),
            "seed {seed}: the latest state arrives (CON notifications are retransmitted)"
        );
    }
}

#[test]
fn silent_observation_is_registered_again_and_can_be_cancelled() {
    let obs = path(&["obs"]);
    let mut world: World = World::new(9, CLEAN, observe_config());
    let id = world.client.observe(&obs).unwrap();
    world.run_for(1_000);
    let first_token = world.server.observer().unwrap();
    world.run_for(59_000);
    assert_eq!(world.server.processed.len(), 1, "no re-registration yet");
    world.run_for(2_000);
    let registrations: Vec<_> = world
        .server
        .processed
        .iter()
        .filter(|(_, what)| what == b"register")
        .collect();
    assert_eq!(
        registrations.len(),
        2,
        "re-registered after 60 s of silence"
    );
    assert_eq!(
        world.server.observer(),
        Some(first_token),
        "with the same token"
    );
    // The answer repeats state 0, already shown: it is not shown twice.
    assert_eq!(world.outcomes.len(), 1);
    assert_eq!(world.client.stats().stale_notifications, 1);
    world.server.notify(world.now, b"state 1");
    world.run_for(1_000);
    assert_eq!(
        world.outcomes.last(),
        Some(&Outcome::Notification {
            id,
            sequence: 1,
            body: b"state 1".to_vec()
        })
    );

    world.client.cancel_observation().unwrap();
    world.run_for(5_000);
    assert_eq!(
        world.server.processed.last().unwrap().1,
        b"deregister".to_vec()
    );
    assert_eq!(world.server.observer(), None);
    // Nothing more goes out: the engine is idle.
    let sent = world.client_sent.len();
    world.run_for(600_000);
    assert_eq!(world.client_sent.len(), sent);
    assert!(world.client.is_idle());
}

#[test]
fn large_notification_is_fetched_block_by_block() {
    let obs = path(&["obs"]);
    let mut world: World = World::new(13, CLEAN, observe_config());
    world.server.block_szx = 4; // 256-byte blocks
    let id = world.client.observe(&obs).unwrap();
    world.run_for(1_000);
    let state = big_body(900);
    world.server.notify(world.now, &state);
    world.run_for(10_000);
    assert_eq!(
        world.outcomes.last().unwrap(),
        &Outcome::Notification {
            id,
            sequence: 1,
            body: state
        }
    );
    // The follow-up GETs carried Block2 and no Observe, under their own token.
    let follow_ups: Vec<_> = world
        .server
        .received
        .iter()
        .filter(|(_, options)| options.iter().any(|(n, _)| *n == option::BLOCK2))
        .collect();
    assert_eq!(follow_ups.len(), 3);
    assert!(
        follow_ups
            .iter()
            .all(|(_, options)| options.iter().all(|(n, _)| *n != option::OBSERVE))
    );
}

#[test]
fn block_fetches_repeat_the_registration_options_and_new_options_wait_for_a_re_registration() {
    let registered = [
        (option::URI_PATH, &b"obs"[..]),
        (option::URI_QUERY, &b"since=1"[..]),
    ];
    let moved = [
        (option::URI_PATH, &b"obs"[..]),
        (option::URI_QUERY, &b"since=2"[..]),
    ];
    let query_of = |options: &[(u16, Vec<u8>)]| -> Vec<u8> {
        options
            .iter()
            .find(|(n, _)| *n == option::URI_QUERY)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut world: World = World::new(14, CLEAN, observe_config());
    world.server.block_szx = 4;
    let id = world.client.observe(&registered).unwrap();
    world.run_for(1_000);
    // The Matrix layer moves its cursor after a notification ...
    world.client.set_observation_options(&moved).unwrap();
    let state = big_body(600);
    world.server.notify(world.now, &state);
    world.run_for(10_000);
    assert_eq!(
        world.outcomes.last().unwrap(),
        &Outcome::Notification {
            id,
            sequence: 1,
            body: state
        }
    );
    // ... but the fetches of the pushed body still name it as registered.
    let fetches: Vec<_> = world
        .server
        .received
        .iter()
        .filter(|(_, options)| options.iter().any(|(n, _)| *n == option::BLOCK2))
        .map(|(_, options)| query_of(options))
        .collect();
    assert_eq!(fetches.len(), 2);
    assert!(fetches.iter().all(|q| q == b"since=1"), "{fetches:?}");
    // The next registration (after silence) uses the new options.
    world.run_for(observe_config().observe_silence_ms + 10_000);
    let registrations: Vec<_> = world
        .server
        .received
        .iter()
        .filter(|(_, options)| {
            options
                .iter()
                .any(|(n, v)| *n == option::OBSERVE && v.is_empty())
        })
        .map(|(_, options)| query_of(options))
        .collect();
    assert_eq!(
        registrations.first().map(Vec::as_slice),
        Some(&b"since=1"[..])
    );
    assert_eq!(
        registrations.last().map(Vec::as_slice),
        Some(&b"since=2"[..])
    );
}

#[test]
fn an_observation_can_be_registered_again_before_the_silence_period_ends() {
    let obs = path(&["obs"]);
    let mut world: World = World::new(15, CLEAN, observe_config());
    world.client.observe(&obs).unwrap();
    world.run_for(1_000);
    let registrations = |world: &World| {
        world
            .server
            .processed
            .iter()
            .filter(|(_, body)| body == b"register")
            .count()
    };
    assert_eq!(registrations(&world), 1);
    world.client.reregister_observation().unwrap();
    world.run_for(1_000);
    assert_eq!(registrations(&world), 2, "registered again at once");
    world.client.cancel_observation().unwrap();
    world.run_for(1_000);
    assert_eq!(
        world.client.reregister_observation(),
        Err(RequestError::NoObservation)
    );
}

#[test]
fn requests_queue_behind_the_one_in_flight() {
    let echo = path(&["echo"]);
    let mut world: World = World::new(17, CLEAN, ClientConfig::default());
    let bodies: Vec<Vec<u8>> = (0..4).map(echo_body).collect();
    for body in &bodies {
        world.request(Code::POST, &echo, body);
    }
    assert_eq!(
        world
            .client
            .request(&Request::new(Code::POST, &echo, b"fifth")),
        Err(RequestError::QueueFull)
    );
    world.flush();
    assert_eq!(world.client_sent.len(), 1, "NSTART = 1");
    world.run_until(60_000, |w| w.client.is_idle());
    let processed: Vec<Vec<u8>> = world
        .server
        .processed
        .iter()
        .map(|(_, body)| body.clone())
        .collect();
    assert_eq!(processed, bodies, "in order, each once");
}

/// Rewrites the start of `bytes` into a response to the client's last message (same
/// message id and token), so that random input reaches the exchange logic rather than
/// stopping at the decoder or at token matching.
fn aim_at_last_request<const A: usize, const B: usize>(
    world: &World<A, B>,
    bytes: &mut Vec<u8>,
    message_type: u8,
) {
    let Some((_, last)) = world.client_sent.last() else {
        return;
    };
    let header = Message::decode(last).unwrap().header;
    let token = header.token.as_bytes();
    let code = bytes.first().copied().unwrap_or(0x45);
    let mut aimed = vec![0x40 | (message_type << 4) | token.len() as u8, code];
    aimed.extend_from_slice(&header.message_id.to_be_bytes());
    aimed.extend_from_slice(token);
    aimed.extend_from_slice(bytes.get(1..).unwrap_or(&[]));
    *bytes = aimed;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever arrives, in whatever order and at whatever time, the engine neither panics
    /// nor reports a request twice, and it keeps working afterwards.
    #[test]
    fn arbitrary_datagrams_never_break_the_engine(
        inputs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..48), 0u8..5, 0u64..4_000),
            0..40,
        ),
    ) {
        let mut world: World<256, 256> = World::new(1, CLEAN, ClientConfig::default());
        let echo = path(&["echo"]);
        let obs = path(&["obs"]);
        let first = world.request(Code::POST, &echo, &[7u8; 100]);
        let second = world.request(Code::GET, &echo, &[]);
        let observation = world.client.observe(&obs).unwrap();
        for (mut bytes, aim, advance) in inputs {
            // 0..=3: aimed with that message type; 4: raw bytes.
            if aim < 4 {
                aim_at_last_request(&world, &mut bytes, aim);
            }
            world.client.handle_datagram(&bytes, world.instant());
            world.now += advance;
            world.client.handle_timeout(world.instant());
            world.flush();
        }
        for id in [first, second] {
            prop_assert!(world.outcomes_for(id).len() <= 1);
        }
        let _ = observation;
        // Let the real server answer: everything settles.
        world.run_until(3_600_000, |w| {
            w.outcomes_for(first).len() == 1 && w.outcomes_for(second).len() == 1
        });
        prop_assert_eq!(world.outcomes_for(first).len(), 1);
        prop_assert_eq!(world.outcomes_for(second).len(), 1);
    }
}

#[test]
fn clock_jumps_neither_burst_retransmissions_nor_lose_the_exchange() {
    let slow = path(&["slow"]);
    let mut world: World = World::new(31, CLEAN, ClientConfig::default());
    world.server.slow = SlowMode::Silent;
    let id = world.request(Code::GET, &slow, &[]);
    world.flush();
    assert_eq!(world.client_sent.len(), 1);
    // The board sleeps for an hour: one retransmission on waking, not five.
    world.now += 3_600_000;
    world.client.handle_timeout(world.instant());
    world.flush();
    assert_eq!(world.client_sent.len(), 2);
    let next = world.client.poll_timeout().unwrap().as_millis();
    assert!(next > world.now, "the next retransmission is in the future");
    // The exchange still runs its course and ends once, with a timeout.
    world.run_for(200_000);
    assert_eq!(world.client_sent.len(), 5);
    assert_eq!(world.outcomes, only_failure(id, ExchangeError::Timeout));
}

#[test]
fn a_separate_response_that_never_comes_times_out() {
    let slow = path(&["slow"]);
    let config = ClientConfig {
        response_timeout_ms: 30_000,
        ..ClientConfig::default()
    };
    let mut world: World = World::new(32, CLEAN, config);
    world.server.slow = SlowMode::Separate(1_000_000);
    let id = world.request(Code::GET, &slow, &[]);
    world.run_for(29_000);
    assert!(world.outcomes.is_empty());
    world.run_for(2_000);
    assert_eq!(world.outcomes, only_failure(id, ExchangeError::Timeout));
}

#[test]
fn an_untaken_response_holds_back_the_next_exchange() {
    let echo = path(&["echo"]);
    let obs = path(&["obs"]);
    let mut world: World = World::new(33, CLEAN, observe_config());
    world.take_events = false;
    let first = world.request(Code::POST, &echo, b"one");
    let second = world.request(Code::POST, &echo, b"two");
    world.run_for(10_000);
    assert_eq!(
        world.server.processed.len(),
        1,
        "the second waits for the buffer"
    );

    // Taking the event frees the buffer and lets the queue move.
    world.take_events = true;
    world.run_for(10_000);
    let ids: Vec<_> = world.outcomes.iter().map(Outcome::id).collect();
    assert_eq!(ids, vec![first, second]);

    // A notification that finds the buffer taken is not acknowledged (the server sends it
    // again), and the observation is registered again once the buffer is free, in case the
    // server gave up on it: its state is delivered once.
    let observation = world.client.observe(&obs).unwrap();
    world.run_for(1_000);
    world.take_events = false;
    world.request(Code::POST, &echo, b"three");
    world.run_for(1_000);
    let sent_before = world.client_sent.len();
    world.server.notify(world.now, b"state 1");
    world.run_for(2_000);
    assert!(world.client.stats().missed_notifications >= 1);
    let notification_id = last_notification_id(&world);
    assert!(
        !acknowledged_since(&world, sent_before, notification_id),
        "a notification the client could not take is never acknowledged"
    );
    world.take_events = true;
    world.run_for(10_000);
    let states: Vec<_> = world
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Notification { id, body, .. } if *id == observation => Some(body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        states.last(),
        Some(&b"state 1".to_vec()),
        "{:?}",
        world.outcomes
    );
    let state_1 = states.iter().filter(|b| *b == b"state 1").count();
    assert_eq!(state_1, 1, "{:?}", world.outcomes);
    assert!(acknowledged_since(&world, sent_before, notification_id));
    let registrations = world
        .server
        .processed
        .iter()
        .filter(|(_, what)| what == b"register")
        .count();
    assert_eq!(registrations, 2);
}

/// The message id of the last notification the server sent.
fn last_notification_id(world: &World) -> u16 {
    world
        .server_sent
        .iter()
        .rev()
        .map(|bytes| Message::decode(bytes).unwrap())
        .find(|m| {
            m.uint_option(option::OBSERVE).is_some()
                && m.header.message_type == MessageType::Confirmable
        })
        .map(|m| m.header.message_id)
        .expect("a notification was sent")
}

/// Whether the client acknowledged message `id` in a datagram it sent after its first `from`.
fn acknowledged_since(world: &World, from: usize, id: u16) -> bool {
    world.client_sent[from..].iter().any(|(_, bytes)| {
        let m = Message::decode(bytes).unwrap();
        m.header.message_type == MessageType::Acknowledgement && m.header.message_id == id
    })
}

#[test]
fn a_notification_is_acknowledged_only_once_the_caller_let_it_go_and_not_if_declined() {
    let obs = path(&["obs"]);
    let mut world: World = World::new(34, CLEAN, observe_config());
    let observation = world.client.observe(&obs).unwrap();
    world.run_for(1_000);
    world.take_events = false;
    world.server.notify(world.now, b"state 1");
    world.run_for(100);
    let id = last_notification_id(&world);
    assert!(
        !acknowledged_since(&world, 0, id),
        "not before the caller took it"
    );

    // The caller takes it and cannot keep it: no acknowledgement, and the retransmission is
    // delivered as new.
    let Some(Event::Notification { acknowledged, .. }) = world.client.poll_event() else {
        panic!("the notification waits for the caller");
    };
    assert!(acknowledged, "a confirmable notification that came whole");
    world.client.decline_notification();
    world.run_for(1_000);
    assert!(!acknowledged_since(&world, 0, id));
    world.take_events = true;
    world.run_for(10_000);
    let state_1 = Outcome::Notification {
        id: observation,
        sequence: 1,
        body: b"state 1".to_vec(),
    };
    // Taken and let go this time: acknowledged, and delivered once.
    assert_eq!(world.outcomes.iter().filter(|o| **o == state_1).count(), 1);
    assert_eq!(world.outcomes.last(), Some(&state_1));
    assert!(acknowledged_since(&world, 0, id));
}

#[test]
fn a_request_queued_first_goes_out_after_the_one_in_flight_and_before_the_waiting_ones() {
    let echo = path(&["echo"]);
    let mut world: World = World::new(11, CLEAN, ClientConfig::default());
    let waiting: Vec<Vec<u8>> = (0..3).map(echo_body).collect();
    let ids: Vec<_> = waiting
        .iter()
        .map(|body| world.request(Code::POST, &echo, body))
        .collect();
    // The first request is in flight once it was transmitted.
    world.flush();
    let urgent = b"handshake first".to_vec();
    let first = world
        .client
        .request_first(&Request::new(Code::POST, &echo, &urgent))
        .unwrap();
    world.run_until(600_000, |w| w.client.is_idle());
    let order: Vec<Vec<u8>> = world
        .server
        .processed
        .iter()
        .map(|(_, body)| body.clone())
        .collect();
    assert_eq!(
        order,
        vec![
            waiting[0].clone(),
            urgent.clone(),
            waiting[1].clone(),
            waiting[2].clone()
        ]
    );
    for (id, body) in ids
        .iter()
        .chain([&first])
        .zip(waiting.iter().chain([&urgent]))
    {
        match world.outcomes_for(*id).as_slice() {
            [Outcome::Response { body: echoed, .. }] => assert_eq!(echoed, body),
            other => panic!("{id:?}: {other:?}"),
        }
    }
}
