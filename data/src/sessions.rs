//! Session keys for an external S3 that has no IAM API the operator may write to (AWS S3 and
//! others): each run's and predictor's key is a temporary one from STS `AssumeRole` on a role
//! the administrator names, narrowed by an inline session policy to exactly the holder's
//! prefixes ([`crate::keys::policy`], the policy scoped keys get). Such a key cannot be revoked:
//! it stops working when it expires, `duration` after it was issued.

use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region, timeout::TimeoutConfig};

use crate::keys::{Grants, KeyError, classify, policy};

/// AWS's limit on an inline session policy, in characters.
pub const MAX_SESSION_POLICY: usize = 2048;
/// The shortest session STS gives.
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// The longest session `AssumeRole` gives (the role's own maximum may be lower).
pub const MAX_DURATION: Duration = Duration::from_secs(43_200);

/// A temporary key: the pair and the session token that goes with it, until `expires`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token every request must carry.
    pub session_token: String,
    /// When STS stops accepting it.
    pub expires: SystemTime,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Issues session keys with the operator's own credentials.
#[derive(Clone, Debug)]
pub struct SessionIssuer {
    sts: aws_sdk_sts::Client,
    role_arn: Option<String>,
    duration: Duration,
}

impl SessionIssuer {
    /// An issuer calling STS at `endpoint` (AWS's own for `region` when `None`), signing with
    /// `access_key`/`secret_key`, assuming `role_arn` (`None`: a session of the operator's own
    /// identity, where the STS allows it) for `duration` (clamped to 15 min – 12 h).
    pub fn new(
        endpoint: Option<&str>,
        region: &str,
        (access_key, secret_key): (&str, &str),
        role_arn: Option<String>,
        duration: Duration,
    ) -> SessionIssuer {
        let credentials = Credentials::new(access_key, secret_key, None, None, "static");
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(15))
                    .build(),
            );
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        SessionIssuer {
            sts: aws_sdk_sts::Client::from_conf(config.build()),
            role_arn,
            duration: duration.clamp(MIN_DURATION, MAX_DURATION),
        }
    }

    /// How long each key lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// A new key for the session `name` (the holder, e.g. `run-<uid>`; cut to STS's 64
    /// characters) that may do exactly what `grants` say, for [`SessionIssuer::duration`].
    pub async fn issue(&self, name: &str, grants: &Grants) -> Result<SessionKey, KeyError> {
        let document = policy(grants).to_string();
        if document.len() > MAX_SESSION_POLICY {
            return Err(KeyError::Refused {
                action: "AssumeRole",
                user: name.to_string(),
                message: format!(
                    "the session policy is {} characters, more than STS takes ({MAX_SESSION_POLICY})",
                    document.len()
                ),
            });
        }
        let session: String = name.chars().take(64).collect();
        let mut request = self
            .sts
            .assume_role()
            .role_session_name(&session)
            .policy(document)
            .duration_seconds(self.duration.as_secs() as i32);
        if let Some(role) = &self.role_arn {
            request = request.role_arn(role);
        }
        let answer = request
            .send()
            .await
            .map_err(|error| classify("AssumeRole", name, error))?;
        let credentials = answer.credentials().ok_or_else(|| KeyError::Refused {
            action: "AssumeRole",
            user: name.to_string(),
            message: "the answer holds no credentials".into(),
        })?;
        let expires = SystemTime::try_from(*credentials.expiration())
            .unwrap_or_else(|_| SystemTime::now() + self.duration);
        Ok(SessionKey {
            access_key_id: credentials.access_key_id().to_string(),
            secret_access_key: credentials.secret_access_key().to_string(),
            session_token: credentials.session_token().to_string(),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_clamped_to_what_sts_gives() {
        let issuer = |seconds| {
            SessionIssuer::new(None, "us-east-1", ("a", "s"), None, Duration::from_secs(seconds)).duration()
        };
        assert_eq!(issuer(60), MIN_DURATION);
        assert_eq!(issuer(3600), Duration::from_secs(3600));
        assert_eq!(issuer(100_000), MAX_DURATION);
    }

    #[tokio::test]
    async fn a_policy_longer_than_sts_takes_is_refused_before_any_call() {
        // An endpoint nothing listens on: the refusal must come first.
        let issuer = SessionIssuer::new(
            Some("http://127.0.0.1:9"),
            "us-east-1",
            ("a", "s"),
            None,
            Duration::from_secs(3600),
        );
        let grants = Grants {
            bucket: "b".into(),
            read: (0..40).map(|i| format!("datasets/ns/{i:0>40}/")).collect(),
            write: vec![],
        };
        let error = issuer.issue("run-u", &grants).await.unwrap_err();
        assert!(
            matches!(&error, KeyError::Refused { message, .. } if message.contains("more than STS takes")),
            "{error}"
        );
    }
}
