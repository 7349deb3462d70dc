//! The OSCORE context's record on flash: its keys and ids, and the sequence number's
//! high-water mark (RFC 8613 appendix B.1.1), sealed with the storage key.

use jeton_link::oscore::RECORD_LEN;
use jeton_link::{ContextRecord, SecurityContext};
use zeroize::Zeroize;

use super::*;
use crate::store::{StoreError, record};

/// The stored context: its record, then the sequence number's high-water mark.
const STORED_LEN: usize = RECORD_LEN + 8;

pub(super) fn save_context<S: Store>(
    store: &mut S,
    context: &SecurityContext,
    mark: u64,
) -> Result<(), LinkError> {
    let mut bytes = [0u8; STORED_LEN];
    let (record, tail) = bytes.split_at_mut(RECORD_LEN);
    record.copy_from_slice(context.to_record().as_bytes());
    tail.copy_from_slice(&mark.to_be_bytes());
    let result = store.put(record::LINK, &bytes).map_err(LinkError::Store);
    bytes.zeroize();
    result
}

/// The context stored by [`save_context`], resuming at its mark; `None` when there is none
/// or it is unreadable (a fresh handshake replaces it).
pub(super) fn load_context<S: Store>(
    store: &mut S,
    scratch: &mut [u8],
) -> Result<Option<SecurityContext>, LinkError> {
    let Some(len) = (match store.get(record::LINK, scratch) {
        Err(StoreError::Unreadable) => None,
        stored => stored.map_err(LinkError::Store)?,
    }) else {
        return Ok(None);
    };
    let context = scratch
        .get(..len)
        .filter(|_| len == STORED_LEN)
        .and_then(|bytes| bytes.split_first_chunk::<RECORD_LEN>())
        .and_then(|(record, mark)| {
            let mark = u64::from_be_bytes(mark.try_into().ok()?);
            let record = ContextRecord::from_bytes(record);
            // The challenge only matters to a server; the token never asks for Echo.
            SecurityContext::restore(&record, mark, [0; jeton_link::oscore::ECHO_LEN]).ok()
        });
    if let Some(used) = scratch.get_mut(..len) {
        used.zeroize();
    }
    Ok(context)
}
