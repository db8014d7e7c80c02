//! Scoped keys against the local cluster's real SeaweedFS (its IAM API on the S3 port): what a
//! run's key may read, write and list, and that it stops working when revoked.

mod common;

use common::denied;
use miniautoml_data::{Grants, KeyIssuer, Store, StoreKey};
use miniautoml_test_support::{LocalCluster, unique};

fn issuer(cluster: &LocalCluster) -> KeyIssuer {
    KeyIssuer::new(
        Some(&cluster.s3_endpoint),
        &cluster.s3_access_key,
        &cluster.s3_secret_key,
    )
}

fn store_as(cluster: &LocalCluster, key: &StoreKey) -> Store {
    Store::with_credentials(
        Some(&cluster.s3_endpoint),
        "us-east-1",
        &key.access_key_id,
        &key.secret_access_key,
        &cluster.s3_bucket,
    )
}

#[tokio::test]
async fn a_runs_key_reads_its_snapshot_writes_its_folder_and_nothing_else_until_revoked() {
    let cluster = LocalCluster::shared();
    let admin = Store::new(cluster.s3(), &cluster.s3_bucket);
    let run = unique("run");
    let snapshot = format!("datasets/a/{run}/snapshots/hashAg==/");
    let other_snapshot = format!("datasets/b/{run}/snapshots/hashAg==/");
    let model = format!("models/a/{run}/uid/");
    for key in [
        format!("{snapshot}examples.csv"),
        format!("{other_snapshot}examples.csv"),
        format!("datasets/a/{run}/commits/1/examples.csv"),
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
    let suffix = &run[run.len() - 8..];
    let key = StoreKey {
        access_key_id: format!("MATEST{}", suffix.to_uppercase()).replace('-', "0"),
        secret_access_key: format!("secret{suffix}secret{suffix}"),
    };
    let user = format!("run-{run}");
    let issuer = issuer(cluster);
    issuer.issue(&user, &grants, &key).await.unwrap();
    // Issuing again (a retried reconcile) is fine and gives the same key.
    issuer.issue(&user, &grants, &key).await.unwrap();

    let scoped = store_as(cluster, &key);
    assert_eq!(
        scoped.read(&format!("{snapshot}examples.csv")).await.unwrap(),
        b"text,label\n"
    );
    let listed = scoped.list(&cluster.s3_bucket, &snapshot).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    scoped
        .put(
            &format!("{model}model.bin"),
            b"weights".to_vec(),
            "application/octet-stream",
        )
        .await
        .unwrap();
    assert_eq!(
        scoped.read(&format!("{model}model.bin")).await.unwrap(),
        b"weights"
    );

    denied(
        scoped.read(&format!("{other_snapshot}examples.csv")).await,
        "another namespace's snapshot",
    );
    denied(
        scoped
            .read(&format!("datasets/a/{run}/commits/1/examples.csv"))
            .await,
        "its dataset's commits",
    );
    denied(
        scoped
            .put(&format!("{snapshot}examples.csv"), b"poison".to_vec(), "text/csv")
            .await,
        "overwriting its snapshot",
    );
    denied(
        scoped
            .put(
                &format!("models/b/{run}/uid/model.bin"),
                b"x".to_vec(),
                "application/octet-stream",
            )
            .await,
        "writing another run's folder",
    );
    denied(
        scoped.list(&cluster.s3_bucket, "datasets/").await,
        "listing datasets/",
    );
    denied(scoped.list(&cluster.s3_bucket, "").await, "listing the bucket");

    // The key cannot make itself another key, or widen its own policy.
    let itself = KeyIssuer::new(
        Some(&cluster.s3_endpoint),
        &key.access_key_id,
        &key.secret_access_key,
    );
    let wider = Grants {
        bucket: cluster.s3_bucket.clone(),
        read: vec!["datasets/".into()],
        write: vec!["models/".into()],
    };
    let spare = StoreKey {
        access_key_id: format!("{}X", key.access_key_id),
        secret_access_key: key.secret_access_key.clone(),
    };
    let refused = itself.issue(&user, &wider, &spare).await.unwrap_err();
    assert!(
        matches!(refused, miniautoml_data::KeyError::Refused { .. }),
        "{refused}"
    );
    denied(
        store_as(cluster, &spare)
            .read(&format!("{other_snapshot}examples.csv"))
            .await,
        "a key the run made for itself",
    );
    denied(
        scoped.read(&format!("{other_snapshot}examples.csv")).await,
        "another namespace's snapshot after trying to widen its policy",
    );

    // Revoked: refused at once; revoking again is fine.
    issuer.revoke(&user).await.unwrap();
    issuer.revoke(&user).await.unwrap();
    denied(
        scoped.read(&format!("{snapshot}examples.csv")).await,
        "its own snapshot after revocation",
    );
    admin
        .read(&format!("{snapshot}examples.csv"))
        .await
        .expect("the admin key still reads");
}

#[tokio::test]
async fn a_store_without_iam_writes_is_a_clear_refusal() {
    let cluster = LocalCluster::shared();
    // A key the store does not know cannot use its IAM API.
    let stranger = KeyIssuer::new(Some(&cluster.s3_endpoint), "NOBODY0000", "not-a-secret-at-all");
    let error = stranger
        .issue(
            &unique("run"),
            &Grants {
                bucket: cluster.s3_bucket.clone(),
                read: vec!["datasets/x/".into()],
                write: vec![],
            },
            &StoreKey {
                access_key_id: "MAXXXXXXXX".into(),
                secret_access_key: "xxxxxxxxxxxx".into(),
            },
        )
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("refused CreateUser"), "{text}");
    assert!(text.contains("credentialScope: shared"), "{text}");
}

#[tokio::test]
async fn a_user_left_by_an_earlier_install_takes_the_new_installs_key() {
    // A reinstall over a store that kept its data: the user exists with a key derived from the
    // old install's secret; the new install issues another for the same user.
    let cluster = LocalCluster::shared();
    let admin = Store::new(cluster.s3(), &cluster.s3_bucket);
    let namespace = unique("ns");
    let prefix = format!("raw/{namespace}/");
    admin
        .put(
            &format!("{prefix}part1.csv"),
            b"text,label\n".to_vec(),
            "text/csv",
        )
        .await
        .unwrap();
    let grants = Grants {
        bucket: cluster.s3_bucket.clone(),
        read: vec![prefix.clone()],
        write: vec![prefix.clone()],
    };
    let suffix = namespace[namespace.len() - 8..].to_uppercase().replace('-', "0");
    let key = |install: &str| StoreKey {
        access_key_id: format!("MA{install}{suffix}"),
        secret_access_key: format!("secret{install}{suffix}secret"),
    };
    let user = format!("upload-{namespace}");
    let issuer = issuer(cluster);
    issuer.issue(&user, &grants, &key("OLD")).await.unwrap();
    issuer.issue(&user, &grants, &key("NEW")).await.unwrap();
    assert_eq!(
        store_as(cluster, &key("NEW"))
            .read(&format!("{prefix}part1.csv"))
            .await
            .expect("the new install's key reads"),
        b"text,label\n"
    );
    // The earlier install's key stopped working when the new one was issued.
    denied(
        store_as(cluster, &key("OLD"))
            .read(&format!("{prefix}part1.csv"))
            .await,
        "the earlier install's key",
    );
    // Revoking removes the user whatever keys it holds.
    issuer.revoke(&user).await.unwrap();
    denied(
        store_as(cluster, &key("NEW"))
            .read(&format!("{prefix}part1.csv"))
            .await,
        "the new key after revocation",
    );
}
