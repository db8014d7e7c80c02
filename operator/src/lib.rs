//! The MiniAutoML operator: controllers for Dataset, TrainingJob and ModelDeployment, the admin
//! HTTP server and the gRPC API server, in one process.

pub mod admin;
pub(crate) mod algorithms;
pub(crate) mod conditions;
pub mod config;
pub(crate) mod console;
pub(crate) mod context;
pub(crate) mod controller;
mod error;
pub mod grpc;
pub mod ids;
pub mod kueue;
pub(crate) mod leader;
pub mod metrics;
pub mod names;
pub(crate) mod pod_keys;
pub(crate) mod preflight;
pub mod readiness;
pub mod run_queue;
pub mod run_tokens;
pub(crate) mod snapshots;
pub(crate) mod sources;
pub(crate) mod status;
pub mod tls;
pub(crate) mod tombstones;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

pub use crate::error::{Error, Result, StartupError};
use crate::{
    config::{Config, CredentialScope, GrpcAuth},
    context::{Context, PodSettings, PredictorIngress, PredictorSettings, TrainingSettings},
    leader::Leadership,
    metrics::Metrics,
    pod_keys::{Derivation, PodKeys},
    readiness::Readiness,
    run_tokens::RunTokens,
    sources::SourcePolicy,
};
pub use miniautoml_proto::shutdown::termination_signal;

