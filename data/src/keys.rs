//! Scoped storage keys: each training run and each predictor gets a key of its own that reads
//! and writes only its own prefixes, made and revoked through the store's IAM API — the one the
//! bundled SeaweedFS serves on its S3 port (`-s3.iam.readOnly=false`), AWS IAM's query API.
//!
//! A key belongs to an IAM user named after the object it serves (`run-<uid>`,
//! `predictor-<uid>`) with one inline policy, [`policy`]. The key material is chosen by the
//! caller (derived from a secret only the operator holds and the object's uid) and handed to the
//! store with `CreateAccessKey`'s `AccessKeyId` and `SecretAccessKey` (SeaweedFS's extension of
//! the AWS API), so issuing is idempotent — a retried or repeated issue gives the same key — and
//! the operator never reads a Secret back.

use std::time::Duration;

use aws_sdk_iam::{
    config::{BehaviorVersion, Credentials, Region, timeout::TimeoutConfig},
    error::{ProvideErrorMetadata, SdkError},
};
use aws_smithy_types::body::SdkBody;

/// The name of the one inline policy of a scoped user.
pub const POLICY_NAME: &str = "scope";

/// What a scoped key may do in one bucket: read the objects under `read`, and read, write and
/// delete those under `write`; list only those prefixes. Prefixes end with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    /// The bucket.
    pub bucket: String,
    /// Prefixes the key reads.
    pub read: Vec<String>,
    /// Prefixes the key reads and writes.
    pub write: Vec<String>,
}

/// A key pair for the S3 API.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKey")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The IAM policy document of `grants` (AWS's policy language, which SeaweedFS enforces):
/// `GetObject` under the read prefixes; `GetObject`, `PutObject` (multipart uploads included)
/// and `DeleteObject` under the write prefixes; `ListBucket` only with an `s3:prefix` inside
/// one of them. Nothing else — no other prefix, bucket, or IAM action.
pub fn policy(grants: &Grants) -> serde_json::Value {
    let objects = |prefixes: &[String]| -> Vec<String> {
        prefixes
            .iter()
            .map(|prefix| format!("arn:aws:s3:::{}/{prefix}*", grants.bucket))
            .collect()
    };
    let mut statements = Vec::new();
    if !grants.read.is_empty() {
        statements.push(serde_json::json!({
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": objects(&grants.read),
        }));
    }
    if !grants.write.is_empty() {
        statements.push(serde_json::json!({
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            "Resource": objects(&grants.write),
        }));
    }
    let listed: Vec<String> = grants
        .read
        .iter()
        .chain(&grants.write)
        .flat_map(|prefix| [prefix.clone(), format!("{prefix}*")])
        .collect();
    if !listed.is_empty() {
        statements.push(serde_json::json!({
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [format!("arn:aws:s3:::{}", grants.bucket)],
            "Condition": {"StringLike": {"s3:prefix": listed}},
        }));
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": statements})
}

/// Why a key could not be issued or revoked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The store answered and refused (no IAM API, IAM writes off, a malformed policy, the
    /// operator's key not an admin's): retrying will not help until the store is configured.
    #[error(
        "{} refused {action} for {user}: {message} ({})",
        service(action),
        hint(action)
    )]
    Refused {
        /// The IAM action.
        action: &'static str,
        /// The user it was for.
        user: String,
        /// The store's code and message.
        message: String,
    },
    /// The store did not answer: retry later.
    #[error("{} did not answer {action} for {user}: {message}; retrying", service(action))]
    Unavailable {
        /// The IAM action.
        action: &'static str,
        /// The user it was for.
        user: String,
        /// What went wrong.
        message: String,
    },
}

/// Who answers `action`: the store's IAM API, or the STS endpoint for `AssumeRole`.
fn service(action: &str) -> &'static str {
    if action == "AssumeRole" {
        "the STS endpoint"
    } else {
        "the object store's IAM API"
    }
}

/// What to change when the store refuses `action`.
fn hint(action: &str) -> &'static str {
    if action == "AssumeRole" {
        "the operator's key must be allowed to assume storage.sts.roleArn for storage.sts.durationSeconds, \
         and the role must allow what the session policy grants"
    } else {
        "the store must serve an IAM API that takes writes — the bundled SeaweedFS does with \
         -s3.iam.readOnly=false — or pods get the shared key only with credentialScope: shared"
    }
}

