//! Who may call the gRPC API: Kubernetes' own authentication and authorization.
//!
//! A caller presents a bearer token issued for the operator's audience (`authorization: Bearer
//! $(kubectl create token NAME --audience miniautoml)`). The operator asks the API server who it
//! is (a TokenReview for that audience only: a token made for the API server, which could act on
//! the cluster, is refused rather than handed around) and whether that user may do what the
//! method does (a SubjectAccessReview of a verb on a `miniautoml.io` resource in the gRPC
//! namespace, [`access`]). No token, or one the API server does not accept: UNAUTHENTICATED; a
//! user without the permission: PERMISSION_DENIED, naming it. Answers are kept for
//! [`REMEMBER`], so a loop of calls costs the API server two requests every few seconds; reviews
//! the caches cannot answer are bounded per caller and in all ([`in_flight`]).
//!
//! Health and reflection are open (they show no data). The trainers' writes to the metadata
//! store carry their run's token instead, which the metadata store checks itself. Methods that
//! name a run (which may live in another namespace than the gRPC namespace) check the
//! permission again in the run's namespace, through the [`Caller`] this layer leaves on the
//! request.

use std::{
    convert::Infallible,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, api::PostParams};
use lru::LruCache;
use sha2::{Digest, Sha256};
use tonic::{Status, body::Body, codegen::http};
use tower::{Layer, Service};

use super::in_flight::{self, InFlight};

/// How long a token's review and a permission's decision are kept.
pub const REMEMBER: Duration = Duration::from_secs(10);

/// Most tokens and decisions kept (least recently used go first).
const CAPACITY: usize = 4096;

pub use super::methods::{Access, GROUP, Permission, access};

/// The bearer token of `headers`, when there is one (`authorization: Bearer TOKEN`).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A token's review or a decision, as kept.
type Kept<T> = (Instant, Result<T, String>);

/// What a decision is about: the token (its SHA-256), the permission and the namespace.
type Decision = ([u8; 32], Permission, String);

/// Answers kept for [`REMEMBER`], by key.
type Answers<K, T> = Arc<Mutex<LruCache<K, Kept<T>>>>;

/// Asks the API server about tokens and permissions, keeping its answers for [`REMEMBER`].
#[derive(Clone)]
pub struct Reviewer {
    client: kube::Client,
    namespace: String,
    audience: String,
    users: Answers<[u8; 32], UserInfo>,
    decisions: Answers<Decision, ()>,
    in_flight: InFlight,
}

impl Reviewer {
    /// Reviews with `client` (which may create TokenReviews and SubjectAccessReviews), for the
    /// gRPC API serving `namespace`, accepting tokens issued for `audience`.
    pub fn new(client: kube::Client, namespace: String, audience: String) -> Reviewer {
        let capacity = NonZeroUsize::new(CAPACITY).expect("a positive capacity");
        Reviewer {
            client,
            namespace,
            audience,
            users: Arc::new(Mutex::new(LruCache::new(capacity))),
            decisions: Arc::new(Mutex::new(LruCache::new(capacity))),
            in_flight: InFlight::default(),
        }
    }

    /// The API server's answer to `review` (a TokenReview or a SubjectAccessReview): UNAVAILABLE
    /// naming the `question` when it cannot be asked.
    async fn ask<K>(&self, review: &K, question: &str) -> Result<K, Status>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        Api::<K>::all(self.client.clone())
            .create(&PostParams::default(), review)
            .await
            .map_err(|error| {
                Status::unavailable(format!(
                    "cannot ask the Kubernetes API server {question}: {error}; retry"
                ))
            })
    }

    /// Who `token` (sent from `peer`) belongs to: UNAUTHENTICATED when the API server does not
    /// accept it, UNAVAILABLE when it cannot be asked, RESOURCE_EXHAUSTED when `peer` has too
    /// many reviews in flight.
    async fn authenticate(&self, key: [u8; 32], token: &str, peer: &str) -> Result<UserInfo, Status> {
        if let Some(kept) = fresh(&self.users, &key) {
            return kept.map_err(Status::unauthenticated);
        }
        let _slot = self.in_flight.enter(peer, "who the token belongs to")?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = self.ask(&review, "who the token belongs to").await?;
        let status = reviewed.status.unwrap_or_default();
        let for_us = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience));
        let outcome = match (status.authenticated, status.user) {
            (Some(true), Some(user)) if for_us => Ok(user),
            _ => Err(format!(
                "the Kubernetes API server does not accept the bearer token for audience {}{}: present a \
                 current token made for it (kubectl create token NAME -n NAMESPACE --audience {})",
                self.audience,
                status
                    .error
                    .map(|error| format!(" ({error})"))
                    .unwrap_or_default(),
                self.audience
            )),
        };
        keep(&self.users, key, outcome.clone());
        outcome.map_err(Status::unauthenticated)
    }

    /// Whether `user` may do `permission` in `namespace`: PERMISSION_DENIED naming it when not.
    async fn authorize(
        &self,
        key: [u8; 32],
        user: &UserInfo,
        permission: Permission,
        namespace: &str,
        method: &str,
    ) -> Result<(), Status> {
        let decision = (key, permission, namespace.to_string());
        if let Some(kept) = fresh(&self.decisions, &decision) {
            return kept.map_err(|missing| denied(&missing, method));
        }
        let caller = user.username.as_deref().unwrap_or("the caller");
        let _slot = self
            .in_flight
            .enter(caller, &format!("whether it may {permission}"))?;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some(permission.verb.to_string()),
                    group: Some(permission.group.to_string()),
                    resource: Some(permission.resource.to_string()),
                    subresource: permission.subresource.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviewed = self
            .ask(&review, &format!("whether the caller may {permission}"))
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let outcome = if status.allowed {
            Ok(())
        } else {
            let reason = status
                .reason
                .filter(|reason| !reason.is_empty())
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default();
            Err(format!(
                "{} may not {permission} in namespace {namespace:?}{reason}",
                user.username.as_deref().unwrap_or("the caller"),
            ))
        };
        keep(&self.decisions, decision, outcome.clone());
        outcome.map_err(|missing| denied(&missing, method))
    }
}

