//! Finding *where* input is bad, for one-line error messages with a byte offset.
//!
//! serde_json reports syntax errors by line and column, and a parsed `Value` no longer knows where a
//! number was; the scans here turn both into byte offsets of the text the user gave.

use jeton_proto::transcode::{MAX_DEPTH, MAX_SAFE_INTEGER};

/// The byte offset of a 1-based line and column (serde_json counts columns in bytes).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// A one-line message for a JSON syntax error.
pub(crate) fn json_syntax(text: &str, error: &serde_json::Error) -> String {
    let message = error.to_string();
    let what = message
        .split(" at line ")
        .next()
        .unwrap_or(message.as_str());
    format!(
        "invalid JSON: {what} (at byte {}, line {} column {})",
        offset_of(text, error.line(), error.column()),
        error.line(),
        error.column()
    )
}

/// Checks what the profile forbids in syntactically valid JSON text: floats, integers beyond
/// ±(2^53-1), and nesting deeper than the transcoder's limit. Reports the first, with its byte offset.
pub(crate) fn json_values(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut at = 0usize;
    while let Some(&byte) = bytes.get(at) {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            at += 1;
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "arrays and objects nest deeper than {MAX_DEPTH} levels (at byte {at})"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let length = bytes
                    .get(at..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .count();
                let token = text.get(at..at + length).unwrap_or_default();
                if token.contains(['.', 'e', 'E']) {
                    return Err(format!(
                        "floating-point numbers are not allowed in Matrix JSON: {token} (at byte {at})"
                    ));
                }
                let magnitude = token
                    .trim_start_matches('-')
                    .parse::<u128>()
                    .unwrap_or(u128::MAX);
                if magnitude > u128::from(MAX_SAFE_INTEGER) {
                    return Err(format!(
                        "the integer {token} is outside the range ±(2^53-1) (at byte {at})"
                    ));
                }
                at += length;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// Decodes hex text (whitespace ignored), reporting a bad character by its byte offset.
pub(crate) fn hex_text(input: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<(usize, u8)> = input
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, byte)| !byte.is_ascii_whitespace())
        .collect();
    if let Some((at, byte)) = digits.iter().find(|(_, byte)| !byte.is_ascii_hexdigit()) {
        return Err(format!(
            "the hex input has a non-hex character {:?} (at byte {at})",
            char::from(*byte)
        ));
    }
    if digits.len() % 2 == 1 {
        return Err(format!(
            "the hex input has an odd number of digits (at byte {})",
            input.len()
        ));
    }
    let compact: Vec<u8> = digits.into_iter().map(|(_, byte)| byte).collect();
    hex::decode(compact).map_err(|error| format!("the hex input is invalid: {error}"))
}
