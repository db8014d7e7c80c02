//! Types and schema helpers shared by the three resources.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Condition of every resource: whether the operator accepted the current spec.
pub const ACCEPTED: &str = "Accepted";

/// The most conditions a status carries; one per condition type.
pub const MAX_CONDITIONS: u64 = 16;

/// Schema of a `conditions` list: Kubernetes `Condition`s merged by `type`, so server-side apply
/// from different field managers updates one condition without clobbering the others.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "items": item,
        "maxItems": MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// Schema of a tag map: at most 32 entries, keys of 1 to 63 characters, values of at most 256.
pub fn tags_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": { "type": "string", "maxLength": 256 },
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) >= 1 && size(k) <= 63)",
            "message": "tag keys must be 1 to 63 characters long",
        }],
    })
}

/// Where a piece of data lives: an object or prefix in an S3 bucket, or an HTTP(S) URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.url) ? !has(self.bucket) && !has(self.key) && !has(self.prefix) : has(self.bucket) && has(self.key) != has(self.prefix)"
).message("set either url, or bucket with exactly one of key and prefix"))]
pub struct ObjectSource {
    /// S3 bucket holding the data. The operator's configured credentials must be able to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63))]
    pub bucket: Option<String>,
    /// Key of a single object in `bucket` (for example `raw/tweet_emotion_part1.csv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub key: Option<String>,
    /// Key prefix in `bucket`: every object under it is part of the commit (Generic datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub prefix: Option<String>,
    /// HTTP or HTTPS URL of a single file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must start with http:// or https://"))]
    pub url: Option<String>,
}

/// Whether objects in storage outlive their resource: `Delete` removes them with the resource,
/// `Retain` keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RetainPolicy {
    // Delete the objects with the resource.
    #[default]
    Delete,
    // Keep the objects after the resource is deleted.
    Retain,
}

/// Tags as written in specs and statuses: an ordered string map.
pub type Tags = BTreeMap<String, String>;
