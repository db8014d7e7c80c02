//! The training-image contract (docs/training.md, "The training-image contract"): the environment the operator (or the
//! original MiniAutoML) gives a training container. Parsed in one place so that a missing or
//! malformed variable is reported by name before any work starts.

use crate::hyperparameters::Hyperparameters;
use crate::{Error, Result};

/// The run's token is sent to the metadata store as `authorization: Bearer <token>`.
pub const RUN_TOKEN_VARIABLE: &str = "MINIAUTOML_RUN_TOKEN";

/// The PEM CA of an `https://` metadata store.
pub const CA_VARIABLE: &str = "METADATA_STORE_CA";

/// Everything a job reads from its environment.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    /// `JOB_ID`: the run id every metadata call names.
    pub job_id: String,
    /// `ALGORITHM_NAME` (default `intent-classification`).
    pub algorithm: String,
    /// `METADATA_STORE_SERVER`: `host:port` (or a URL) of `metadata_store.MetadataStoreService`.
    pub metadata_store: String,
    /// `METADATA_STORE_CA`: the PEM CA an `https://` metadata store's certificate is checked
    /// against (required for one).
    pub metadata_store_ca: Option<String>,
    /// `TRAINING_DATASET_ID` (optional, recorded).
    pub dataset_id: String,
    /// `TRAINING_DATASET_VERSION_HASH` (optional, recorded).
    pub version_hash: String,
    /// `TRAINING_DATA_BUCKET`.
    pub data_bucket: String,
    /// `TRAINING_DATA_PATH`: the snapshot folder holding `examples.csv` and `labels.csv`.
    pub data_path: String,
    /// `MODEL_BUCKET`: used when `LogRunStart` names no bucket.
    pub model_bucket: Option<String>,
    /// `MODEL_NAME` (default `intent`): the artifact's name.
    pub model_name: String,
    /// `MINIO_SERVER` or `AWS_ENDPOINT_URL`, as a URL.
    pub s3_endpoint: String,
    /// `AWS_REGION` (default `us-east-1`).
    pub s3_region: String,
    /// `MINIO_SERVER_ACCESS_KEY` or `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `MINIO_SERVER_SECRET_KEY` or `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
    /// `AWS_SESSION_TOKEN`: a temporary (STS) key's.
    pub session_token: Option<String>,
    /// `RANK` (default 0).
    pub rank: usize,
    /// `WORLD_SIZE` (default 1).
    pub world_size: usize,
    /// [`RUN_TOKEN_VARIABLE`], when the operator issued one.
    pub run_token: Option<String>,
    /// The hyperparameters.
    pub hyperparameters: Hyperparameters,
}