/// How many issues and revocations one [`KeyIssuer`] (and its clones) has at the store at once.
/// SeaweedFS serialises IAM writes behind one lock and each costs it about 0.3 s of CPU: a
/// burst of a hundred runs sent at once would queue there past the calls' 5 s timeout and be
/// done, abandoned and retried; queued here, each goes through once.
pub const KEY_CHANGES_IN_FLIGHT: usize = 2;

/// Issues and revokes scoped keys with an admin's credentials.
#[derive(Clone, Debug)]
pub struct KeyIssuer {
    iam: aws_sdk_iam::Client,
    changes: std::sync::Arc<tokio::sync::Semaphore>,
}

impl KeyIssuer {
    /// An issuer talking to the IAM API at `endpoint` (the S3 endpoint of a SeaweedFS; AWS's
    /// own when `None`), signing with the admin key `access_key`/`secret_key`.
    pub fn new(endpoint: Option<&str>, access_key: &str, secret_key: &str) -> KeyIssuer {
        let credentials = Credentials::new(access_key, secret_key, None, None, "static");
        let mut config = aws_sdk_iam::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            // IAM is signed for us-east-1 wherever the data lives.
            .region(Region::new("us-east-1"))
            .credentials_provider(credentials);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        // A store that does not answer holds up one reconcile for seconds, not forever: the
        // call fails as Unavailable and the object is retried.
        config = config.timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
        );
        KeyIssuer {
            iam: aws_sdk_iam::Client::from_conf(config.build()),
            changes: std::sync::Arc::new(tokio::sync::Semaphore::new(KEY_CHANGES_IN_FLIGHT)),
        }
    }

    /// Makes `user` (when missing) with exactly `grants`, and `key` its key. Idempotent: a
    /// repeated issue with the same key changes nothing but the policy, which it replaces.
    pub async fn issue(&self, user: &str, grants: &Grants, key: &StoreKey) -> Result<(), KeyError> {
        let _turn = self
            .changes
            .acquire()
            .await
            .expect("the semaphore is never closed");
        match self.iam.create_user().user_name(user).send().await {
            Ok(_) => {}
            Err(error) if code(&error) == Some("EntityAlreadyExists") => {}
            Err(error) => return Err(classify("CreateUser", user, error)),
        }
        self.iam
            .put_user_policy()
            .user_name(user)
            .policy_name(POLICY_NAME)
            .policy_document(policy(grants).to_string())
            .send()
            .await
            .map_err(|error| classify("PutUserPolicy", user, error))?;
        let fields = form_fields(key);
        let created = self
            .iam
            .create_access_key()
            .user_name(user)
            .customize()
            // Before signing: the key material goes into the signed form body.
            .mutate_request(move |request| {
                let mut body = request.body().bytes().unwrap_or_default().to_vec();
                body.extend_from_slice(fields.as_bytes());
                let length = body.len();
                *request.body_mut() = SdkBody::from(body);
                request.headers_mut().insert("Content-Length", length.to_string());
            })
            .send()
            .await;
        match created {
            Ok(_) => {}
            // The same key, issued before (checked below: it must be this user's).
            Err(error) if code(&error) == Some("EntityAlreadyExists") => {}
            Err(error) => return Err(classify("CreateAccessKey", user, error)),
        }
        // The user holds this key and no other: a key an earlier install made for the same user
        // (a store that kept its data, another run-token key) stops working here.
        let held = self.access_keys(user).await?;
        if !held.contains(&key.access_key_id) {
            return Err(KeyError::Refused {
                action: "CreateAccessKey",
                user: user.to_string(),
                message: format!(
                    "the store says key {} is in use, and not by {user}",
                    key.access_key_id
                ),
            });
        }
        for other in held.iter().filter(|id| **id != key.access_key_id) {
            self.delete_access_key(user, other).await?;
        }
        Ok(())
    }

    /// Revokes every key of `user` and removes the user with its policy. A user or key already
    /// gone is fine. Once this returns, the store refuses the user's keys.
    ///
    /// The user is deleted first: SeaweedFS deletes its keys and policy with it, in one write
    /// (each IAM write costs the bundled store about 0.3 s of CPU). A store that refuses to
    /// delete a user who still holds keys or policies (AWS: `DeleteConflict`) gets them deleted
    /// first, then the user.
    pub async fn revoke(&self, user: &str) -> Result<(), KeyError> {
        let _turn = self
            .changes
            .acquire()
            .await
            .expect("the semaphore is never closed");
        match self.iam.delete_user().user_name(user).send().await {
            Ok(_) => return Ok(()),
            Err(error) if code(&error) == Some("NoSuchEntity") => return Ok(()),
            Err(error) if code(&error) == Some("DeleteConflict") => {}
            Err(error) => return Err(classify("DeleteUser", user, error)),
        }
        for key in self.access_keys(user).await? {
            self.delete_access_key(user, &key).await?;
        }
        match self
            .iam
            .delete_user_policy()
            .user_name(user)
            .policy_name(POLICY_NAME)
            .send()
            .await
        {
            Ok(_) => {}
            Err(error) if code(&error) == Some("NoSuchEntity") => {}
            Err(error) => return Err(classify("DeleteUserPolicy", user, error)),
        }
        match self.iam.delete_user().user_name(user).send().await {
            Ok(_) => Ok(()),
            Err(error) if code(&error) == Some("NoSuchEntity") => Ok(()),
            Err(error) => Err(classify("DeleteUser", user, error)),
        }
    }

    /// The ids of `user`'s keys (none when the user is gone).
    async fn access_keys(&self, user: &str) -> Result<Vec<String>, KeyError> {
        match self.iam.list_access_keys().user_name(user).send().await {
            Ok(listed) => Ok(listed
                .access_key_metadata()
                .iter()
                .filter_map(|key| key.access_key_id().map(str::to_string))
                .collect()),
            Err(error) if code(&error) == Some("NoSuchEntity") => Ok(Vec::new()),
            Err(error) => Err(classify("ListAccessKeys", user, error)),
        }
    }

    async fn delete_access_key(&self, user: &str, access_key_id: &str) -> Result<(), KeyError> {
        let deleted = self
            .iam
            .delete_access_key()
            .user_name(user)
            .access_key_id(access_key_id)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(error) if code(&error) == Some("NoSuchEntity") => Ok(()),
            Err(error) => Err(classify("DeleteAccessKey", user, error)),
        }
    }
}