/// Runs the operator until `stop` fires or a server fails: claims its ports, checks the CRDs
/// are installed, then serves admin and gRPC and runs the controllers. On `stop` it reports not
/// ready for `--shutdown-delay`, then every part stops gracefully and a leader hands over.
pub async fn run(config: Config, stop: CancellationToken) -> Result<(), StartupError> {
    let sources = SourcePolicy::new(&config.bucket, &config.dataset_sources).map_err(StartupError::Config)?;
    let shutdown = CancellationToken::new();
    let admin_listener = bind("admin", config.admin_addr).await?;
    let grpc_listener = bind("gRPC", config.grpc_addr).await?;
    let original_listener = match config.original_contract_addr.0 {
        Some(addr) => Some(bind("original contract", addr).await?),
        None => None,
    };
    let console_listener = match config.console_addr.0 {
        Some(addr) => Some(bind("console", addr).await?),
        None => None,
    };
    let tls = match &config.tls_dir {
        Some(dir) => {
            let server_name = config.metadata_store_address.as_deref().and_then(tls::host_of);
            let tls = tls::ServerTls::load(dir, server_name, shutdown.clone())?;
            info!(dir = %dir.display(), "the gRPC and admin listeners serve TLS");
            Some(tls)
        }
        None => None,
    };
    let kube_config = kube::Config::infer().await.map_err(StartupError::KubeConfig)?;
    let api_url = kube_config.cluster_url.to_string();
    let metrics = Arc::new(Metrics::default());
    // Every API request is counted (`miniautoml_operator_kube_api_requests_total`).
    let counted = metrics.clone();
    let counting =
        tower::util::MapRequestLayer::new(move |request: axum::http::Request<kube::client::Body>| {
            counted.api_request(
                metrics::api_verb(request.method(), request.uri().query()),
                metrics::api_resource(request.uri().path()),
            );
            request
        });
    let client = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(StartupError::KubeClient)?
        .with_layer(&counting)
        .build();
    preflight::check_crds(&client)
        .await
        .map_err(|error| match error {
            StartupError::Kube(source @ (kube::Error::Service(_) | kube::Error::HyperError(_))) => {
                StartupError::Unreachable { url: api_url, source }
            }
            other => other,
        })?;
    info!("CRDs installed");

    let readiness = Readiness::default();
    tokio::spawn(drain(
        stop,
        config.shutdown_delay,
        readiness.clone(),
        shutdown.clone(),
    ));
    let store = storage(&config);
    // Kueue admits runs with spec.queueName where the cluster serves it (checked once: an
    // operator started before Kueue was installed needs a restart to use it).
    let kueue = match config.kueue {
        config::KueueUse::Off => {
            info!("--kueue=off: runs with queueName are refused");
            false
        }
        config::KueueUse::Auto | config::KueueUse::On => {
            kueue::served(
                &client,
                &context::scoped(&client, config.watch_namespace.as_deref()),
            )
            .await
        }
    };
    // Every replica watches; the caches serve the gRPC API as much as the controllers.
    let (caches, triggers) = controller::watch(&client, config.watch_namespace.as_deref(), kueue);
    let leadership = if config.leader_elect {
        let grpc_addr = grpc_listener.local_addr().map_err(|source| StartupError::Serve {
            server: "gRPC",
            source,
        })?;
        Leadership::elect(client.clone(), election_settings(&config, grpc_addr)).await?
    } else {
        Leadership::single()
    };
    let keys = pod_keys(&config);
    let ctx = Context::new(context::Parts {
        metrics: metrics.clone(),
        reporter_instance: config.pod_name.clone(),
        algorithm_images: config.algorithm_images(),
        algorithm_max_workers: config.algorithm_max_workers.iter().cloned().collect(),
        store,
        watch_namespace: config.watch_namespace.clone(),
        id_namespace: config.grpc_namespace.clone(),
        sources,
        caches,
        training: keys
            .clone()
            .and_then(|keys| training_settings(&config, tls.as_ref(), keys)),
        serving: keys.and_then(|keys| predictor_settings(&config, keys)),
        leadership: leadership.clone(),
        kueue,
        client,
    });
    metrics.set_leader(leadership.is_leading());
    tokio::spawn({
        let (metrics, mut gained) = (metrics.clone(), leadership.gained());
        async move {
            while gained.changed().await.is_ok() {
                metrics.set_leader(true);
            }
        }
    });
    if config.create_bucket
        && let Some(store) = ctx.store.clone()
    {
        tokio::spawn(ensure_bucket(store, shutdown.clone()));
    }
    let auth = match config.grpc_auth {
        GrpcAuth::Kubernetes => {
            info!(
                namespace = config.grpc_namespace,
                audience = config.grpc_token_audience,
                "gRPC callers are checked with TokenReviews and SubjectAccessReviews"
            );
            Some(grpc::auth::Reviewer::new(
                ctx.client.clone(),
                config.grpc_namespace.clone(),
                config.grpc_token_audience.clone(),
            ))
        }
        GrpcAuth::None => {
            tracing::warn!(
                "--grpc-auth=none: anyone who reaches the gRPC port may create, read and delete the Datasets and \
                 TrainingJobs of namespace {:?}; use it for a local lab only",
                config.grpc_namespace
            );
            None
        }
    };
    let ctx = Arc::new(ctx);

    // A server that cannot start stops everything, so the process exits with its error.
    let stop_on_error = |result: Result<(), StartupError>| {
        if result.is_err() {
            shutdown.cancel();
        }
        result
    };
    let admin = async {
        stop_on_error(
            admin::serve(
                admin_listener,
                tls.clone(),
                metrics,
                readiness.clone(),
                shutdown.clone(),
            )
            .await,
        )
    };
    let data = grpc::data_management::DataManagement::new(ctx.clone(), config.grpc_namespace.clone());
    let metadata = grpc::metadata_store::MetadataStore::new(ctx.clone());
    let training = grpc::training::Training::new(ctx.clone(), config.grpc_namespace.clone());
    let prediction = grpc::prediction::Prediction::new(ctx.clone(), config.predict_deploy_timeout);
    let leader_check = plain_text_leader_check(&config, &ctx.client);
    // Forwarded reports travel as the gRPC port's do: over TLS where it serves TLS.
    let original_forwarding = (
        ctx.clone(),
        leadership.clone(),
        match &tls {
            Some(tls) => grpc::forward::LeaderCheck::Tls(tls.client_config()),
            None => leader_check.clone(),
        },
    );
    let original_metadata = metadata.clone();
    let original_contract = async {
        let Some(listener) = original_listener else {
            return Ok(());
        };
        stop_on_error(
            grpc::original_contract::serve(
                listener,
                readiness.clone(),
                shutdown.clone(),
                original_metadata,
                original_forwarding,
            )
            .await,
        )
    };
    let console =
        console_listener.map(|listener| (listener, console::Console::new(ctx.clone(), auth.clone())));
    let console = async {
        let Some((listener, console)) = console else {
            return Ok(());
        };
        stop_on_error(console::serve(listener, tls.clone(), console, shutdown.clone()).await)
    };
    let grpc = async {
        stop_on_error(
            grpc::serve(
                grpc_listener,
                readiness.clone(),
                shutdown.clone(),
                grpc::Services {
                    data: Some(data),
                    metadata: Some(metadata),
                    training: Some(training),
                    prediction: Some(prediction),
                    leadership: leadership.clone(),
                    auth,
                    tls: tls.clone(),
                    plain_text_leader_check: leader_check,
                },
            )
            .await,
        )
    };
    tokio::spawn(tombstones::run(ctx.clone(), shutdown.clone()));
    tokio::spawn(controller::uploads::run(
        ctx.clone(),
        config.upload_key_namespaces.clone(),
        shutdown.clone(),
    ));
    let controllers = controller::run(ctx, triggers, readiness.clone(), shutdown.clone());
    let (admin, grpc, original_contract, console, ()) =
        tokio::join!(admin, grpc, original_contract, console, controllers);
    // Only now that no reconcile runs may another replica lead.
    leadership.step_down().await;
    admin.and(grpc).and(original_contract).and(console)
}