impl JobConfig {
    /// Reads the contract through `get` (`std::env::var` in the binary).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<JobConfig> {
        let optional = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let required = |name: &str| {
            optional(name).ok_or_else(|| Error::Contract(format!("{name} is required but not set")))
        };
        let either = |name: &str, alias: &str| {
            optional(name)
                .or_else(|| optional(alias))
                .ok_or_else(|| Error::Contract(format!("{name} (or {alias}) is required but not set")))
        };
        let whole = |name: &str, default: usize, min: usize| -> Result<usize> {
            optional(name).map_or(Ok(default), |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| Error::Contract(format!("{name}={v:?}: expected a whole number ≥ {min}")))
            })
        };
        let metadata_store = required("METADATA_STORE_SERVER")?;
        let metadata_store_url = endpoint_url(&metadata_store)
            .map_err(|why| Error::Contract(format!("METADATA_STORE_SERVER={metadata_store:?}: {why}")))?;
        let metadata_store_ca = optional(CA_VARIABLE);
        if metadata_store_url.starts_with("https://") && metadata_store_ca.is_none() {
            return Err(Error::Contract(format!(
                "METADATA_STORE_SERVER={metadata_store:?} is served over TLS: {CA_VARIABLE} must hold \
                 the PEM certificate of the CA that signed it"
            )));
        }
        // The operator gives both: the URL (which says http or https) wins over the original's
        // `host:port` (plain HTTP).
        let (variable, server) = match optional("AWS_ENDPOINT_URL") {
            Some(url) => ("AWS_ENDPOINT_URL", url),
            None => ("MINIO_SERVER", either("MINIO_SERVER", "AWS_ENDPOINT_URL")?),
        };
        let s3_endpoint =
            endpoint_url(&server).map_err(|why| Error::Contract(format!("{variable}={server:?}: {why}")))?;
        let data_path = required("TRAINING_DATA_PATH")?.trim_matches('/').to_string();
        let world_size = whole("WORLD_SIZE", 1, 1)?;
        if world_size > 1 {
            // N ranks would each train the whole model on all the data: N times the cost for
            // the same model. The operator refuses such runs (its --algorithm-max-workers); an
            // image run by hand is told here.
            return Err(Error::Contract(format!(
                "WORLD_SIZE={world_size}: this algorithm trains on one worker (it has no data-parallel \
                 training); run it with workers: 1"
            )));
        }
        let rank = whole("RANK", 0, 0)?;
        if rank >= world_size {
            return Err(Error::Contract(format!(
                "RANK={rank}: must be below WORLD_SIZE={world_size}"
            )));
        }
        Ok(JobConfig {
            job_id: required("JOB_ID")?,
            algorithm: optional("ALGORITHM_NAME").unwrap_or_else(|| "intent-classification".into()),
            metadata_store,
            metadata_store_ca,
            dataset_id: optional("TRAINING_DATASET_ID").unwrap_or_default(),
            version_hash: optional("TRAINING_DATASET_VERSION_HASH").unwrap_or_default(),
            data_bucket: required("TRAINING_DATA_BUCKET")?,
            data_path,
            model_bucket: optional("MODEL_BUCKET"),
            model_name: optional("MODEL_NAME").unwrap_or_else(|| "intent".into()),
            s3_endpoint,
            s3_region: optional("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            access_key: either("MINIO_SERVER_ACCESS_KEY", "AWS_ACCESS_KEY_ID")?,
            secret_key: either("MINIO_SERVER_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")?,
            session_token: optional("AWS_SESSION_TOKEN"),
            rank,
            world_size,
            run_token: optional(RUN_TOKEN_VARIABLE),
            hyperparameters: Hyperparameters::from_lookup(|name| get(name))?,
        })
    }
}

