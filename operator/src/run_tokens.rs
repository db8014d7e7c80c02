//! Run tokens: what a training run's pods present to write into their own run (the
//! MetadataStoreService's LogRunStart, LogEpoch, CreateArtifact, LogRunEnd).
//!
//! A token is `<run uid>.<HMAC-SHA256(key, run uid)>`, from a key only the operator holds
//! (`MINIAUTOML_RUN_TOKEN_KEY`, a Secret the chart generates once; without one, derived from the
//! operator's storage secret key). So:
//! - a token is checked before any Kubernetes API call (a made-up one costs a hash, not a LIST);
//! - it names exactly one object (the uid), so a run deleted and created again under the same
//!   name, or another run given the same id, does not accept the old token;
//! - the operator reads no Secret to check it, and a run Secret a user created before the run
//!   was launched holds nothing the operator trusts (the operator writes the token into it).
//!
//! A leaf module: it uses nothing else of the crate.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What separates the uid from the MAC in a token.
const SEPARATOR: char = '.';

/// Issues and checks run tokens with one key.
#[derive(Clone)]
pub struct RunTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for RunTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunTokens(<key redacted>)")
    }
}

impl RunTokens {
    /// Tokens keyed by `key` (the dedicated key's bytes).
    pub fn new(key: &[u8]) -> Self {
        RunTokens { key: key.to_vec() }
    }

    /// Tokens keyed by a key derived from the storage secret key (when no dedicated key is
    /// configured): the same in every replica and across restarts, unknown to anyone without
    /// the operator's storage credentials.
    pub fn derived_from(storage_secret: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"miniautoml run tokens\0");
        hash.update(storage_secret.as_bytes());
        RunTokens::new(&hash.finalize())
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    /// A key for another `purpose`, derived from this one (HMAC-SHA256 of the purpose): as secret
    /// as the token key, and independent of every other purpose's.
    pub fn subkey(&self, purpose: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(b"subkey\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The token of the run whose TrainingJob has uid `uid`.
    pub fn token(&self, uid: &str) -> String {
        let mut mac = self.mac();
        mac.update(uid.as_bytes());
        format!("{uid}{SEPARATOR}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The uid `presented` was issued for, when it is a token of this key (compared in constant
    /// time); `None` for anything else.
    pub fn verify<'a>(&self, presented: &'a str) -> Option<&'a str> {
        let (uid, tag) = presented.rsplit_once(SEPARATOR)?;
        let tag = hex::decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(uid.as_bytes());
        mac.verify_slice(&tag).ok()?;
        Some(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_run_and_nothing_forges_one() {
        let tokens = RunTokens::new(b"key");
        let token = tokens.token("0a1b-uid");
        assert_eq!(tokens.verify(&token), Some("0a1b-uid"));
        // Another key, another uid with this MAC, a changed MAC, garbage: refused.
        assert_eq!(RunTokens::new(b"other").verify(&token), None);
        let (_, tag) = token.rsplit_once('.').unwrap();
        assert_eq!(tokens.verify(&format!("victim-uid.{tag}")), None);
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(tokens.verify(&flipped), None);
        for garbage in ["", ".", "uid.", "uid.zz", "no-separator", "Bearer x"] {
            assert_eq!(tokens.verify(garbage), None, "{garbage:?}");
        }
        // The same key gives the same token in every replica and after a restart.
        assert_eq!(RunTokens::new(b"key").token("0a1b-uid"), token);
        assert_eq!(
            RunTokens::derived_from("s3cret").token("u"),
            RunTokens::derived_from("s3cret").token("u")
        );
        assert_ne!(
            RunTokens::derived_from("s3cret").token("u"),
            RunTokens::derived_from("other").token("u")
        );
    }
}
