//! The framework's ceiling for `make bench-predict`: a tonic server answering
//! `prediction.Predictor/PredictorPredict` and `prediction.PredictionService/Predict` with a
//! constant, on the predictor's runtime and transport settings (tokio's default multi-threaded
//! runtime, TCP_NODELAY, the same response layer) but with no model, no checks and no metrics.
//! Not a product: it tells how much of the predictor's time is the framework's.
//!
//!   cargo run --release --example constant -- 127.0.0.1:0

use miniautoml_proto::codec::too_large_is_resource_exhausted;
use miniautoml_proto::prediction::{
    PredictRequest, PredictResponse, PredictorPredictRequest, PredictorPredictResponse,
    prediction_service_server::{PredictionService, PredictionServiceServer},
    predictor_server::{Predictor, PredictorServer},
};
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

/// The predictor's answer for one tweet_emotion class, the same size as a real one.
const ANSWER: &str = "{\"result\": \"anger\"}";

struct Constant;

#[tonic::async_trait]
impl Predictor for Constant {
    async fn predictor_predict(
        &self,
        _: Request<PredictorPredictRequest>,
    ) -> Result<Response<PredictorPredictResponse>, Status> {
        Ok(Response::new(PredictorPredictResponse {
            response: ANSWER.into(),
        }))
    }
}

#[tonic::async_trait]
impl PredictionService for Constant {
    async fn predict(&self, _: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        Ok(Response::new(PredictResponse {
            response: ANSWER.into(),
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on {}", listener.local_addr()?);
    Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            too_large_is_resource_exhausted::<tonic::body::Body>,
        ))
        .add_service(PredictorServer::new(Constant))
        .add_service(PredictionServiceServer::new(Constant))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
