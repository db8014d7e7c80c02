//! The gRPC API: `prediction.Predictor/PredictorPredict` (what the operator's front end calls)
//! and `prediction.PredictionService/Predict` (the original front end's method, so a client can
//! also talk to a predictor directly), with standard health checking and reflection.

use std::{sync::Arc, time::Instant};

use miniautoml_proto::codec::too_large_is_resource_exhausted;
use miniautoml_proto::prediction::{
    PredictRequest, PredictResponse, PredictorPredictRequest, PredictorPredictResponse,
    prediction_service_server::{PredictionService, PredictionServiceServer},
    predictor_server::{Predictor, PredictorServer},
};
use tokio::net::TcpListener;
use tonic::{
    Code, Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};

use crate::{Error, Result, State, model::Refused};

/// Both prediction services over the shared state.
#[derive(Clone)]
pub struct Predictions {
    state: Arc<State>,
}

impl Predictions {
    fn predict(&self, run_id: &str, document: &str) -> Result<String, Status> {
        let start = Instant::now();
        let result = match self.state.model() {
            None => Err(Status::unavailable("the model is not loaded yet")),
            Some(model) => model.respond(run_id, document).map_err(status),
        };
        let code = match &result {
            Ok(_) => "ok",
            Err(status) => code_label(status.code()),
        };
        self.state
            .metrics
            .observe("grpc", code, usize::from(result.is_ok()), start);
        result
    }
}

fn status(refused: Refused) -> Status {
    match refused {
        Refused::Rejected(rejection @ crate::Rejection::OtherRun { .. }) => {
            Status::not_found(rejection.to_string())
        }
        Refused::Rejected(rejection) => Status::invalid_argument(rejection.to_string()),
        Refused::Internal(error) => Status::internal(error.to_string()),
    }
}

/// The metrics label of a gRPC status code.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::Unavailable => "unavailable",
        _ => "internal",
    }
}

#[tonic::async_trait]
impl Predictor for Predictions {
    async fn predictor_predict(
        &self,
        request: Request<PredictorPredictRequest>,
    ) -> Result<Response<PredictorPredictResponse>, Status> {
        let request = request.into_inner();
        let response = self.predict(&request.run_id, &request.document)?;
        Ok(Response::new(PredictorPredictResponse { response }))
    }
}

#[tonic::async_trait]
impl PredictionService for Predictions {
    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let request = request.into_inner();
        let response = Predictions::predict(self, &request.run_id, &request.document)?;
        Ok(Response::new(PredictResponse { response }))
    }
}

/// Turns health SERVING (overall and per service) or NOT_SERVING.
pub async fn set_serving(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in ["", "prediction.Predictor", "prediction.PredictionService"] {
        reporter.set_service_status(service, status).await;
    }
}

/// Serves gRPC on `listener` until `close` resolves, then lets in-flight requests finish.
/// Health starts NOT_SERVING; [`set_serving`] turns it on once the model is loaded.
pub async fn serve<H: Health>(
    listener: TcpListener,
    state: Arc<State>,
    health: HealthServer<H>,
    close: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let limit = message_limit(state.max_document_bytes);
    let predictions = Predictions { state };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(miniautoml_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("gRPC reflection: {e}")))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(miniautoml_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("gRPC reflection: {e}")))?;
    Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            too_large_is_resource_exhausted::<tonic::body::Body>,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(PredictorServer::new(predictions.clone()).max_decoding_message_size(limit))
        .add_service(PredictionServiceServer::new(predictions).max_decoding_message_size(limit))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), close)
        .await?;
    Ok(())
}

/// Largest request message the transport decodes: a document at the limit with room to spare,
/// so that a document just over the limit gets INVALID_ARGUMENT with its size, not a transport
/// error.
pub fn message_limit(max_document_bytes: usize) -> usize {
    max_document_bytes.saturating_mul(4).max(4096)
}
