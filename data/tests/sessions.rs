//! Session keys (STS `AssumeRole` with a session policy) against the local cluster's real
//! SeaweedFS, whose STS answers on the S3 port as an external S3's would: what a run's
//! temporary key may read, write and list, and that it cannot widen itself.

mod common;

use common::denied;
use std::time::{Duration, SystemTime};

use miniautoml_data::{Grants, KeyError, SessionIssuer, SessionKey, Store};
use miniautoml_test_support::{LocalCluster, unique};

fn issuer(cluster: &LocalCluster, access_key: &str, secret_key: &str) -> SessionIssuer {
    SessionIssuer::new(
        Some(&cluster.s3_endpoint),
        "us-east-1",
        (access_key, secret_key),
        None,
        Duration::from_secs(900),
    )
}

fn store_as(cluster: &LocalCluster, key: &SessionKey, token: Option<&str>) -> Store {
    Store::with_session_token(
        Some(&cluster.s3_endpoint),
        "us-east-1",
        (&key.access_key_id, &key.secret_access_key, token),
        &cluster.s3_bucket,
    )
}

#[tokio::test]
async fn a_runs_session_key_reads_its_snapshot_writes_its_folder_and_nothing_else() {
    let cluster = LocalCluster::shared();
    let admin = Store::new(cluster.s3(), &cluster.s3_bucket);
    let run = unique("session");
    let snapshot = format!("datasets/a/{run}/snapshots/hashAg==/");
    let other_snapshot = format!("datasets/b/{run}/snapshots/hashAg==/");
    let model = format!("models/a/{run}/uid/");
    for key in [
        format!("{snapshot}examples.csv"),
        format!("{other_snapshot}examples.csv"),
    ] {
        admin
            .put(&key, b"text,label\n".to_vec(), "text/csv")
            .await
            .unwrap();
    }
    let grants = Grants {
        bucket: cluster.s3_bucket.clone(),
        read: vec![snapshot.clone()],
        write: vec![model.clone()],
    };
    let sts = issuer(cluster, &cluster.s3_access_key, &cluster.s3_secret_key);
    let key = sts.issue(&format!("run-{run}"), &grants).await.unwrap();
    assert!(key.access_key_id != cluster.s3_access_key, "a key of its own");
    let left = key.expires.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(800) && left <= Duration::from_secs(900),
        "it lasts the duration asked for: {left:?}"
    );
    // Each issue is a new key.
    let again = sts.issue(&format!("run-{run}"), &grants).await.unwrap();
    assert_ne!(again.access_key_id, key.access_key_id);

    let session = store_as(cluster, &key, Some(&key.session_token));
    assert_eq!(
        session.read(&format!("{snapshot}examples.csv")).await.unwrap(),
        b"text,label\n"
    );
    let listed = session.list(&cluster.s3_bucket, &snapshot).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    session
        .put(
            &format!("{model}model.bin"),
            b"weights".to_vec(),
            "application/octet-stream",
        )
        .await
        .unwrap();
    assert_eq!(
        session.read(&format!("{model}model.bin")).await.unwrap(),
        b"weights"
    );

    denied(
        session.read(&format!("{other_snapshot}examples.csv")).await,
        "another namespace's snapshot",
    );
    denied(
        session
            .put(&format!("{snapshot}examples.csv"), b"poison".to_vec(), "text/csv")
            .await,
        "overwriting its snapshot",
    );
    denied(
        session
            .put(
                &format!("models/b/{run}/uid/model.bin"),
                b"x".to_vec(),
                "application/octet-stream",
            )
            .await,
        "writing another run's folder",
    );
    denied(
        session.list(&cluster.s3_bucket, "datasets/").await,
        "listing datasets/",
    );
    // The pair without its session token is no key at all.
    assert!(
        store_as(cluster, &key, None)
            .read(&format!("{snapshot}examples.csv"))
            .await
            .is_err(),
        "the key without its token"
    );

    // The temporary key cannot assume a wider session for itself.
    let wider = Grants {
        bucket: cluster.s3_bucket.clone(),
        read: vec!["datasets/".into()],
        write: vec!["models/".into()],
    };
    let refused = SessionIssuer::new(
        Some(&cluster.s3_endpoint),
        "us-east-1",
        (&key.access_key_id, &key.secret_access_key),
        None,
        Duration::from_secs(900),
    )
    .issue(&format!("run-{run}-wider"), &wider)
    .await
    .unwrap_err();
    assert!(matches!(refused, KeyError::Refused { .. }), "{refused}");
}

#[tokio::test]
async fn a_role_the_operator_may_not_assume_is_refused_with_the_stores_reason() {
    let cluster = LocalCluster::shared();
    let grants = Grants {
        bucket: cluster.s3_bucket.clone(),
        read: vec!["datasets/a/".into()],
        write: vec![],
    };
    let error = SessionIssuer::new(
        Some(&cluster.s3_endpoint),
        "us-east-1",
        (&cluster.s3_access_key, &cluster.s3_secret_key),
        Some("arn:aws:iam::000000000000:role/no-such-role".into()),
        Duration::from_secs(900),
    )
    .issue("run-refused", &grants)
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, KeyError::Refused { .. }), "{text}");
    assert!(
        text.contains("AccessDenied") && text.contains("no-such-role"),
        "{text}"
    );
    assert!(
        text.contains("storage.sts.roleArn"),
        "the hint names the value: {text}"
    );
}