impl Reviewer {
    /// The audience tokens must be made for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The caller presenting `token` from `peer`, for `what` (named in refusals, e.g. `the
    /// console`): UNAUTHENTICATED, UNAVAILABLE or RESOURCE_EXHAUSTED as for a gRPC call.
    pub async fn caller(&self, token: &str, peer: &str, what: &str) -> Result<Caller, Status> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let user = self.authenticate(key, token, peer).await?;
        Ok(Caller {
            key,
            user,
            method: what.to_string(),
            reviewer: self.clone(),
        })
    }
}

fn denied(missing: &str, method: &str) -> Status {
    Status::permission_denied(format!(
        "{missing}, which {method} needs: bind a Role granting it (the chart ships the ClusterRoles \
         data-engineer, data-scientist and app-developer)"
    ))
}

fn fresh<K: std::hash::Hash + Eq, T: Clone>(
    cache: &Mutex<LruCache<K, Kept<T>>>,
    key: &K,
) -> Option<Result<T, String>> {
    let mut cache = cache.lock().expect("review cache lock");
    match cache.get(key) {
        Some((at, kept)) if at.elapsed() < REMEMBER => Some(kept.clone()),
        Some(_) => {
            cache.pop(key);
            None
        }
        None => None,
    }
}

fn keep<K: std::hash::Hash + Eq, T>(cache: &Mutex<LruCache<K, Kept<T>>>, key: K, outcome: Result<T, String>) {
    cache
        .lock()
        .expect("review cache lock")
        .put(key, (Instant::now(), outcome));
}

/// The authenticated caller of a method, left on the request (its extensions) for the methods
/// that check a permission again where the run they name lives.
#[derive(Clone)]
pub struct Caller {
    key: [u8; 32],
    user: UserInfo,
    method: String,
    reviewer: Reviewer,
}

impl Caller {
    /// The caller's user name, as the API server knows it.
    pub fn name(&self) -> &str {
        self.user.username.as_deref().unwrap_or_default()
    }

    /// Whether the caller may do `permission` in `namespace`.
    pub async fn may(&self, permission: Permission, namespace: &str) -> Result<(), Status> {
        self.reviewer
            .authorize(self.key, &self.user, permission, namespace, &self.method)
            .await
    }
}

/// Checks `permission` in `namespace` for the caller the layer left in `extensions`; with
/// authentication off (no caller there) everything is allowed, as in the original system.
pub async fn require(
    extensions: &http::Extensions,
    permission: Permission,
    namespace: &str,
) -> Result<(), Status> {
    match extensions.get::<Caller>() {
        Some(caller) => caller.may(permission, namespace).await,
        None => Ok(()),
    }
}

/// Puts every gRPC call through [`access`] and the reviews (the chart's default). Without a
/// reviewer (`--grpc-auth=none`) calls pass as they are.
#[derive(Clone)]
pub struct AuthLayer {
    reviewer: Option<Reviewer>,
}

impl AuthLayer {
    /// Checks callers with `reviewer`, or nobody when none.
    pub fn new(reviewer: Option<Reviewer>) -> Self {
        AuthLayer { reviewer }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            reviewer: self.reviewer.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    reviewer: Option<Reviewer>,
}

impl<S> Service<http::Request<Body>> for Authenticate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(reviewer) = self.reviewer.clone() else {
            return Box::pin(self.inner.call(request));
        };
        let path = request.uri().path().to_string();
        let permission = match access(&path) {
            Access::Open | Access::RunToken | Access::Unknown => return Box::pin(self.inner.call(request)),
            Access::Needs(permission) => permission,
        };
        // The service that was made ready takes the call; a clone stands in for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let method = path.trim_start_matches('/').to_string();
            let Some(token) = bearer_token(request.headers()).map(str::to_string) else {
                return Ok(Status::unauthenticated(format!(
                    "{method} needs a Kubernetes bearer token for audience {}: \
                     -H \"authorization: Bearer $(kubectl create token NAME -n NAMESPACE --audience {})\"",
                    reviewer.audience, reviewer.audience
                ))
                .into_http());
            };
            let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let peer = in_flight::peer(request.extensions());
            let user = match reviewer.authenticate(key, &token, &peer).await {
                Ok(user) => user,
                Err(status) => return Ok(status.into_http()),
            };
            let namespace = reviewer.namespace.clone();
            let caller = Caller {
                key,
                user,
                method,
                reviewer,
            };
            if let Err(status) = caller.may(permission, &namespace).await {
                tracing::info!(
                    user = caller.name(),
                    method = caller.method,
                    "gRPC call refused: {}",
                    status.message()
                );
                return Ok(status.into_http());
            }
            request.extensions_mut().insert(caller);
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_counts() {
        let headers = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(bearer_token(&headers("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
        assert_eq!(bearer_token(&http::HeaderMap::new()), None);
    }
}
