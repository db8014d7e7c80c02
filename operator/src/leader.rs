//! Leader election on a `coordination.k8s.io` Lease, for running several replicas.
//!
//! Every replica watches, caches and serves gRPC reads; only the leader reconciles and writes.
//! The Lease names its holder as `<pod>_<ip>:<port>` (its gRPC address), so a follower can
//! forward the write methods of the gRPC API to the leader (`grpc::forward`) without asking the
//! API server for the leader's pod.
//!
//! kube-lease-manager takes and renews the Lease. This module adds the two rules that keep a
//! single writer: a leader that loses the Lease, or cannot confirm it before another replica
//! could take it, exits at once (as controller-runtime's managers do), and a leader shutting
//! down releases the Lease only after its controllers have stopped, so a rolling update hands
//! over without a moment of two writers and without waiting for the Lease to expire.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long a follower trusts what it last read of the Lease before reading it again.
const LEASE_READ_TTL: Duration = Duration::from_secs(1);

/// Where the election runs and how long a Lease lasts.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease: String,
    /// This replica's name (its pod's).
    pub name: String,
    /// `ip:port` at which the other replicas reach this replica's gRPC server.
    pub grpc_address: String,
    /// How long a Lease holds without renewal: the longest a crashed leader's writes pause.
    pub lease_duration: Duration,
    /// How long before expiry the leader renews; also the clock skew tolerated between nodes.
    pub renew_before: Duration,
}

impl ElectionSettings {
    /// The identity this replica holds the Lease under.
    pub fn identity(&self) -> String {
        format!("{}_{}", self.name, self.grpc_address)
    }
}

/// The replica holding the Lease, as a follower sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// Its name (pod name).
    pub name: String,
    /// Its gRPC address, `ip:port`.
    pub grpc_address: String,
}

impl Leader {
    /// Parses a Lease's `holderIdentity` written by [`ElectionSettings::identity`].
    pub fn from_identity(identity: &str) -> Option<Leader> {
        let (name, address) = identity.rsplit_once('_')?;
        (!name.is_empty() && !address.is_empty()).then(|| Leader {
            name: name.to_string(),
            grpc_address: address.to_string(),
        })
    }
}

/// The holder of `lease` at `now`, or `None` when nobody holds it or the holder let it expire.
pub fn holder(lease: &Lease, now: k8s_openapi::jiff::Timestamp) -> Option<Leader> {
    let spec = lease.spec.as_ref()?;
    let identity = spec.holder_identity.as_deref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds?);
    let expires = renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
        .ok()?;
    (expires > now).then(|| Leader::from_identity(identity)).flatten()
}

/// Whether this replica may write, and who may when it may not. Cloning shares the state.
/// The default is [`Leadership::single`].
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

struct Inner {
    leading: AtomicBool,
    /// `Some` when elections run; `None`: a single replica, always the leader.
    election: Option<Election>,
    gained: watch::Sender<u64>,
}

struct Election {
    settings: ElectionSettings,
    client: Client,
    leases: Api<Lease>,
    /// Replaced by a fresh one when a follower sees the Lease freed (see `campaign`).
    manager: Mutex<Arc<LeaseManager>>,
    /// Stops the renewal loop (after the controllers have stopped).
    stop: CancellationToken,
    /// The last Lease read by a follower, and when.
    seen: Mutex<Option<(Instant, Option<Leader>)>>,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::single()
    }
}

impl Leadership {
    /// A single replica without elections: always the leader.
    pub fn single() -> Self {
        let (gained, _) = watch::channel(1);
        Leadership {
            inner: Arc::new(Inner {
                leading: AtomicBool::new(true),
                election: None,
                gained,
            }),
        }
    }

