//! The framework's ceiling for `make bench-predict`: a tonic server answering
//! `prediction.Predictor/PredictorPredict` and `prediction.PredictionService/Predict` with a
//! constant, on the predictor's runtime and transport settings (tokio's default multi-threaded
//! runtime, TCP_NODELAY, the same response layer) but with no model, no checks and no metrics.
//! Not a product: it tells how much of the predictor's time is the framework's. With a second
//! address it also answers the Open Inference Protocol v2's `POST /v2/models/{name}/infer` with
//! a constant body of the predictor's shape, on axum as the predictor's HTTP server is.
//!
//!   cargo run --release --example constant -- 127.0.0.1:0 [127.0.0.1:0]

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

/// The predictor's OIP v2 answer for one document of a 4-label model, the same size as a real one.
const REST_ANSWER: &str = concat!(
    r#"{"model_name":"tweets","model_version":"1","outputs":[{"name":"label","datatype":"BYTES","#,
    r#""shape":[1],"data":["anger"]},{"name":"probabilities","datatype":"FP32","shape":[1,4],"#,
    r#""data":[0.7012345,0.1012345,0.1012345,0.0962965]}]}"#
);

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
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on {}", listener.local_addr()?);
    if let Some(http_address) = args.next() {
        let http = tokio::net::TcpListener::bind(&http_address).await?;
        println!("http listening on {}", http.local_addr()?);
        let app = axum::Router::new().route(
            "/v2/models/{name}/infer",
            axum::routing::post(|_: axum::body::Bytes| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    REST_ANSWER,
                )
            }),
        );
        tokio::spawn(async move { axum::serve(http, app).await });
    }
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
