//! The wire profile as the gateway sees it: option numbers, Content-Formats, the Block1/Block2
//! value, table versions, path expansion and JSON <-> CBOR transcoding, all from `jeton-proto`.
//!
//! This module is the only place that names `jeton-proto`, so the rest of the gateway reads as
//! CoAP and HTTP.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

pub use jeton_proto::TableVersion;
pub use jeton_proto::coap::block::{BlockValue, MAX_SZX, szx_for_size};
pub use jeton_proto::coap::option;
pub use jeton_proto::coap::{
    CONTENT_FORMAT_CBOR, CONTENT_FORMAT_EDHOC, CONTENT_FORMAT_JSON, CONTENT_FORMAT_TEXT,
};
pub use jeton_proto::split::{
    MIN_RESPONSE_CAPACITY, SplitError, SyncParts, carries_nothing, split_sync_response,
};

/// A path or body could not be translated by the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileError {
    /// The Uri-Path could not be expanded.
    Path(jeton_proto::path::PathError),
    /// The body could not be transcoded.
    Transcode(jeton_proto::transcode::TranscodeError),
}

impl core::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Path(why) => write!(f, "the request path is not valid: {why}"),
            Self::Transcode(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// CoAP Uri-Path segments (unescaped) -> the full percent-encoded HTTP path. A first segment
/// that is a path enum of `version` expands to its template (MSC3079 short paths); anything
/// else is an ordinary path.
pub fn expand_segments<'a>(
    segments: impl IntoIterator<Item = &'a str>,
    version: TableVersion,
) -> Result<String, ProfileError> {
    let mut out = String::new();
    jeton_proto::path::expand_segments(segments, version, &mut out).map_err(ProfileError::Path)?;
    Ok(out)
}

/// The path template of the profile's table that a full path matches (parameters as
/// `{roomId}` etc.), for bounded metric labels and logs without identifiers. The first
/// matching template in table order wins.
pub fn route_template(path: &str) -> Option<&'static str> {
    ROUTES.template_of(path.split('?').next().unwrap_or_default())
}

/// The v2 table's templates for [`route_template`], split once, so a request costs a hash
/// lookup and a few segment comparisons instead of a walk over the table.
static ROUTES: LazyLock<Routes> =
    LazyLock::new(|| Routes::new(jeton_proto::path::table(TableVersion::V2)));

/// Templates grouped by their number of segments and their first `leading` segments, which
/// are literal in every template; each group in table order.
struct Routes {
    leading: usize,
    groups: HashMap<(usize, &'static str), Vec<Route>>,
}

/// A template and its segments, `None` where it takes a parameter.
struct Route {
    template: &'static str,
    segments: Vec<Option<&'static str>>,
}

impl Routes {
    fn new(table: &'static [(&'static str, &'static str)]) -> Self {
        let is_parameter = |segment: &str| segment.starts_with('{');
        let leading = table
            .iter()
            .filter_map(|(_, template)| template.split('/').position(is_parameter))
            .min()
            .unwrap_or(usize::MAX);
        let mut groups: HashMap<_, Vec<Route>> = HashMap::new();
        for &(_, template) in table {
            let segments: Vec<_> = template
                .split('/')
                .map(|segment| (!is_parameter(segment)).then_some(segment))
                .collect();
            let key = (segments.len(), first_segments(template, leading));
            groups
                .entry(key)
                .or_default()
                .push(Route { template, segments });
        }
        Self { leading, groups }
    }

    fn template_of(&self, path: &str) -> Option<&'static str> {
        let key = (path.split('/').count(), first_segments(path, self.leading));
        let group = self.groups.get(&key)?;
        group
            .iter()
            .find(|route| route.matches(path))
            .map(|route| route.template)
    }
}

impl Route {
    /// A literal segment matches itself, a parameter any non-empty segment.
    fn matches(&self, path: &str) -> bool {
        self.segments
            .iter()
            .zip(path.split('/'))
            .all(|(wanted, given)| match wanted {
                Some(literal) => *literal == given,
                None => !given.is_empty(),
            })
    }
}

/// The first `n` `/`-separated segments of `path` (all of it when it has fewer).
fn first_segments(path: &str, n: usize) -> &str {
    let Some(before) = n.checked_sub(1) else {
        return "";
    };
    path.match_indices('/')
        .nth(before)
        .map_or(path, |(end, _)| &path[..end])
}

/// JSON -> canonical CBOR with the integer keys (and, in v2, binary fields) of `version`.
pub fn json_to_cbor(value: &Value, version: TableVersion) -> Result<Vec<u8>, ProfileError> {
    jeton_proto::transcode::json_to_cbor(value, version).map_err(ProfileError::Transcode)
}

