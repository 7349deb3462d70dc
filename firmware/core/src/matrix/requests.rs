//! How the token's requests go out under the profile (PROFILE.md section 1): the path as
//! Uri-Path options (the enum and its parameters), the body's Content-Format and the answer's
//! Accept where they are not CBOR, the access token while the gateway lacks it, the table
//! version.

use heapless::Vec;

use jeton_proto::TableVersion;

use super::*;
use crate::coap::{BodyDelivery, Request, RequestId, option};

/// A request queued: its id, and whether it carried the access token (a 4.01 to a request
/// without it means the gateway lost its state, [`Gateway::note_answer`](super::gateway::Gateway::note_answer)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sent {
    pub(super) id: RequestId,
    pub(super) with_token: bool,
}

/// How a request's body goes out and its answer comes back, beyond method and path.
#[derive(Clone, Copy, Debug)]
pub(super) struct RequestShape {
    /// The body's Content-Format (CBOR for Matrix bodies, 42 for a file's bytes).
    pub(super) content_format: Option<u8>,
    /// A block of a body the token sends in blocks itself.
    pub(super) block1: Option<option::BlockValue>,
    /// The response block a streamed download resumes at.
    pub(super) block2_start: Option<option::BlockValue>,
    pub(super) delivery: BodyDelivery,
    /// Whether the request says how large a body the token holds (option 258, sync
    /// requests: PROFILE.md section 9).
    pub(super) capacity: bool,
}

impl RequestShape {
    /// A CBOR body, and a CBOR answer delivered whole.
    pub(super) const CBOR: Self = RequestShape {
        content_format: Some(jeton_proto::coap::CONTENT_FORMAT_CBOR as u8),
        block1: None,
        block2_start: None,
        delivery: BodyDelivery::Whole,
        capacity: false,
    };
}

/// The class and detail of a CoAP code as a number (`4.01` is 401).
pub(super) fn code_number(code: Code) -> u16 {
    u16::from(code.class()) * 100 + u16::from(code.detail())
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Queues a request with the profile's options, its CBOR body the first `body_len` bytes
    /// of `work`.
    pub(super) fn request(
        &mut self,
        coap: &mut Coap,
        method: Code,
        path: &[&str],
        query: &[&str],
        body_len: usize,
    ) -> Result<Sent, TokenError> {
        self.request_shaped(coap, method, path, query, body_len, RequestShape::CBOR)
    }

    /// Queues a request with the profile's options, its body the first `body_len` bytes of
    /// `work`.
    pub(super) fn request_shaped(
        &mut self,
        coap: &mut Coap,
        method: Code,
        path: &[&str],
        query: &[&str],
        body_len: usize,
        shape: RequestShape,
    ) -> Result<Sent, TokenError> {
        let cbor = [jeton_proto::coap::CONTENT_FORMAT_CBOR as u8];
        let body_format = [shape.content_format.unwrap_or(cbor[0])];
        let version = [TableVersion::V2.option_value() as u8];
        let mut options: Vec<(u16, &[u8]), 16> = Vec::new();
        let full = TokenError::Request(crate::coap::RequestError::TooLarge);
        for segment in path {
            options
                .push((option::URI_PATH, segment.as_bytes()))
                .map_err(|_| full)?;
        }
        // Under v2 a body without Content-Format is CBOR, and so is the answer (PROFILE.md
        // section 1): a CBOR body goes without Content-Format or Accept; only a body of other
        // bytes (a file's ciphertext) names its format.
        if (body_len > 0 || shape.block1.is_some()) && body_format != cbor {
            options
                .push((option::CONTENT_FORMAT, &body_format))
                .map_err(|_| full)?;
        }
        for q in query {
            options
                .push((option::URI_QUERY, q.as_bytes()))
                .map_err(|_| full)?;
        }
        // A request without a body, or with a body that is not CBOR (a file's bytes), asks for
        // a CBOR answer.
        if body_len == 0 || body_format != cbor {
            options.push((option::ACCEPT, &cbor)).map_err(|_| full)?;
        }
        let mut with_token = false;
        if let Some(login) = &self.login
            && self.gateway.wants_token()
        {
            options
                .push((option::ACCESS_TOKEN, login.access_token.as_bytes()))
                .map_err(|_| full)?;
            with_token = true;
        }
        options
            .push((option::CBOR_TABLE_VERSION, &version))
            .map_err(|_| full)?;
        if shape.capacity {
            options
                .push((option::RESPONSE_CAPACITY, &super::sync::CAPACITY_OPTION))
                .map_err(|_| full)?;
        }
        let body = self.env.work.get(..body_len).unwrap_or_default();
        let request = Request {
            delivery: shape.delivery,
            block1: shape.block1,
            block2: shape.block2_start,
            ..Request::new(method, &options, body)
        };
        let id = coap.request(&request)?;
        Ok(Sent { id, with_token })
    }
}