    /// Joins the election for `settings.lease` (created when missing) and runs it in the
    /// background until [`Leadership::step_down`]. Starts as a follower.
    pub async fn elect(
        client: Client,
        settings: ElectionSettings,
    ) -> Result<Self, kube_lease_manager::LeaseManagerError> {
        let manager = lease_manager(&client, &settings).await?;
        let (gained, _) = watch::channel(0);
        let leadership = Leadership {
            inner: Arc::new(Inner {
                leading: AtomicBool::new(false),
                election: Some(Election {
                    leases: Api::namespaced(client.clone(), &settings.namespace),
                    client,
                    settings,
                    manager: Mutex::new(Arc::new(manager)),
                    stop: CancellationToken::new(),
                    seen: Mutex::new(None),
                }),
                gained,
            }),
        };
        tokio::spawn(leadership.clone().campaign());
        Ok(leadership)
    }

    /// Whether this replica may reconcile and write now.
    pub fn is_leading(&self) -> bool {
        self.inner.leading.load(Ordering::Acquire)
    }

    /// This replica's name in the election, when elections run.
    pub fn name(&self) -> Option<&str> {
        self.inner.election.as_ref().map(|e| e.settings.name.as_str())
    }

    /// Fires each time this replica becomes the leader (a single replica: at once).
    pub fn gained(&self) -> watch::Receiver<u64> {
        self.inner.gained.subscribe()
    }

    /// The current leader as the Lease names it (read at most once a second), `None` when the
    /// Lease is free or expired. A single replica names nobody: it is the leader.
    pub async fn leader(&self) -> Result<Option<Leader>, kube::Error> {
        let Some(election) = &self.inner.election else {
            return Ok(None);
        };
        if let Some((read, leader)) = election.seen.lock().expect("lease cache lock").as_ref()
            && read.elapsed() < LEASE_READ_TTL
        {
            return Ok(leader.clone());
        }
        let lease = election.leases.get_opt(&election.settings.lease).await?;
        let leader = lease.and_then(|lease| holder(&lease, k8s_openapi::jiff::Timestamp::now()));
        *election.seen.lock().expect("lease cache lock") = Some((Instant::now(), leader.clone()));
        Ok(leader)
    }

    /// Stops campaigning and, when leading, releases the Lease so another replica takes over at
    /// once. Call after the controllers have stopped.
    pub async fn step_down(&self) {
        let Some(election) = &self.inner.election else {
            return;
        };
        election.stop.cancel();
        let was_leading = self.inner.leading.swap(false, Ordering::AcqRel);
        let manager = election.manager.lock().expect("lease manager lock").clone();
        match manager.release().await {
            Ok(()) if was_leading => info!(lease = election.settings.lease, "released the leader lease"),
            Ok(()) => {}
            Err(error) => warn!(%error, "releasing the leader lease failed: it expires on its own"),
        }
    }

