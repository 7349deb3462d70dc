//! Translation between one CoAP exchange and one HTTP exchange: the upstream request the
//! gateway makes, the status mapping of issue 4, Matrix error bodies, and route labels that
//! are safe to log and to use as metric labels.

use std::time::Duration;

use serde_json::{Value, json};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::message::code;
use crate::profile::{self, CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON, TableVersion};

/// A Matrix access token (a bearer secret): `Debug` never prints it and it is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AccessToken(String);

impl AccessToken {
    /// Takes the option-256 value, with or without a "Bearer " prefix.
    pub fn from_option(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let text = text.strip_prefix("Bearer ").unwrap_or(text).trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Self(text.to_owned()))
    }

    /// The token text, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// An HTTP request the gateway sends to the homeserver. `Debug` shows the body's length only
/// (bodies carry passwords and ciphertexts).
#[derive(Clone)]
pub struct UpstreamRequest {
    /// HTTP method.
    pub method: http::Method,
    /// Percent-encoded path with query, starting with `/`.
    pub path_and_query: String,
    /// Sent as `Authorization: Bearer`.
    pub access_token: Option<AccessToken>,
    /// The body: JSON, sent with `Content-Type: application/json`, unless `content_type` says
    /// otherwise (a media upload's file bytes).
    pub json_body: Option<Vec<u8>>,
    /// The `Content-Type` of a body that is not JSON (media uploads).
    pub content_type: Option<String>,
    /// A response limit other than the configured `max_response_body` (media downloads).
    pub max_response_body: Option<usize>,
    /// Give up (and answer 5.04) after this long.
    pub timeout: Duration,
}

impl core::fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field(
                "route",
                &route_label(self.path_and_query.split('?').next().unwrap_or_default()),
            )
            .field("access_token", &self.access_token)
            .field("json_body_len", &self.json_body.as_ref().map(Vec::len))
            .field("content_type", &self.content_type)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What came back from the homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// An HTTP response.
    Response(UpstreamResponse),
    /// No response within the request's timeout.
    Timeout,
    /// No connection could be made, or it broke.
    Unreachable,
    /// The response body was larger than the configured limit.
    TooLarge,
}

/// An HTTP response from the homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: u16,
    /// From the `Retry-After` header.
    pub retry_after: Option<Duration>,
    /// The body (JSON for every Matrix endpoint, the file for a media download).
    pub body: Vec<u8>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
}

/// A CoAP response before it gets a header: code, options that depend on content, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseContent {
    /// CoAP response code.
    pub code: u8,
    /// Max-Age option (seconds), for 4.29.
    pub max_age: Option<u32>,
    /// Content-Format option.
    pub content_format: Option<u16>,
    /// The whole body (blockwise splits it later).
    pub payload: Vec<u8>,
}

/// How the client wants bodies encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encoding {
    /// CBOR (Content-Format 60) rather than JSON.
    pub cbor: bool,
    /// Integer-key table for CBOR.
    pub version: TableVersion,
}

/// HTTP status -> CoAP code, as issue 4 lists it.
pub fn status_to_code(status: u16, method: &http::Method) -> u8 {
    match status {
        201 => code::CREATED,
        200..=299 if *method == http::Method::GET => code::CONTENT,
        200..=299 if *method == http::Method::DELETE => code::DELETED,
        200..=299 => code::CHANGED,
        401 => code::UNAUTHORIZED,
        403 => code::FORBIDDEN,
        404 => code::NOT_FOUND,
        405 => code::METHOD_NOT_ALLOWED,
        409 => code::CONFLICT,
        413 => code::REQUEST_ENTITY_TOO_LARGE,
        415 => code::UNSUPPORTED_CONTENT_FORMAT,
        429 => code::TOO_MANY_REQUESTS,
        502 | 503 => code::SERVICE_UNAVAILABLE,
        504 => code::GATEWAY_TIMEOUT,
        501 => code::NOT_IMPLEMENTED,
        400..=499 => code::BAD_REQUEST,
        _ => code::INTERNAL_SERVER_ERROR,
    }
}

/// A Matrix-style error body produced by the gateway itself.
pub fn gateway_error(
    code: u8,
    errcode: &str,
    message: &str,
    encoding: Encoding,
) -> ResponseContent {
    encode_body(
        code,
        &json!({ "errcode": errcode, "error": message }),
        encoding,
    )
}

