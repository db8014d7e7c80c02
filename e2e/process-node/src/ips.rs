//! Pod IPs: every pod gets its own loopback address, 127.0.0.2 upwards (127.0.0.1 is the node),
//! so two pods can listen on the same port when they bind to their `POD_IP`.

use std::{collections::BTreeMap, net::Ipv4Addr};

/// Hands out loopback addresses, one per pod UID, reusing released ones lowest first.
#[derive(Debug, Default)]
pub struct IpPool {
    taken: BTreeMap<u32, String>,
}

/// The first and last addresses handed out: 127.0.0.2 ..= 127.0.255.254 (the first 253 pods get
/// 127.0.0.x; addresses ending in .0, .1 and .255 are skipped after that).
const FIRST: u32 = u32::from_be_bytes([127, 0, 0, 2]);
const LAST: u32 = u32::from_be_bytes([127, 0, 255, 254]);

impl IpPool {
    /// The address of pod `uid`, allocating one if it has none; `None` when all are taken.
    pub fn allocate(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some((&ip, _)) = self.taken.iter().find(|(_, owner)| *owner == uid) {
            return Some(Ipv4Addr::from(ip));
        }
        let free = (FIRST..=LAST)
            .filter(|ip| !matches!(ip & 0xff, 0 | 1 | 255))
            .find(|ip| !self.taken.contains_key(ip))?;
        self.taken.insert(free, uid.to_string());
        Some(Ipv4Addr::from(free))
    }

    /// Gives pod `uid`'s address back.
    pub fn release(&mut self, uid: &str) {
        self.taken.retain(|_, owner| owner != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pod_gets_its_own_address_and_released_ones_are_reused() {
        let mut pool = IpPool::default();
        assert_eq!(pool.allocate("a"), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(pool.allocate("b"), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(
            pool.allocate("a"),
            Some(Ipv4Addr::new(127, 0, 0, 2)),
            "stable per pod"
        );
        pool.release("a");
        assert_eq!(pool.allocate("c"), Some(Ipv4Addr::new(127, 0, 0, 2)));
        for i in 0..251 {
            pool.allocate(&format!("p{i}"));
        }
        assert_eq!(
            pool.allocate("next"),
            Some(Ipv4Addr::new(127, 0, 1, 2)),
            "skips .255, .0, .1"
        );
    }
}