/// Once `stop` fires, stays up for `delay` reporting not ready (so that Services take this
/// replica out before it closes its listeners), then starts the shutdown.
async fn drain(
    stop: CancellationToken,
    delay: std::time::Duration,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => {}
        // A server failed: the shutdown is already under way.
        () = shutdown.cancelled() => return,
    }
    if !delay.is_zero() {
        let _draining = readiness.component("shutdown");
        info!(delay = ?delay, "stopping: not ready, serving until Services stop sending");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {}
        }
    }
    shutdown.cancel();
}

/// This replica in the leader election: named after its pod (else host and process id) and
/// reached at its pod IP (else the address gRPC listens on, loopback for a wildcard).
/// How a follower verifies the leader without TLS: its pod, when this replica runs in one
/// (the chart passes POD_NAME and POD_SERVICE_ACCOUNT); else, a replica on this machine.
fn plain_text_leader_check(config: &Config, client: &kube::Client) -> grpc::forward::LeaderCheck {
    if config.pod_name.is_none() {
        return grpc::forward::LeaderCheck::SameHost;
    }
    let service_account = config.service_account.clone().unwrap_or_else(|| {
        tracing::warn!(
            "POD_SERVICE_ACCOUNT is not set: without TLS, followers cannot verify the leader's pod and forward no writes"
        );
        String::new()
    });
    grpc::forward::LeaderCheck::Pod {
        pods: kube::Api::namespaced(client.clone(), &config.leader_elect_namespace),
        service_account,
    }
}

fn election_settings(config: &Config, grpc_addr: std::net::SocketAddr) -> leader::ElectionSettings {
    let name = config.pod_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let ip = config.pod_ip.unwrap_or(if grpc_addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        grpc_addr.ip()
    });
    leader::ElectionSettings {
        namespace: config.leader_elect_namespace.clone(),
        lease: config.leader_elect_lease.clone(),
        name,
        grpc_address: std::net::SocketAddr::new(ip, grpc_addr.port()).to_string(),
        lease_duration: config.lease_duration,
        renew_before: config.lease_duration / 3,
    }
}

/// Creates the bucket when missing, retrying until the object store answers (it may start
/// after the operator) or `shutdown` fires.
async fn ensure_bucket(store: miniautoml_data::Store, shutdown: CancellationToken) {
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_secs(1))
        .with_max_delay(std::time::Duration::from_secs(30))
        .without_max_times();
    let ensured = (|| store.ensure_bucket())
        .retry(backoff)
        .notify(|error, _| tracing::warn!(%error, "cannot make sure the bucket exists yet; retrying"));
    tokio::select! {
        () = shutdown.cancelled() => {}
        created = ensured => match created {
            Ok(true) => info!(bucket = store.bucket, "created the bucket"),
            Ok(false) => info!(bucket = store.bucket, "the bucket exists"),
            Err(error) => tracing::warn!(%error, "cannot make sure the bucket exists"),
        },
    }
}

/// What training runs need, when storage credentials and the metadata store address are set.
fn training_settings(
    config: &Config,
    tls: Option<&tls::ServerTls>,
    keys: PodKeys,
) -> Option<TrainingSettings> {
    let credentials = config.credentials.clone()?;
    let Some(address) = config.metadata_store_address.clone() else {
        tracing::warn!("no --metadata-store-address: TrainingJobs will wait until one is configured");
        return None;
    };
    Some(TrainingSettings {
        metadata_store_address: tls::metadata_store_url(&address, tls.is_some()),
        metadata_store_ca: tls.map(|tls| tls.ca_pem().to_string()),
        original_contract_address: config.original_contract_addr.0.and_then(|addr| {
            let host = tls::host_of(&address)?;
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            Some(format!("{host}:{}", addr.port()))
        }),
        algorithm_contracts: config.algorithm_contracts.iter().cloned().collect(),
        bucket: config.bucket.clone(),
        max_concurrent_runs: config.max_concurrent_runs,
        algorithm_pull_policies: config.algorithm_pull_policies.iter().cloned().collect(),
        algorithm_security_contexts: config.algorithm_security_contexts.iter().cloned().collect(),
        run_tokens: run_tokens(config, &credentials),
        pods: pod_settings(config, keys),
    })
}

