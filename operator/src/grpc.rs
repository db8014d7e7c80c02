//! The gRPC API server on port 51001: the original system's services (added as they are
//! implemented), standard gRPC health checking and server reflection for grpcurl.

pub mod auth;
pub mod data_management;
mod errors;
pub mod forward;
pub mod in_flight;
pub mod input;
pub mod metadata_store;
pub mod methods;
pub mod original_contract;
pub mod prediction;
pub mod training;

use miniautoml_proto::codec::too_large_is_resource_exhausted;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{StartupError, readiness::Readiness};

/// The original system's services this server runs (tests of the bare server leave them out).
#[derive(Default)]
pub struct Services {
    /// `data_management.DataManagementService`.
    pub data: Option<data_management::DataManagement>,
    /// `metadata_store.MetadataStoreService`.
    pub metadata: Option<metadata_store::MetadataStore>,
    /// `training.TrainingService`.
    pub training: Option<training::Training>,
    /// `prediction.PredictionService`.
    pub prediction: Option<prediction::Prediction>,
    /// Whether this replica leads; a follower forwards the methods that write to the leader.
    pub leadership: crate::leader::Leadership,
    /// Who may call: callers reviewed by the Kubernetes API server, or anyone when none
    /// (`--grpc-auth=none`).
    pub auth: Option<auth::Reviewer>,
    /// TLS for the listener, and for forwarding to the leader (`--tls-dir`).
    pub tls: Option<crate::tls::ServerTls>,
    /// How a follower verifies the leader before forwarding when there is no TLS (with TLS,
    /// the leader's certificate).
    pub plain_text_leader_check: forward::LeaderCheck,
}

/// Serves gRPC on `listener` (over TLS when `services.tls` is given) until `shutdown` fires. Health turns NOT_SERVING first, so clients
/// and load balancers stop sending before the listener closes.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
    services: Services,
) -> Result<(), StartupError> {
    let Services {
        data,
        metadata,
        training,
        prediction,
        leadership,
        auth,
        tls,
        plain_text_leader_check,
    } = services;
    let part = readiness.component("grpc");
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(miniautoml_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(miniautoml_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let addr = listener.local_addr().map_err(|source| StartupError::Serve {
        server: "gRPC",
        source,
    })?;
    tracing::info!(%addr, "gRPC server listening");
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    part.set_ready();

    let stopping = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health_reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
    };
    // The caller is checked first, on the replica the call reaches (the leader checks a
    // forwarded write again, from its own cache).
    let leader_check = match &tls {
        Some(tls) => forward::LeaderCheck::Tls(tls.client_config()),
        None => plain_text_leader_check,
    };
    let router = Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            too_large_is_resource_exhausted::<tonic::body::Body>,
        ))
        .layer(auth::AuthLayer::new(auth))
        .layer(forward::ForwardWritesLayer::new(leadership, leader_check))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_optional_service(data.map(
            miniautoml_proto::data_management::data_management_service_server::DataManagementServiceServer::new,
        ))
        .add_optional_service(metadata.map(
            miniautoml_proto::metadata_store::metadata_store_service_server::MetadataStoreServiceServer::new,
        ))
        .add_optional_service(
            training.map(miniautoml_proto::training::training_service_server::TrainingServiceServer::new),
        )
        .add_optional_service(prediction.map(
            miniautoml_proto::prediction::prediction_service_server::PredictionServiceServer::new,
        ));
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.grpc_incoming(listener), stopping)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopping)
                .await?
        }
    }
    Ok(())
}
