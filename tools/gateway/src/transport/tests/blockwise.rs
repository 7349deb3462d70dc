//! Block1 uploads, Block2 responses from one upstream fetch, media bodies and the body limit.

use super::*;

#[test]
fn block1_upload_is_assembled_before_forwarding() {
    let mut h = Harness::new(Limits::default());
    let body = serde_json::json!({"one_time_keys": {"k": "x".repeat(2100)}})
        .to_string()
        .into_bytes();
    let path = ["_matrix", "client", "v3", "keys", "upload"];
    let chunks: Vec<&[u8]> = body.chunks(1024).collect();
    let mut forwarded = Vec::new();
    for (num, chunk) in chunks.iter().enumerate() {
        let mut p = request(
            MessageType::Confirmable,
            2,
            100 + num as u16,
            &[num as u8],
            &path,
        );
        let more = num + 1 < chunks.len();
        p.add_option(
            CoapOption::Block1,
            message::block_option(BlockValue {
                num: num as u32,
                more,
                szx: 6,
            }),
        );
        p.payload = chunk.to_vec();
        let actions = h.feed(&p);
        if more {
            let reply = &sent(&actions)[0];
            assert_eq!(code_of(reply), "2.31");
            assert_eq!(
                BlockValue::from_option(reply.get_first_option(CoapOption::Block1).unwrap())
                    .unwrap()
                    .num,
                num as u32
            );
            assert!(forwards(&actions).is_empty());
        } else {
            forwarded = forwards(&actions);
        }
    }
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].1.json_body.as_deref(), Some(body.as_slice()));
    let reply = sent(&h.upstream(forwarded[0].0, 200, r#"{"one_time_key_counts":{}}"#));
    assert_eq!(code_of(&reply[0]), "2.04");
    assert!(reply[0].get_first_option(CoapOption::Block1).is_some());

    // Block 1 without block 0: 4.08.
    let mut p = request(MessageType::Confirmable, 2, 200, &[9], &path);
    p.add_option(
        CoapOption::Block1,
        message::block_option(BlockValue {
            num: 1,
            more: true,
            szx: 6,
        }),
    );
    p.payload = vec![b' '; 1024];
    assert_eq!(code_of(&sent(&h.feed(&p))[0]), "4.08");
}

/// A Block1 upload of `file` to `path` with the given Content-Format and queries, with message
/// ids from `first_mid` on; the actions of the last block.
fn upload(
    h: &mut Harness,
    first_mid: u16,
    path: &[&str],
    content_format: Option<u16>,
    queries: &[&str],
    file: &[u8],
) -> Vec<Action> {
    let chunks: Vec<&[u8]> = file.chunks(1024).collect();
    let mut last = Vec::new();
    for (num, chunk) in chunks.iter().enumerate() {
        let mut p = request(
            MessageType::Confirmable,
            2,
            first_mid + num as u16,
            &[7],
            path,
        );
        p.add_option(
            CoapOption::Unknown(profile::option::CBOR_TABLE_VERSION),
            vec![2],
        );
        if let Some(cf) = content_format {
            p.add_option(
                CoapOption::ContentFormat,
                message::encode_uint(u64::from(cf)),
            );
        }
        for query in queries {
            p.add_option(CoapOption::UriQuery, query.as_bytes().to_vec());
        }
        let more = num + 1 < chunks.len();
        let block = BlockValue {
            num: num as u32,
            more,
            szx: 6,
        };
        p.add_option(CoapOption::Block1, message::block_option(block));
        p.payload = chunk.to_vec();
        last = h.feed(&p);
        if more && code_of(&sent(&last)[0]) != "2.31" {
            break;
        }
    }
    last
}

#[test]
fn media_uploads_are_raw_bytes_with_their_type_and_their_own_limit() {
    let mut h = Harness::new(Limits {
        max_body: 1000,
        max_media_body: 8192,
        ..Limits::default()
    });
    // Bytes that are not CBOR, announced as CBOR: a media body is never transcoded.
    let file: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let actions = upload(
        &mut h,
        100,
        &["Mu"],
        Some(60),
        &["filename=a b.bin", "content_type=audio/ogg"],
        &file,
    );
    let forwarded = forwards(&actions);
    assert_eq!(forwarded.len(), 1);
    let forwarded_upload = &forwarded[0].1;
    assert_eq!(forwarded_upload.json_body.as_deref(), Some(file.as_slice()));
    assert_eq!(forwarded_upload.content_type.as_deref(), Some("audio/ogg"));
    assert_eq!(
        forwarded_upload.path_and_query, "/_matrix/media/v3/upload?filename=a%20b.bin",
        "the content_type query is the gateway's, not forwarded"
    );
    // Block 0 again under a new message id (every answer to it lost): 2.31 again, and the
    // transfer goes on.
    let mut first = request(MessageType::Confirmable, 2, 150, &[8], &["Mu"]);
    first.add_option(
        CoapOption::Unknown(profile::option::CBOR_TABLE_VERSION),
        vec![2],
    );
    first.add_option(
        CoapOption::Block1,
        message::block_option(BlockValue {
            num: 0,
            more: true,
            szx: 6,
        }),
    );
    first.payload = file[..1024].to_vec();
    assert_eq!(code_of(&sent(&h.feed(&first))[0]), "2.31");
    first.header.message_id = 151;
    assert_eq!(code_of(&sent(&h.feed(&first))[0]), "2.31");
    // The Content-Format names the type when no query does.
    let actions = upload(&mut h, 200, &["Mu"], Some(23), &[], b"png");
    let forwarded = forwards(&actions);
    assert_eq!(forwarded[0].1.content_type.as_deref(), Some("image/png"));
    h.upstream(forwarded[0].0, 200, r#"{"content_uri":"mxc://s/m"}"#);
    // A Content-Format without a media type the gateway knows: 4.15, unless named by query.
    let actions = upload(&mut h, 250, &["Mu"], Some(9999), &[], b"x");
    assert_eq!(code_of(&sent(&actions)[0]), "4.15");
    let actions = upload(
        &mut h,
        260,
        &["Mu"],
        Some(9999),
        &["content_type=x/y"],
        b"x",
    );
    assert_eq!(forwards(&actions)[0].1.content_type.as_deref(), Some("x/y"));
    // Beyond the media limit: 4.13 with the media limit as Size1.
    let actions = upload(&mut h, 300, &["Mu"], Some(42), &[], &[0; 9000]);
    assert!(forwards(&actions).is_empty());
    let reply = &sent(&actions)[0];
    assert_eq!(code_of(reply), "4.13");
    assert_eq!(
        reply.get_first_option(CoapOption::Size1),
        Some(&message::encode_uint(8192))
    );
}

/// The last Block1 block of `file` to `Mu` (Content-Format 42), under message id `mid`.
fn last_media_block(mid: u16, file: &[u8]) -> Packet {
    let num = (file.len() - 1) / 1024;
    let mut p = request(MessageType::Confirmable, 2, mid, &[7], &["Mu"]);
    p.add_option(
        CoapOption::Unknown(profile::option::CBOR_TABLE_VERSION),
        vec![2],
    );
    p.add_option(CoapOption::ContentFormat, message::encode_uint(42));
    let block = BlockValue {
        num: num as u32,
        more: false,
        szx: 6,
    };
    p.add_option(CoapOption::Block1, message::block_option(block));
    p.payload = file[num * 1024..].to_vec();
    p
}

#[test]
fn the_last_block_sent_again_gets_the_answer_the_upload_got() {
    let mut h = Harness::new(Limits::default());
    let file: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 251) as u8).collect();
    let forwarded = forwards(&upload(&mut h, 100, &["Mu"], Some(42), &[], &file));
    assert_eq!(forwarded.len(), 1);
    // Sent again while the homeserver has the file: try again in a second, nothing forwarded.
    let actions = h.feed(&last_media_block(120, &file));
    assert!(forwards(&actions).is_empty(), "the file went up once");
    let busy = &sent(&actions)[0];
    assert_eq!(code_of(busy), "5.03");
    assert_eq!(
        busy.get_first_option(CoapOption::MaxAge),
        Some(&message::encode_uint(1))
    );
    let answer = sent(&h.upstream(forwarded[0].0, 200, r#"{"content_uri":"mxc://s/m"}"#));
    assert_eq!(code_of(&answer[0]), "2.04");
    // Every answer to it lost, the last block under a new message id: the same answer.
    let actions = h.feed(&last_media_block(121, &file));
    assert!(forwards(&actions).is_empty(), "the file went up once");
    let again = &sent(&actions)[0];
    assert_eq!(code_of(again), "2.04");
    assert_eq!(again.payload, answer[0].payload);
    assert_eq!(
        again.get_first_option(CoapOption::Block1),
        answer[0].get_first_option(CoapOption::Block1)
    );
    // Another body's last block is no repeat: its earlier blocks are not here.
    let other: Vec<u8> = file.iter().map(|b| b ^ 1).collect();
    let actions = h.feed(&last_media_block(122, &other));
    assert_eq!(code_of(&sent(&actions)[0]), "4.08");
    // A new upload under the same request starts afresh and goes up.
    let forwarded = forwards(&upload(&mut h, 200, &["Mu"], Some(42), &[], &file));
    assert_eq!(
        forwarded.len(),
        1,
        "a new upload of the same file goes up again"
    );
}

/// `p` asking for block `num` of 1024 bytes.
fn with_block2(mut p: Packet, num: u32) -> Packet {
    let block = BlockValue {
        num,
        more: false,
        szx: 6,
    };
    p.add_option(CoapOption::Block2, message::block_option(block));
    p
}

#[test]
fn media_downloads_are_fetched_once_and_served_raw_in_blocks() {
    let mut h = Harness::new(Limits::default());
    let path = ["Md", "example.org", "AbC"];
    let file: Vec<u8> = (0..2500u32).map(|i| (i % 256) as u8).collect();
    let v2 = |mut p: Packet| {
        p.add_option(
            CoapOption::Unknown(profile::option::CBOR_TABLE_VERSION),
            vec![2],
        );
        p
    };
    let actions = h.feed(&v2(get(1, &path)));
    let forwarded = forwards(&actions);
    assert_eq!(
        forwarded[0].1.path_and_query,
        "/_matrix/client/v1/media/download/example.org/AbC"
    );
    assert_eq!(
        forwarded[0].1.max_response_body,
        Some(Limits::default().max_media_body)
    );
    let outcome = UpstreamOutcome::Response(UpstreamResponse {
        status: 200,
        retry_after: None,
        body: file.clone(),
        content_type: Some("application/octet-stream".into()),
    });
    let first = sent(&h.core.on_upstream(forwarded[0].0, outcome, h.now));
    assert_eq!(
        first[0].get_first_option(CoapOption::ContentFormat),
        Some(&message::encode_uint(42))
    );
    let mut received = first[0].payload.clone();
    for num in 1..3u32 {
        let actions = h.feed(&with_block2(v2(get(10 + num as u16, &path)), num));
        assert!(forwards(&actions).is_empty(), "served from the one fetch");
        received.extend_from_slice(&sent(&actions)[0].payload);
    }
    assert_eq!(received, file);
}

#[test]
fn oversized_body_is_4_13_with_size1() {
    let mut h = Harness::new(Limits {
        max_body: 100,
        ..Limits::default()
    });
    let mut p = request(MessageType::Confirmable, 2, 1, &[1], PLAIN);
    p.payload = vec![b'{'; 101];
    let actions = h.feed(&p);
    assert!(forwards(&actions).is_empty());
    let reply = &sent(&actions)[0];
    assert_eq!(code_of(reply), "4.13");
    assert_eq!(reply.get_first_option(CoapOption::Size1), Some(&vec![100]));
}

#[test]
fn large_response_goes_out_in_blocks_from_one_upstream_fetch() {
    let mut h = Harness::new(Limits::default());
    let body = serde_json::json!({"next_batch": "s9", "pad": "p".repeat(2500)}).to_string();
    let f = forwards(&h.feed(&get(1, SYNC)));
    let first = sent(&h.upstream(f[0].0, 200, &body));
    let b = block2(&first[0]).unwrap();
    assert!(b.more);
    assert_eq!(first[0].payload.len(), 1024);
    assert_eq!(
        first[0].get_first_option(CoapOption::Size2),
        Some(&message::encode_uint(body.len() as u64))
    );
    let mut assembled = first[0].payload.clone();
    for num in 1..3 {
        let actions = h.feed(&with_block2(get(10 + num as u16, SYNC), num));
        assert!(
            forwards(&actions).is_empty(),
            "later blocks come from the stored body"
        );
        let reply = &sent(&actions)[0];
        assert_eq!(block2(reply).unwrap().num, num);
        assembled.extend_from_slice(&reply.payload);
    }
    assert_eq!(assembled, body.as_bytes());
}