/// What every pod the operator starts is given, holding `keys`.
fn pod_settings(config: &Config, keys: PodKeys) -> PodSettings {
    PodSettings {
        s3_endpoint: config.s3_endpoint.clone(),
        s3_region: config.s3_region.clone(),
        keys,
        image_pull_secrets: config.image_pull_secrets.clone(),
        launcher_image: config.launcher_image.clone(),
    }
}

/// The run tokens' key: MINIAUTOML_RUN_TOKEN_KEY, else derived from the storage secret key.
fn run_tokens(config: &Config, credentials: &config::Credentials) -> RunTokens {
    config
        .run_token_key
        .clone()
        .unwrap_or_else(|| RunTokens::derived_from(&credentials.secret_access_key))
}

/// The storage keys of runs' and predictors' pods (`--storage-credentials`), when storage
/// credentials are set.
fn pod_keys(config: &Config) -> Option<PodKeys> {
    let credentials = config.credentials.clone()?;
    Some(match config.storage_credentials {
        CredentialScope::Shared => {
            tracing::warn!(
                "--storage-credentials=shared: the pods of every run and predictor get the operator's bucket-wide key"
            );
            PodKeys::Shared(credentials)
        }
        CredentialScope::Scoped => PodKeys::Scoped {
            issuer: miniautoml_data::KeyIssuer::new(
                config.s3_endpoint.as_deref(),
                &credentials.access_key_id,
                &credentials.secret_access_key,
            ),
            derivation: Derivation::new(&run_tokens(config, &credentials).subkey("storage keys")),
        },
        CredentialScope::Sts => PodKeys::Sessions(miniautoml_data::SessionIssuer::new(
            config.sts_endpoint.as_deref().or(config.s3_endpoint.as_deref()),
            &config.s3_region,
            (&credentials.access_key_id, &credentials.secret_access_key),
            config.sts_role_arn.clone(),
            config.sts_duration,
        )),
    })
}

/// What predictors need, when storage credentials are set.
fn predictor_settings(config: &Config, keys: PodKeys) -> Option<PredictorSettings> {
    if config.predictor_network_policy
        && config.pod_namespace.is_some()
        && config.operator_pod_labels.is_empty()
    {
        tracing::warn!(
            "no --operator-pod-label: predictors' NetworkPolicies let in no pod of this operator, so PredictionService/Predict cannot reach them from a pod"
        );
    }
    Some(PredictorSettings {
        pods: pod_settings(config, keys),
        image: config.predictor_image.clone(),
        algorithm_predictors: config.algorithm_predictors.iter().cloned().collect(),
        image_pull_policy: config.predictor_pull_policy.clone(),
        security_context: config
            .predictor_security_context
            .clone()
            .unwrap_or_else(controller::children::restricted_security_context),
        ingress: config.predictor_network_policy.then(|| PredictorIngress {
            operator: config
                .pod_namespace
                .clone()
                .filter(|_| !config.operator_pod_labels.is_empty())
                .map(|namespace| (namespace, config.operator_pod_labels.iter().cloned().collect())),
        }),
    })
}

/// The bucket, when credentials are in the environment (AWS_ACCESS_KEY_ID and
/// AWS_SECRET_ACCESS_KEY; never flags, which `ps` would show).
fn storage(config: &Config) -> Option<miniautoml_data::Store> {
    let Some(credentials) = &config.credentials else {
        tracing::warn!("no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: object storage is not configured");
        return None;
    };
    info!(endpoint = ?config.s3_endpoint, bucket = config.bucket, "object storage configured");
    Some(miniautoml_data::Store::with_credentials(
        config.s3_endpoint.as_deref(),
        &config.s3_region,
        &credentials.access_key_id,
        &credentials.secret_access_key,
        &config.bucket,
    ))
}

async fn bind(
    server: &'static str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { server, addr, source })
}
