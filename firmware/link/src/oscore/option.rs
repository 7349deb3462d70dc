//! The OSCORE option (RFC 8613 §6.1): its value read into fields and written from them.

use crate::OscoreError;
use crate::message::{Message, put};

use super::{Id, MAX_PIV_LEN, OSCORE_OPTION, PartialIv};

/// The fields of an OSCORE option value (RFC 8613 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OscoreOption<'a> {
    /// The Partial IV, if the message carries one.
    pub piv: Option<&'a [u8]>,
    /// The kid context (flag h), which jeton never sends.
    pub kid_context: Option<&'a [u8]>,
    /// The kid (flag k): the sender's id.
    pub kid: Option<&'a [u8]>,
}

impl<'a> OscoreOption<'a> {
    /// Reads an OSCORE option value; reserved flag bits and Partial IVs of 6 or 7 bytes are
    /// malformed.
    pub fn parse(value: &'a [u8]) -> Result<Self, OscoreError> {
        let Some((&flags, rest)) = value.split_first() else {
            return Ok(OscoreOption::default());
        };
        if flags & 0xE0 != 0 {
            return Err(OscoreError::MalformedOscoreOption);
        }
        let n = usize::from(flags & 0x07);
        if n > MAX_PIV_LEN {
            return Err(OscoreError::MalformedOscoreOption);
        }
        let (piv, mut rest) = rest
            .split_at_checked(n)
            .ok_or(OscoreError::MalformedOscoreOption)?;
        let mut option = OscoreOption {
            piv: (n > 0).then_some(piv),
            ..OscoreOption::default()
        };
        if flags & 0x10 != 0 {
            let (&s, tail) = rest
                .split_first()
                .ok_or(OscoreError::MalformedOscoreOption)?;
            let (context, tail) = tail
                .split_at_checked(usize::from(s))
                .ok_or(OscoreError::MalformedOscoreOption)?;
            option.kid_context = Some(context);
            rest = tail;
        }
        if flags & 0x08 != 0 {
            option.kid = Some(rest);
        } else if !rest.is_empty() {
            return Err(OscoreError::MalformedOscoreOption);
        }
        Ok(option)
    }

    /// The kid of a message with this OSCORE option value, or `None`: how a server finds the
    /// context of a request.
    pub fn kid_of(message: &Message<'a>) -> Result<Option<&'a [u8]>, OscoreError> {
        let value = message
            .options
            .get(OSCORE_OPTION)
            .ok_or(OscoreError::NotProtected)?;
        Ok(OscoreOption::parse(value)?.kid)
    }
}

/// Writes an OSCORE option value: flags, Partial IV, kid (if `kid` is given).
pub(super) fn write_oscore_option(
    piv: Option<&PartialIv>,
    kid: Option<&Id>,
    out: &mut [u8],
) -> Result<usize, OscoreError> {
    let piv_bytes = piv.map_or(&[][..], |p| p.as_bytes());
    let flags = piv_bytes.len() as u8 | if kid.is_some() { 0x08 } else { 0 };
    if flags == 0 {
        return Ok(0);
    }
    let mut at = 0;
    put(out, &mut at, &[flags])?;
    put(out, &mut at, piv_bytes)?;
    put(out, &mut at, kid.map_or(&[][..], |k| k.as_bytes()))?;
    Ok(at)
}
