//! What the responses to a protected request are bound to (RFC 8613 §8.3): the request's
//! kid and Partial IV, by the context's number and the CoAP token, so that every
//! response the transport sends under that token (piggybacked, separate, Block2,
//! notifications) can be protected. The latest request per token wins; beyond
//! `MAX_BINDINGS` the oldest are forgotten.

use std::collections::{HashMap, VecDeque};

use jeton_link::RequestBinding;

/// Requests whose responses the link can still protect (the latest per CoAP token). An
/// observation outlived by this many newer requests loses its notifications; the token
/// registers again.
const MAX_BINDINGS: usize = 16_384;

/// One request's binding.
#[derive(Clone, Copy)]
pub(super) struct ResponseBinding {
    pub(super) binding: RequestBinding,
    /// The first response may reuse the request's nonce; every later one takes its own
    /// Partial IV.
    pub(super) request_nonce_used: bool,
}

/// The bindings by (context number, CoAP token), and the order they were made in.
#[derive(Default)]
pub(super) struct Bindings {
    by_request: HashMap<(u64, Vec<u8>), (u64, ResponseBinding)>,
    /// Bindings in the order they were made, with the generation that made them, so the
    /// oldest go first beyond [`MAX_BINDINGS`].
    order: VecDeque<(u64, u64, Vec<u8>)>,
    generation: u64,
}

impl Bindings {
    /// Records what the responses to a request must be bound to, forgetting the oldest
    /// binding beyond [`MAX_BINDINGS`].
    pub(super) fn bind(&mut self, context: u64, token: &[u8], binding: ResponseBinding) {
        self.generation += 1;
        let generation = self.generation;
        self.by_request
            .insert((context, token.to_vec()), (generation, binding));
        self.order.push_back((generation, context, token.to_vec()));
        while self.order.len() > MAX_BINDINGS {
            let Some((old, context, token)) = self.order.pop_front() else {
                break;
            };
            let key = (context, token);
            if self.by_request.get(&key).is_some_and(|(g, _)| *g == old) {
                self.by_request.remove(&key);
            }
        }
    }

    /// The binding of the latest request with `token` of `context`.
    pub(super) fn get_mut(&mut self, context: u64, token: &[u8]) -> Option<&mut ResponseBinding> {
        self.by_request
            .get_mut(&(context, token.to_vec()))
            .map(|(_, binding)| binding)
    }

    /// Forgets the bindings of a context that was replaced.
    pub(super) fn forget(&mut self, context: u64) {
        self.by_request.retain(|(c, _), _| *c != context);
    }
}