    /// Takes the Lease when free and keeps it renewed; see the module's rules.
    ///
    /// kube-lease-manager's follower sleeps until the Lease it last read expires, so it would
    /// notice a released Lease only a whole lease duration later. A follower here also reads
    /// the Lease every second and, once it is free, starts over with a fresh manager, which
    /// takes it at once: a rolling update hands over in about a second.
    async fn campaign(self) {
        let election = self
            .inner
            .election
            .as_ref()
            .expect("campaign runs only with an election");
        let settings = &election.settings;
        info!(
            lease = settings.lease,
            identity = settings.identity(),
            "joining the leader election"
        );
        // While leading, an error means the renewal may not have landed: the Lease could expire
        // `renew_before` after the renewal was due, so stop before then.
        let mut failing_since: Option<Instant> = None;
        loop {
            let manager = election.manager.lock().expect("lease manager lock").clone();
            let following = !self.is_leading();
            let result = tokio::select! {
                () = election.stop.cancelled() => return,
                result = manager.changed() => result,
                () = self.lease_freed(), if following => {
                    match lease_manager(&election.client, settings).await {
                        Ok(fresh) => *election.manager.lock().expect("lease manager lock") = Arc::new(fresh),
                        Err(error) => warn!(%error, "the leader lease is free but cannot be read again"),
                    }
                    continue;
                }
            };
            match result {
                Ok(true) => {
                    failing_since = None;
                    self.inner.leading.store(true, Ordering::Release);
                    self.inner.gained.send_modify(|count| *count += 1);
                    info!(lease = settings.lease, "became the leader");
                }
                Ok(false) => {
                    failing_since = None;
                    if self.is_leading() {
                        lost(&settings.lease, "another replica holds the lease");
                    }
                }
                Err(error) if self.is_leading() => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let deadline = settings.renew_before.saturating_sub(Duration::from_secs(1));
                    if since.elapsed() >= deadline {
                        lost(
                            &settings.lease,
                            &format!("the lease could not be renewed: {error}"),
                        );
                    }
                    warn!(%error, "renewing the leader lease failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    warn!(%error, "the leader election cannot read its lease; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// Resolves once the Lease, read every second (the first time after a second, so that a
    /// fresh manager has a moment to take it), names no live holder.
    async fn lease_freed(&self) {
        loop {
            tokio::time::sleep(LEASE_READ_TTL).await;
            if let Ok(None) = self.leader().await {
                return;
            }
        }
    }
}

/// A manager of `settings.lease` for this replica.
async fn lease_manager(
    client: &Client,
    settings: &ElectionSettings,
) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    let duration = settings.lease_duration.as_secs().max(2);
    LeaseManagerBuilder::new(client.clone(), &settings.lease)
        .with_namespace(&settings.namespace)
        .with_identity(settings.identity())
        .with_field_manager(format!("miniautoml-operator/{}", settings.name))
        .with_duration(duration)
        .with_grace(settings.renew_before.as_secs().clamp(1, duration - 1))
        .build()
        .await
}

/// A leader that is no longer sure to be one stops writing at once: the process exits (its
/// pod restarts it as a follower). Reconciles in flight must not finish their writes.
fn lost(lease: &str, why: &str) -> ! {
    error!(
        lease,
        "lost the leadership ({why}): exiting so that only the new leader writes"
    );
    eprintln!("miniautoml-operator: lost the leadership of lease {lease} ({why}); exiting");
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec,
        apimachinery::pkg::apis::meta::v1::MicroTime,
        jiff::{SignedDuration, Timestamp},
    };

    use super::*;

    fn lease(holder: Option<&str>, renewed: i64, duration: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_identity_names_the_replica_and_its_grpc_address() {
        let settings = ElectionSettings {
            namespace: "miniautoml".into(),
            lease: "miniautoml-operator".into(),
            name: "miniautoml-operator-6b9f-x2x7q".into(),
            grpc_address: "198.18.0.12:51001".into(),
            lease_duration: Duration::from_secs(15),
            renew_before: Duration::from_secs(5),
        };
        let identity = settings.identity();
        assert_eq!(identity, "miniautoml-operator-6b9f-x2x7q_198.18.0.12:51001");
        assert_eq!(
            Leader::from_identity(&identity),
            Some(Leader {
                name: "miniautoml-operator-6b9f-x2x7q".into(),
                grpc_address: "198.18.0.12:51001".into(),
            })
        );
        assert_eq!(Leader::from_identity("no-address"), None);
        assert_eq!(Leader::from_identity("_198.18.0.12:51001"), None);
    }

    #[test]
    fn a_lease_names_its_holder_until_it_expires() {
        let now = Timestamp::from_second(1_000).unwrap();
        let held = lease(Some("a_198.18.0.2:51001"), 990, 15);
        assert_eq!(holder(&held, now).map(|l| l.name), Some("a".into()));
        let expired = lease(Some("a_198.18.0.2:51001"), 980, 15);
        assert_eq!(holder(&expired, now), None);
        assert_eq!(holder(&held, now + SignedDuration::from_secs(5)), None);
        let released = lease(None, 990, 15);
        assert_eq!(holder(&released, now), None);
        assert_eq!(holder(&Lease::default(), now), None);
    }

    #[test]
    fn a_single_replica_always_leads() {
        let single = Leadership::single();
        assert!(single.is_leading());
        assert_eq!(single.name(), None);
        assert_eq!(*single.gained().borrow(), 1);
    }
}