/// `&AccessKeyId=…&SecretAccessKey=…`, form-encoded (both are alphanumeric).
fn form_fields(key: &StoreKey) -> String {
    format!(
        "&AccessKeyId={}&SecretAccessKey={}",
        key.access_key_id, key.secret_access_key
    )
}

pub(crate) fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

pub(crate) fn classify<E, R>(action: &'static str, user: &str, error: SdkError<E, R>) -> KeyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let user = user.to_string();
    match &error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            KeyError::Refused {
                action,
                user,
                message: format!(
                    "{}: {}",
                    err.code().unwrap_or("an error"),
                    err.message().unwrap_or("no message")
                ),
            }
        }
        _ => KeyError::Unavailable {
            action,
            user,
            message: aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_names_only_the_prefixes_granted() {
        let grants = Grants {
            bucket: "b".into(),
            read: vec!["datasets/ns/d/snapshots/h/".into()],
            write: vec!["models/ns/j/u/".into()],
        };
        let document = policy(&grants);
        let statements = document["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 3);
        assert_eq!(
            statements[0]["Resource"],
            serde_json::json!(["arn:aws:s3:::b/datasets/ns/d/snapshots/h/*"])
        );
        assert_eq!(statements[0]["Action"], serde_json::json!(["s3:GetObject"]));
        assert_eq!(
            statements[1]["Resource"],
            serde_json::json!(["arn:aws:s3:::b/models/ns/j/u/*"])
        );
        assert_eq!(
            statements[2]["Condition"]["StringLike"]["s3:prefix"],
            serde_json::json!([
                "datasets/ns/d/snapshots/h/",
                "datasets/ns/d/snapshots/h/*",
                "models/ns/j/u/",
                "models/ns/j/u/*"
            ])
        );
        let text = document.to_string();
        assert!(!text.contains("iam:") && !text.contains("\"*\""), "{text}");
    }

    #[test]
    fn a_read_only_key_gets_no_write_statement() {
        let grants = Grants {
            bucket: "b".into(),
            read: vec!["models/ns/j/u/".into()],
            write: vec![],
        };
        let text = policy(&grants).to_string();
        assert!(
            !text.contains("PutObject") && !text.contains("DeleteObject"),
            "{text}"
        );
    }

    #[test]
    fn a_key_shows_its_id_never_its_secret() {
        let key = StoreKey {
            access_key_id: "MAID".into(),
            secret_access_key: "very-secret".into(),
        };
        let shown = format!("{key:?}");
        assert!(
            shown.contains("MAID") && !shown.contains("very-secret"),
            "{shown}"
        );
        assert_eq!(form_fields(&key), "&AccessKeyId=MAID&SecretAccessKey=very-secret");
    }
}