/// `value` as the body of a `code` response in the client's encoding (JSON if it does not
/// transcode).
pub fn encode_body(code: u8, value: &Value, encoding: Encoding) -> ResponseContent {
    if encoding.cbor
        && let Ok(payload) = profile::json_to_cbor(value, encoding.version)
    {
        return ResponseContent {
            code,
            max_age: None,
            content_format: Some(CONTENT_FORMAT_CBOR),
            payload,
        };
    }
    ResponseContent {
        code,
        max_age: None,
        content_format: Some(CONTENT_FORMAT_JSON),
        payload: value.to_string().into_bytes(),
    }
}

/// What `/_matrix/client/versions` gains: MSC3079's advertisement of the profile.
pub fn low_bandwidth_advertisement() -> Value {
    json!({ "cbor_enum_version": 2, "coap_enum_version": 1 })
}

/// Which responses the gateway treats specially.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/_matrix/client/versions`: gains MSC3079's advertisement.
    Versions,
    /// A `/sync` response: under v2 CBOR, what carries nothing is left out (PROFILE.md section 3.4),
    /// including a `prev_batch` equal to the `since` the request carried.
    Sync {
        /// The request's `since`, if it had one.
        since: Option<String>,
    },
    /// A media download: a success body is the file, passed through as bytes.
    MediaDownload,
    /// The media configuration: `m.upload.size` lowered to the gateway's media limit.
    MediaConfig {
        /// The gateway's media body limit.
        upload_limit: usize,
    },
    /// Anything else: transcoded as it is.
    Other,
}

/// The CoAP response for an upstream outcome.
pub fn translate_response(
    outcome: &UpstreamOutcome,
    method: &http::Method,
    encoding: Encoding,
    route: &Route,
) -> ResponseContent {
    let response = match upstream_response(outcome, encoding) {
        Ok(response) => response,
        Err(content) => return content,
    };
    let coap_code = status_to_code(response.status, method);
    if *route == Route::MediaDownload && (200..300).contains(&response.status) {
        return ResponseContent {
            code: coap_code,
            max_age: None,
            content_format: Some(crate::media::content_format(
                response.content_type.as_deref().unwrap_or_default(),
            )),
            payload: response.body.clone(),
        };
    }
    let mut value: Option<Value> = if response.body.is_empty() {
        None
    } else {
        serde_json::from_slice(&response.body).ok()
    };
    adapt_body(&mut value, route, coap_code, encoding);
    let max_age =
        (coap_code == code::TOO_MANY_REQUESTS).then(|| retry_after_secs(response, value.as_ref()));
    let mut content = match value {
        Some(value) => encode_body(coap_code, &value, encoding),
        // Not JSON (or empty): pass the bytes through untouched.
        None => ResponseContent {
            code: coap_code,
            max_age: None,
            content_format: (!response.body.is_empty()).then_some(CONTENT_FORMAT_JSON),
            payload: response.body.clone(),
        },
    };
    content.max_age = max_age;
    content
}

/// The homeserver's response, or the gateway's own error answer when there is none.
fn upstream_response(
    outcome: &UpstreamOutcome,
    encoding: Encoding,
) -> Result<&UpstreamResponse, ResponseContent> {
    match outcome {
        UpstreamOutcome::Response(r) => Ok(r),
        UpstreamOutcome::Timeout => Err(gateway_error(
            code::GATEWAY_TIMEOUT,
            "M_UNKNOWN",
            "The homeserver did not answer in time.",
            encoding,
        )),
        UpstreamOutcome::Unreachable => Err(gateway_error(
            code::BAD_GATEWAY,
            "M_UNKNOWN",
            "The homeserver could not be reached.",
            encoding,
        )),
        UpstreamOutcome::TooLarge => Err(gateway_error(
            code::BAD_GATEWAY,
            "M_TOO_LARGE",
            "The homeserver's response is larger than the gateway forwards.",
            encoding,
        )),
    }
}