/// `host:port` (the original's form, plain HTTP) or an `http(s)://` URL, as a URL.
pub fn endpoint_url(value: &str) -> Result<String, String> {
    let url = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected host:port or an http(s):// URL")?;
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() || host_port.contains(char::is_whitespace) {
        return Err("expected host:port or an http(s):// URL".into());
    }
    if let Some((_, port)) = host_port.rsplit_once(':')
        && !host_port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("port {port:?} is not a number"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn complete() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("JOB_ID", "7"),
            ("METADATA_STORE_SERVER", "127.0.0.1:5002"),
            ("TRAINING_DATA_BUCKET", "miniautoml"),
            ("TRAINING_DATA_PATH", "/datasets/ns/intent/snapshots/hashAg==/"),
            ("MINIO_SERVER", "127.0.0.1:9000"),
            ("MINIO_SERVER_ACCESS_KEY", "key"),
            ("MINIO_SERVER_SECRET_KEY", "secret"),
        ])
    }

    fn parse(env: &HashMap<&str, &str>) -> Result<JobConfig> {
        JobConfig::from_lookup(|name| env.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn the_original_environment_is_enough() {
        let config = parse(&complete()).unwrap();
        assert_eq!(config.job_id, "7");
        assert_eq!(config.s3_endpoint, "http://127.0.0.1:9000");
        assert_eq!(config.data_path, "datasets/ns/intent/snapshots/hashAg==");
        assert_eq!((config.rank, config.world_size), (0, 1));
        assert_eq!(config.model_name, "intent");
        assert_eq!(config.algorithm, "intent-classification");
    }

    #[test]
    fn an_https_metadata_store_needs_its_ca() {
        let mut env = complete();
        env.insert("METADATA_STORE_SERVER", "https://operator.miniautoml.svc:51001");
        let error = parse(&env).unwrap_err().to_string();
        assert!(error.contains("METADATA_STORE_CA must hold"), "{error}");
        env.insert("METADATA_STORE_CA", "-----BEGIN CERTIFICATE-----");
        let config = parse(&env).unwrap();
        assert_eq!(
            config.metadata_store_ca.as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(parse(&complete()).unwrap().metadata_store_ca, None);
    }

    #[test]
    fn aws_variables_stand_in_for_the_minio_ones() {
        let mut env = complete();
        for name in [
            "MINIO_SERVER",
            "MINIO_SERVER_ACCESS_KEY",
            "MINIO_SERVER_SECRET_KEY",
        ] {
            env.remove(name);
        }
        env.insert("AWS_ENDPOINT_URL", "https://s3.example.com");
        env.insert("AWS_ACCESS_KEY_ID", "aws-key");
        env.insert("AWS_SECRET_ACCESS_KEY", "aws-secret");
        let config = parse(&env).unwrap();
        assert_eq!(
            (config.s3_endpoint.as_str(), config.access_key.as_str()),
            ("https://s3.example.com", "aws-key")
        );
    }

    #[test]
    fn each_missing_variable_is_named() {
        for name in [
            "JOB_ID",
            "METADATA_STORE_SERVER",
            "TRAINING_DATA_BUCKET",
            "TRAINING_DATA_PATH",
            "MINIO_SERVER",
            "MINIO_SERVER_ACCESS_KEY",
            "MINIO_SERVER_SECRET_KEY",
        ] {
            let mut env = complete();
            env.remove(name);
            let error = parse(&env).unwrap_err().to_string();
            assert!(
                error.starts_with(name) && error.contains("required"),
                "{name}: {error}"
            );
            env.insert(name, "  ");
            let error = parse(&env).unwrap_err().to_string();
            assert!(error.starts_with(name), "{name} blank: {error}");
        }
    }

    #[test]
    fn the_endpoint_url_wins_over_the_originals_host_and_port() {
        let mut env = complete();
        assert_eq!(parse(&env).unwrap().s3_endpoint, "http://127.0.0.1:9000");
        env.insert("AWS_ENDPOINT_URL", "https://s3.example.com");
        assert_eq!(parse(&env).unwrap().s3_endpoint, "https://s3.example.com");
        env.insert("AWS_ENDPOINT_URL", "ftp://s3.example.com");
        let error = parse(&env).unwrap_err().to_string();
        assert!(error.starts_with("AWS_ENDPOINT_URL="), "{error}");
    }

    #[test]
    fn more_than_one_worker_is_refused_with_the_reason() {
        let mut env = complete();
        env.insert("WORLD_SIZE", "2");
        env.insert("RANK", "1");
        let error = parse(&env).unwrap_err().to_string();
        assert!(error.contains("trains on one worker"), "{error}");
        assert!(error.contains("workers: 1"), "{error}");
    }

    #[test]
    fn each_malformed_variable_is_named() {
        for (name, value) in [
            ("METADATA_STORE_SERVER", "host:port"),
            ("MINIO_SERVER", "ftp://minio:9000"),
            ("RANK", "first"),
            ("RANK", "2"),
            ("WORLD_SIZE", "0"),
            ("WORLD_SIZE", "3"),
            ("EPOCHS", "many"),
            ("LR", "0"),
            ("BATCH_SIZE", "-1"),
            ("FC_SIZE", "1.5"),
        ] {
            let mut env = complete();
            env.insert(name, value);
            let error = parse(&env).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{name}=")), "{name}={value}: {error}");
        }
    }
}
