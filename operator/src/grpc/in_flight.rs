//! Bounds what callers the operator does not know yet can make it ask the API server.
//!
//! A review the caches cannot answer (a token not seen in the last seconds, a permission not
//! decided) costs a TokenReview or a SubjectAccessReview. Each caller may have at most
//! [`PER_CALLER`] of them in flight, and all callers together [`TOTAL`]; a call beyond either is
//! answered RESOURCE_EXHAUSTED at once, without asking. A caller is the peer address for a token
//! not yet reviewed (every call through one `kubectl port-forward` shares 127.0.0.1) and the user
//! name for a permission. Calls the caches answer take no slot, so a client with a valid token
//! never waits on someone else's flood.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::{
    Status,
    codegen::http,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

/// Reviews one caller may have in flight.
pub const PER_CALLER: usize = 8;
/// Reviews all callers together may have in flight.
pub const TOTAL: usize = 64;

/// Counts of reviews in flight, by caller.
#[derive(Clone, Debug)]
pub struct InFlight {
    counts: Arc<Mutex<Counts>>,
    per_caller: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Counts {
    by_caller: HashMap<String, usize>,
    total: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new(PER_CALLER, TOTAL)
    }
}

impl InFlight {
    /// At most `per_caller` in flight for one caller, `total` for all.
    pub fn new(per_caller: usize, total: usize) -> InFlight {
        InFlight {
            counts: Arc::default(),
            per_caller,
            total,
        }
    }

    /// A slot for one review of `caller` (held until dropped), or RESOURCE_EXHAUSTED naming
    /// the limit that is reached and `what` was to be asked.
    pub fn enter(&self, caller: &str, what: &str) -> Result<Slot, Status> {
        let mut counts = self.counts.lock().expect("in-flight lock");
        let mine = counts.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(Status::resource_exhausted(format!(
                "{caller} has {mine} reviews of new tokens or permissions in flight, the most one caller may: \
                 {what} is not asked; retry when they are answered"
            )));
        }
        if counts.total >= self.total {
            return Err(Status::resource_exhausted(format!(
                "{} reviews of new tokens or permissions are in flight, the most the operator asks at once: \
                 {what} is not asked; retry in a moment",
                counts.total
            )));
        }
        *counts.by_caller.entry(caller.to_string()).or_default() += 1;
        counts.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            caller: caller.to_string(),
        })
    }
}

/// One review in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    caller: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("in-flight lock");
        counts.total = counts.total.saturating_sub(1);
        if let Some(mine) = counts.by_caller.get_mut(&self.caller) {
            *mine -= 1;
            if *mine == 0 {
                counts.by_caller.remove(&self.caller);
            }
        }
    }
}

/// The address a call came from (its TCP peer, under TLS or not), as `peer <ip>`.
pub fn peer(extensions: &http::Extensions) -> String {
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
    });
    match tcp.and_then(TcpConnectInfo::remote_addr) {
        Some(addr) => format!("peer {}", addr.ip()),
        None => "an unknown peer".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caller_gets_its_share_and_others_are_not_held_up() {
        let limits = InFlight::new(2, 3);
        let a1 = limits.enter("a", "x").unwrap();
        let _a2 = limits.enter("a", "x").unwrap();
        let refused = limits.enter("a", "who the token belongs to").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("a has 2 reviews"),
            "{}",
            refused.message()
        );
        assert!(refused.message().contains("who the token belongs to"));
        let _b = limits.enter("b", "x").unwrap();
        let all = limits.enter("c", "x").unwrap_err();
        assert!(all.message().contains("3 reviews"), "{}", all.message());
        drop(a1);
        let _a3 = limits.enter("a", "x").expect("a slot freed by an answer");
    }

    #[test]
    fn every_slot_is_given_back() {
        let limits = InFlight::new(1, 1);
        for _ in 0..3 {
            let slot = limits.enter("a", "x").unwrap();
            drop(slot);
        }
        assert!(limits.counts.lock().unwrap().by_caller.is_empty());
        assert_eq!(limits.counts.lock().unwrap().total, 0);
    }

    #[test]
    fn a_call_without_connection_info_is_an_unknown_peer() {
        assert_eq!(peer(&http::Extensions::new()), "an unknown peer");
    }
}