/// The v2 rule for `/sync` responses: leaves out members that carry nothing (absent == empty), and
/// a `prev_batch` equal to the request's `since`.
pub fn prune_sync_response(response: &mut Value, since: Option<&str>) {
    jeton_proto::transcode::prune_sync_response(response, since);
}

/// CBOR with the integer keys of `version` -> JSON.
pub fn cbor_to_json(bytes: &[u8], version: TableVersion) -> Result<Value, ProfileError> {
    jeton_proto::transcode::cbor_to_json(bytes, version).map_err(ProfileError::Transcode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msc3079_short_paths_expand() {
        // MSC3079 v1 enum 9: PUT /rooms/{roomId}/send/{eventType}/{txnId}.
        let full = expand_segments(
            ["9", "!room:example.org", "m.room.encrypted", "t1"],
            TableVersion::V1,
        )
        .unwrap();
        assert_eq!(
            full,
            "/_matrix/client/r0/rooms/%21room%3Aexample.org/send/m.room.encrypted/t1"
        );
        assert_eq!(
            expand_segments(["0"], TableVersion::V1).unwrap(),
            "/_matrix/client/versions"
        );
        assert_eq!(
            expand_segments(["_matrix", "client", "v3", "sync"], TableVersion::V2).unwrap(),
            "/_matrix/client/v3/sync"
        );
    }

    #[test]
    fn routes_come_from_the_path_table() {
        assert_eq!(
            route_template("/_matrix/client/v3/rooms/%21r%3As/send/m.room.encrypted/jaf4fffc60"),
            Some("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}")
        );
        assert_eq!(
            route_template("/_matrix/client/r0/sync?since=s1"),
            Some("/_matrix/client/r0/sync")
        );
        assert_eq!(route_template("/_synapse/admin/v1/register"), None);
    }

    /// The lookup as a walk over the table, splitting every template: what [`Routes`] must
    /// agree with.
    fn route_by_walk(path: &str) -> Option<&'static str> {
        let path = path.split('?').next().unwrap_or_default();
        jeton_proto::path::table(TableVersion::V2)
            .iter()
            .map(|(_, template)| *template)
            .find(|template| {
                let mut wanted = template.split('/');
                let mut given = path.split('/');
                loop {
                    match (wanted.next(), given.next()) {
                        (None, None) => return true,
                        (Some(w), Some(g)) if w == g || (w.starts_with('{') && !g.is_empty()) => {}
                        _ => return false,
                    }
                }
            })
    }

    /// Paths near `template`: itself, with values for its parameters, with a query, with an
    /// empty parameter, a segment more or fewer, a trailing `/`, another leading segment.
    fn paths_near(template: &str) -> Vec<String> {
        let filled: Vec<&str> = template
            .split('/')
            .map(|s| match s {
                "{eventType}" => "m.room.encrypted",
                s if s.starts_with('{') => "%21x%3Ay",
                s => s,
            })
            .collect();
        let emptied: Vec<&str> = template
            .split('/')
            .map(|s| if s.starts_with('{') { "" } else { s })
            .collect();
        let filled = filled.join("/");
        let shorter = filled.rsplit_once('/').map_or("", |(head, _)| head);
        vec![
            template.to_string(),
            filled.clone(),
            format!("{filled}?since=s1&x=/a/b"),
            emptied.join("/"),
            format!("{filled}/"),
            format!("{filled}/more"),
            shorter.to_string(),
            filled.replacen("/_matrix/", "/_synapse/", 1),
            filled.trim_start_matches('/').to_string(),
        ]
    }

    #[test]
    fn the_route_lookup_agrees_with_a_walk_over_the_table() {
        let mut paths: Vec<String> = jeton_proto::path::table(TableVersion::V2)
            .iter()
            .flat_map(|(_, template)| paths_near(template))
            .collect();
        paths.extend(
            [
                "",
                "/",
                "?",
                "//",
                "/_matrix",
                "/_matrix/client",
                "/x7f3a9",
                "/_synapse/admin/v1/register",
            ]
            .map(String::from),
        );
        let mut unknown = 0;
        for path in &paths {
            assert_eq!(route_template(path), route_by_walk(path), "{path}");
            unknown += usize::from(route_template(path).is_none());
        }
        assert!(unknown > 100, "the unknown paths are exercised too");
    }

    #[test]
    fn integer_keys_round_trip() {
        let json = serde_json::json!({"type": "m.room.message", "content": {"body": "hi", "msgtype": "m.text"}});
        let cbor = json_to_cbor(&json, TableVersion::V1).unwrap();
        assert!(cbor.len() < json.to_string().len());
        assert_eq!(cbor_to_json(&cbor, TableVersion::V1).unwrap(), json);
    }
}
