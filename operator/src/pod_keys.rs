//! The storage key a run's or a predictor's pods hold (`--storage-credentials`).
//!
//! - **scoped** (the default): each training run and each ModelDeployment gets a key of its own,
//!   issued through the store's IAM API (`miniautoml_data::keys`) with exactly the prefixes it
//!   needs, and revoked when the run ends or the ModelDeployment goes. The key is derived from a
//!   secret only the operator holds (the run-token key) and the object's uid, so issuing again
//!   gives the same key and the operator never reads a Secret back.
//! - **sts**: for an external S3 without an IAM API the operator may write to: each run and each
//!   ModelDeployment gets a temporary key from STS `AssumeRole` with a session policy of exactly
//!   the same prefixes (`miniautoml_data::sessions`). It cannot be revoked: it expires a set
//!   time after it is issued, and predictors' keys are issued again before they expire.
//! - **shared**: pods get the operator's own bucket-wide key — an explicit choice for a store
//!   with neither, which each run's `StorageKey` condition states.

use hmac::{Hmac, KeyInit, Mac};
use miniautoml_data::{Grants, KeyError, KeyIssuer, SessionIssuer, StoreKey};
use sha2::Sha256;

use crate::config::Credentials;

/// Whose key: a training run's or a ModelDeployment's predictors'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The pods of the TrainingJob with this uid.
    Run,
    /// The predictors of the ModelDeployment with this uid.
    Predictor,
    /// The data engineers of the namespace of this name (its upload key).
    Upload,
}

impl Holder {
    fn name(self) -> &'static str {
        match self {
            Holder::Run => "run",
            Holder::Predictor => "predictor",
            Holder::Upload => "upload",
        }
    }
}

/// The store's IAM user holding the key of `holder` with `uid`.
pub fn user(holder: Holder, uid: &str) -> String {
    format!("{}-{uid}", holder.name())
}

/// Gives pods their storage keys.
#[derive(Clone, Debug)]
pub enum PodKeys {
    /// Keys of their own (see the module).
    Scoped {
        /// Issues and revokes through the store's IAM API with the operator's key.
        issuer: KeyIssuer,
        /// What the keys are derived from.
        derivation: Derivation,
    },
    /// Temporary keys from STS (see the module).
    Sessions(SessionIssuer),
    /// The operator's own key, for every pod.
    Shared(Credentials),
}

impl PodKeys {
    /// Whether pods get keys the store revokes when they end (and so a finalizer).
    pub fn scoped(&self) -> bool {
        matches!(self, PodKeys::Scoped { .. })
    }

    /// How long a temporary key lasts (`None`: keys do not expire).
    pub fn session_duration(&self) -> Option<std::time::Duration> {
        match self {
            PodKeys::Sessions(issuer) => Some(issuer.duration()),
            _ => None,
        }
    }

    /// The key `holder` with `uid` gets, where that is known without issuing it (derived, or
    /// the shared one); `None` for a temporary key, which only [`PodKeys::issue`] gives.
    pub fn credentials(&self, holder: Holder, uid: &str) -> Option<Credentials> {
        match self {
            PodKeys::Shared(credentials) => Some(credentials.clone()),
            PodKeys::Scoped { derivation, .. } => {
                let key = derivation.key(holder, uid);
                Some(Credentials {
                    access_key_id: key.access_key_id,
                    secret_access_key: key.secret_access_key,
                    session_token: None,
                })
            }
            PodKeys::Sessions(_) => None,
        }
    }

    /// The key `holder` with `uid` may use for `grants`: issued (idempotently) when scoped, a
    /// new temporary one from STS, or the shared one.
    pub async fn issue(&self, holder: Holder, uid: &str, grants: &Grants) -> Result<Credentials, KeyError> {
        match self {
            PodKeys::Shared(credentials) => Ok(credentials.clone()),
            PodKeys::Scoped { issuer, derivation } => {
                let key = derivation.key(holder, uid);
                issuer.issue(&user(holder, uid), grants, &key).await?;
                Ok(Credentials {
                    access_key_id: key.access_key_id,
                    secret_access_key: key.secret_access_key,
                    session_token: None,
                })
            }
            PodKeys::Sessions(issuer) => {
                let key = issuer.issue(&user(holder, uid), grants).await?;
                Ok(Credentials {
                    access_key_id: key.access_key_id,
                    secret_access_key: key.secret_access_key,
                    session_token: Some(key.session_token),
                })
            }
        }
    }

    /// Revokes the key of `holder` with `uid` (nothing to do when shared or temporary, or when
    /// it is gone).
    pub async fn revoke(&self, holder: Holder, uid: &str) -> Result<(), KeyError> {
        match self {
            PodKeys::Shared(_) | PodKeys::Sessions(_) => Ok(()),
            PodKeys::Scoped { issuer, .. } => issuer.revoke(&user(holder, uid)).await,
        }
    }
}

/// Derives keys from a secret only the operator holds.
#[derive(Clone)]
pub struct Derivation {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Derivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derivation(<secret redacted>)")
    }
}

impl Derivation {
    /// Keys derived from `secret`.
    pub fn new(secret: &[u8]) -> Derivation {
        Derivation {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, purpose: &str, holder: Holder, uid: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        for part in [purpose, holder.name(), uid] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The key of `holder` with `uid`: `MA` and 18 upper-case hex digits, and a 40-digit secret
    /// (the alphanumeric forms the store takes).
    pub fn key(&self, holder: Holder, uid: &str) -> StoreKey {
        StoreKey {
            access_key_id: format!(
                "MA{}",
                self.mac("storage access key", holder, uid)[..18].to_uppercase()
            ),
            secret_access_key: self.mac("storage secret key", holder, uid)[..40].to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_holder_gets_its_own_stable_key() {
        let keys = Derivation::new(b"operator secret");
        let run = keys.key(Holder::Run, "uid-1");
        assert_eq!(run, keys.key(Holder::Run, "uid-1"), "stable");
        assert_ne!(run, keys.key(Holder::Run, "uid-2"));
        assert_ne!(run, keys.key(Holder::Predictor, "uid-1"));
        assert_ne!(run, Derivation::new(b"another secret").key(Holder::Run, "uid-1"));
        assert_eq!(run.access_key_id.len(), 20);
        assert!(run.access_key_id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(run.secret_access_key.len(), 40);
        assert!(!run.secret_access_key.contains(&run.access_key_id[2..]));
        assert_eq!(user(Holder::Run, "uid-1"), "run-uid-1");
        assert_eq!(user(Holder::Predictor, "uid-1"), "predictor-uid-1");
    }

    #[tokio::test]
    async fn shared_keys_are_the_operators_and_need_no_store() {
        let shared = Credentials {
            access_key_id: "op".into(),
            secret_access_key: "op-secret".into(),
            session_token: None,
        };
        let keys = PodKeys::Shared(shared.clone());
        assert!(!keys.scoped());
        let grants = Grants {
            bucket: "b".into(),
            read: vec![],
            write: vec![],
        };
        assert_eq!(keys.issue(Holder::Run, "u", &grants).await.unwrap(), shared);
        keys.revoke(Holder::Run, "u").await.unwrap();
    }
}