/// Route-specific changes to a successful JSON answer: the versions list advertises the
/// low-bandwidth profile, a compact sync answer is pruned, the media upload limit is lowered
/// to the gateway's.
fn adapt_body(value: &mut Option<Value>, route: &Route, coap_code: u8, encoding: Encoding) {
    if *route == Route::Versions
        && coap_code == code::CONTENT
        && let Some(Value::Object(map)) = value.as_mut()
    {
        map.insert("m.low_bandwidth".to_owned(), low_bandwidth_advertisement());
    }
    if let Route::Sync { since } = route
        && coap_code == code::CONTENT
        && encoding.cbor
        && encoding.version == TableVersion::V2
        && let Some(value) = value.as_mut()
    {
        profile::prune_sync_response(value, since.as_deref());
    }
    if let Route::MediaConfig { upload_limit } = route
        && coap_code == code::CONTENT
        && let Some(value) = value.as_mut()
    {
        crate::media::clamp_upload_size(value, *upload_limit);
    }
}

/// The body of a successful sync response: a JSON object with a `next_batch` text.
pub fn sync_success(outcome: &UpstreamOutcome) -> Option<Value> {
    let UpstreamOutcome::Response(r) = outcome else {
        return None;
    };
    if !(200..300).contains(&r.status) {
        return None;
    }
    let value: Value = serde_json::from_slice(&r.body).ok()?;
    value.get("next_batch")?.as_str()?;
    Some(value)
}

/// For an outcome the homeserver may well answer differently soon (no answer, 5xx, 429): how
/// long it asked to wait (zero when it did not say).
pub fn transient(outcome: &UpstreamOutcome) -> Option<Duration> {
    match outcome {
        UpstreamOutcome::Timeout | UpstreamOutcome::Unreachable => Some(Duration::ZERO),
        UpstreamOutcome::Response(r) if r.status == 429 => {
            let body = serde_json::from_slice::<Value>(&r.body).ok();
            Some(Duration::from_secs(
                retry_after_secs(r, body.as_ref()).into(),
            ))
        }
        UpstreamOutcome::Response(r) if (500..600).contains(&r.status) => Some(Duration::ZERO),
        UpstreamOutcome::Response(_) | UpstreamOutcome::TooLarge => None,
    }
}

/// Seconds to wait: the Retry-After header, else the body's `retry_after_ms`, rounded up.
fn retry_after_secs(response: &UpstreamResponse, body: Option<&Value>) -> u32 {
    let from_body = body
        .and_then(|b| b.get("retry_after_ms"))
        .and_then(Value::as_u64)
        .map(Duration::from_millis);
    let wait = response
        .retry_after
        .or(from_body)
        .unwrap_or(Duration::from_secs(1));
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// Percent-encodes one Uri-Query option (`name=value`, unescaped) for an HTTP query string.
pub fn encode_query_pair(pair: &str) -> String {
    const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'!')
        .remove(b'$')
        .remove(b'@')
        .remove(b':');
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    let name = percent_encoding::utf8_percent_encode(name, QUERY);
    if pair.contains('=') {
        format!(
            "{name}={}",
            percent_encoding::utf8_percent_encode(value, QUERY)
        )
    } else {
        name.to_string()
    }
}

/// The route label of every path outside the profile's table.
pub const OTHER_ROUTE: &str = "other";

/// A label for a path that is safe to log and one of a fixed set as a metric label: the
/// profile's template when the path is in its table, [`OTHER_ROUTE`] otherwise (a label per
/// unknown path would let anyone grow the metrics without bound).
pub fn route_label(path: &str) -> &'static str {
    profile::route_template(path).unwrap_or(OTHER_ROUTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Encoding = Encoding {
        cbor: false,
        version: TableVersion::V1,
    };

    fn response(status: u16, body: &str) -> UpstreamOutcome {
        UpstreamOutcome::Response(UpstreamResponse {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
            content_type: None,
        })
    }

    #[test]
    fn status_mapping_follows_issue_4() {
        let get = http::Method::GET;
        let put = http::Method::PUT;
        let post = http::Method::POST;
        assert_eq!(code::dotted(status_to_code(200, &get)), "2.05");
        assert_eq!(code::dotted(status_to_code(200, &put)), "2.04");
        assert_eq!(code::dotted(status_to_code(200, &post)), "2.04");
        assert_eq!(code::dotted(status_to_code(201, &post)), "2.01");
        for (status, coap) in [
            (400, "4.00"),
            (401, "4.01"),
            (403, "4.03"),
            (404, "4.04"),
            (405, "4.05"),
            (413, "4.13"),
            (429, "4.29"),
            (502, "5.03"),
            (503, "5.03"),
        ] {
            assert_eq!(
                code::dotted(status_to_code(status, &get)),
                coap,
                "HTTP {status}"
            );
        }
        assert_eq!(
            code::dotted(
                translate_response(&UpstreamOutcome::Timeout, &get, JSON, &Route::Other).code
            ),
            "5.04"
        );
        assert_eq!(
            code::dotted(
                translate_response(&UpstreamOutcome::Unreachable, &get, JSON, &Route::Other).code
            ),
            "5.02"
        );
    }

    #[test]
    fn rate_limit_carries_max_age_from_retry_after_or_body() {
        let body =
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":2500}"#;
        let r = translate_response(
            &response(429, body),
            &http::Method::POST,
            JSON,
            &Route::Other,
        );
        assert_eq!(r.max_age, Some(3));
        let with_header = UpstreamOutcome::Response(UpstreamResponse {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            body: body.as_bytes().to_vec(),
            content_type: None,
        });
        assert_eq!(
            translate_response(&with_header, &http::Method::POST, JSON, &Route::Other).max_age,
            Some(7)
        );
    }

    #[test]
    fn matrix_errors_survive_in_cbor() {
        let body = r#"{"errcode":"M_FORBIDDEN","error":"Invalid password"}"#;
        let enc = Encoding {
            cbor: true,
            version: TableVersion::V1,
        };
        let r = translate_response(
            &response(403, body),
            &http::Method::POST,
            enc,
            &Route::Other,
        );
        assert_eq!(r.content_format, Some(CONTENT_FORMAT_CBOR));
        let back = profile::cbor_to_json(&r.payload, TableVersion::V1).unwrap();
        assert_eq!(back["errcode"], "M_FORBIDDEN");
        assert_eq!(back["error"], "Invalid password");
    }

    #[test]
    fn versions_gains_low_bandwidth() {
        let r = translate_response(
            &response(200, r#"{"versions":["v1.11"]}"#),
            &http::Method::GET,
            JSON,
            &Route::Versions,
        );
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["m.low_bandwidth"]["cbor_enum_version"], 2);
        assert_eq!(v["m.low_bandwidth"]["coap_enum_version"], 1);
        assert_eq!(v["versions"][0], "v1.11");
    }

    #[test]
    fn v2_sync_responses_leave_out_empty_members_and_v1_keeps_them() {
        let body = r#"{"next_batch":"s2","to_device":{"events":[]},"rooms":{"join":{"!r:s":{"state":{"events":[]},"timeline":{"events":[{"type":"m.room.message","content":{}}],"limited":false}}}}}"#;
        let sync = |version, route| {
            let enc = Encoding {
                cbor: true,
                version,
            };
            let r = translate_response(&response(200, body), &http::Method::GET, enc, &route);
            profile::cbor_to_json(&r.payload, version).unwrap()
        };
        let pruned = sync(TableVersion::V2, Route::Sync { since: None });
        assert_eq!(
            pruned,
            json!({"next_batch": "s2", "rooms": {"join": {"!r:s": {"timeline": {"events": [{"type": "m.room.message", "content": {}}]}}}}})
        );
        let full: Value = serde_json::from_str(body).unwrap();
        assert_eq!(sync(TableVersion::V1, Route::Sync { since: None }), full);
        assert_eq!(sync(TableVersion::V2, Route::Other), full);
    }

    #[test]
    fn media_downloads_pass_bytes_through_and_errors_are_transcoded() {
        let cbor = Encoding {
            cbor: true,
            version: TableVersion::V2,
        };
        // A file that happens to be JSON stays the same bytes.
        let file = UpstreamOutcome::Response(UpstreamResponse {
            status: 200,
            retry_after: None,
            body: br#"{"a": 1}"#.to_vec(),
            content_type: Some("application/json".into()),
        });
        let r = translate_response(&file, &http::Method::GET, cbor, &Route::MediaDownload);
        assert_eq!(r.payload, br#"{"a": 1}"#);
        assert_eq!(r.content_format, Some(CONTENT_FORMAT_JSON));
        let missing = r#"{"errcode":"M_NOT_FOUND","error":"Not found"}"#;
        let r = translate_response(
            &response(404, missing),
            &http::Method::GET,
            cbor,
            &Route::MediaDownload,
        );
        assert_eq!(code::dotted(r.code), "4.04");
        let back = profile::cbor_to_json(&r.payload, TableVersion::V2).unwrap();
        assert_eq!(back["errcode"], "M_NOT_FOUND");
        let config = translate_response(
            &response(200, r#"{"m.upload.size":52428800}"#),
            &http::Method::GET,
            cbor,
            &Route::MediaConfig { upload_limit: 4096 },
        );
        let back = profile::cbor_to_json(&config.payload, TableVersion::V2).unwrap();
        assert_eq!(back["m.upload.size"], 4096);
    }

    #[test]
    fn v2_sync_responses_leave_out_a_prev_batch_equal_to_the_requests_since() {
        // Synapse's shape for an incremental sync without a gap: prev_batch is the since.
        let body = r#"{"next_batch":"s9_1","rooms":{"join":{"!r:s":{"timeline":{"events":[{"type":"m.room.message","content":{}}],"limited":false,"prev_batch":"s8_1"}}}}}"#;
        let sync = |version, since: Option<&str>| {
            let enc = Encoding {
                cbor: true,
                version,
            };
            let route = Route::Sync {
                since: since.map(str::to_owned),
            };
            let r = translate_response(&response(200, body), &http::Method::GET, enc, &route);
            profile::cbor_to_json(&r.payload, version).unwrap()
        };
        let timeline = |sync: &Value| sync["rooms"]["join"]["!r:s"]["timeline"].clone();
        assert_eq!(
            timeline(&sync(TableVersion::V2, Some("s8_1"))).get("prev_batch"),
            None
        );
        assert_eq!(
            timeline(&sync(TableVersion::V2, Some("s7_1")))["prev_batch"],
            "s8_1"
        );
        assert_eq!(
            timeline(&sync(TableVersion::V2, None))["prev_batch"],
            "s8_1"
        );
        assert_eq!(
            timeline(&sync(TableVersion::V1, Some("s8_1")))["prev_batch"],
            "s8_1"
        );
    }

    #[test]
    fn bearer_prefix_is_optional_and_debug_redacts() {
        let a = AccessToken::from_option(b"Bearer syt_abc").unwrap();
        let b = AccessToken::from_option(b"syt_abc").unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_eq!(a.expose(), "syt_abc");
        assert!(!format!("{a:?}").contains("syt_abc"));
        assert!(AccessToken::from_option(b"").is_none());
    }

    #[test]
    fn request_debug_shows_no_secrets() {
        let request = UpstreamRequest {
            method: http::Method::POST,
            path_and_query: "/_matrix/client/v3/login?access_token=syt_q".into(),
            access_token: AccessToken::from_option(b"syt_secret"),
            json_body: Some(br#"{"password":"hunter2"}"#.to_vec()),
            content_type: None,
            max_response_body: None,
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{request:?}");
        for secret in ["syt_secret", "hunter2", "syt_q"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("/_matrix/client/v3/login"));
    }

    #[test]
    fn route_labels_hide_identifiers() {
        assert_eq!(
            route_label(
                "/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.encrypted/jaf4fffc60"
            ),
            "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"
        );
        assert_eq!(
            route_label("/_matrix/client/v3/sync"),
            "/_matrix/client/v3/sync"
        );
        // Not in the table: one label for every such path, so the set of labels is fixed.
        assert_eq!(
            route_label("/_synapse/admin/v1/users/@a:b/devices/ABCDEF1234"),
            "other"
        );
        assert_eq!(route_label("/x7f3a9"), "other");
    }

    #[test]
    fn query_pairs_are_percent_encoded() {
        assert_eq!(
            encode_query_pair("since=s72594_4483_1934"),
            "since=s72594_4483_1934"
        );
        assert_eq!(
            encode_query_pair("filter={\"a\":1}"),
            "filter=%7B%22a%22:1%7D"
        );
        assert_eq!(encode_query_pair("full_state"), "full_state");
    }
}
