//! The operator's own queue of runs (`--max-concurrent-runs`), read from the TrainingJob watch
//! cache instead of a LIST of every TrainingJob on each waiting run's reconcile: the order is
//! computed at most every [`FRESH`] from the cache and each run's place is then a hash lookup,
//! so a reconcile's cost does not grow with the number of runs.
//!
//! Runs hold a slot from their Job's creation to their end; the queue is first created, first
//! served; runs that Kueue admits (`queueName`), ended, deleted or refused (`Accepted=False`)
//! are not in it.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, core::DeserializeGuard, runtime::reflector::Store};
use miniautoml_api::TrainingJob;

use crate::conditions::{self, ACCEPTED};

/// How old the computed order may be when a run asks for its place.
pub const FRESH: Duration = Duration::from_millis(250);

/// A run's place: `ahead` runs wait before it, `active` hold a slot, `waiting` wait in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Waiting runs created before it.
    pub ahead: usize,
    /// Runs holding a slot.
    pub active: usize,
    /// Waiting runs, itself included.
    pub waiting: usize,
}

/// The queue's order at one moment: each waiting run's uid and how many wait before it.
#[derive(Debug, Default)]
pub struct Order {
    active: usize,
    ahead: HashMap<String, usize>,
}

impl Order {
    /// The order of `all` (pure).
    pub fn of<'a>(all: impl IntoIterator<Item = &'a TrainingJob>) -> Order {
        let mut active = 0;
        let mut waiting: Vec<(Option<Timestamp>, String, String, String)> = Vec::new();
        for job in all {
            if job.has_ended() || job.metadata.deletion_timestamp.is_some() || job.spec.queue_name.is_some() {
                continue;
            }
            let status = job.status.as_ref();
            if status.and_then(|s| s.job_name.as_ref()).is_some() {
                active += 1;
            } else if !status.is_some_and(|s| {
                conditions::find(&s.conditions, ACCEPTED).is_some_and(|c| c.status == "False")
            }) {
                waiting.push((
                    job.creation_timestamp().map(|t| t.0),
                    job.namespace().unwrap_or_default(),
                    job.name_any(),
                    job.uid().unwrap_or_default(),
                ));
            }
        }
        waiting.sort_unstable();
        let ahead = waiting
            .into_iter()
            .enumerate()
            .map(|(index, (.., uid))| (uid, index))
            .collect();
        Order { active, ahead }
    }

    /// `job`'s place; a run this order does not know (created since) is behind every run it
    /// knows.
    pub fn place(&self, job: &TrainingJob) -> Place {
        let waiting = self.ahead.len();
        match self.ahead.get(job.uid().as_deref().unwrap_or_default()) {
            Some(&ahead) => Place {
                ahead,
                active: self.active,
                waiting,
            },
            None => Place {
                ahead: waiting,
                active: self.active,
                waiting: waiting + 1,
            },
        }
    }
}

/// The queue over the TrainingJob cache.
pub struct RunQueue {
    cache: Store<DeserializeGuard<TrainingJob>>,
    order: Mutex<Option<(Instant, Order)>>,
}

impl RunQueue {
    /// A queue over `cache` (the controller's own).
    pub fn new(cache: Store<DeserializeGuard<TrainingJob>>) -> RunQueue {
        RunQueue {
            cache,
            order: Mutex::new(None),
        }
    }

    /// `job`'s place, from an order at most [`FRESH`] old.
    pub fn place(&self, job: &TrainingJob) -> Place {
        let mut order = self.order.lock().expect("run queue");
        if order.as_ref().is_none_or(|(at, _)| at.elapsed() > FRESH) {
            let all = self.cache.state();
            let fresh = Order::of(all.iter().filter_map(|guard| guard.0.as_ref().ok()));
            *order = Some((Instant::now(), fresh));
        }
        let (_, order) = order.as_ref().expect("computed above");
        order.place(job)
    }
}

/// The count of runs ahead a waiting run's status is to say, given what it says now
/// (`written`) and the true count: the true one near the front (fewer than [`EXACT`] ahead,
/// where it is about to launch), when nothing is written yet, or when it grew; further back the
/// written one until the true one has fallen to half of it, so that a queue of thousands costs
/// a few status writes per run, not one per launch ahead of it (pure).
pub fn shown_ahead(written: Option<u32>, ahead: usize) -> usize {
    match written.map(|w| w as usize) {
        Some(written) if ahead >= EXACT && ahead < written && ahead * 2 > written => written,
        _ => ahead,
    }
}

/// Up to this many waiting runs, each looks again every 2 s whatever its place.
pub const SMALL_QUEUE: usize = 100;

/// Below this many runs ahead, every change of place is written.
pub const EXACT: usize = 16;

/// Seconds until a waiting run looks again: every 2 s in a queue of at most [`SMALL_QUEUE`]
/// runs, or while it could get a slot within a generation of runs; later the further back it
/// is (it cannot launch before the runs ahead do), up to 30 s.
pub fn retry_seconds(place: &Place, max: usize) -> u64 {
    if place.waiting <= SMALL_QUEUE {
        return 2;
    }
    let max = max.max(1);
    // Runs that must end before this one launches.
    let behind = (place.active + place.ahead + 1).saturating_sub(max);
    (2 + 8 * behind / max).min(30) as u64
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use miniautoml_api::{TrainingJobStatus, training_job::TrainingPhase};

    use super::*;

    fn queued_job(
        name: &str,
        second: i64,
        job_name: Option<&str>,
        phase: Option<TrainingPhase>,
    ) -> TrainingJob {
        let mut job: TrainingJob =
            serde_yaml::from_str(include_str!("../../examples/trainingjob.yaml")).unwrap();
        job.metadata.name = Some(name.into());
        job.metadata.uid = Some(name.into());
        job.metadata.creation_timestamp = Some(Time(Timestamp::from_second(second).unwrap()));
        job.status = Some(TrainingJobStatus {
            job_name: job_name.map(String::from),
            phase,
            ..Default::default()
        });
        job
    }

    #[test]
    fn the_queue_is_first_created_first_served() {
        let all = vec![
            queued_job("running", 1, Some("running-train"), Some(TrainingPhase::Running)),
            queued_job("done", 0, Some("done-train"), Some(TrainingPhase::Succeeded)),
            queued_job("b", 3, None, Some(TrainingPhase::Queued)),
            queued_job("a", 2, None, Some(TrainingPhase::Queued)),
            queued_job("c", 4, None, None),
        ];
        let order = Order::of(&all);
        let place = |i: usize| order.place(&all[i]);
        assert_eq!((place(3).ahead, place(3).active, place(3).waiting), (0, 1, 3));
        assert_eq!(place(2).ahead, 1);
        assert_eq!(place(4).ahead, 2);
        // A run the order does not know yet is behind every run it knows.
        let newer = queued_job("d", 1, None, None);
        assert_eq!(
            order.place(&newer),
            Place {
                ahead: 3,
                active: 1,
                waiting: 4
            }
        );
        // A refused run, a Kueue run and a deleted one hold no place.
        let mut others = all.clone();
        others[3]
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(conditions::condition(
                ACCEPTED,
                false,
                "UnknownAlgorithm",
                "",
                None,
                Time(Timestamp::from_second(0).unwrap()),
            ));
        others[2].spec.queue_name = Some("gpus".into());
        let order = Order::of(&others);
        assert_eq!(
            order.place(&others[4]),
            Place {
                ahead: 0,
                active: 1,
                waiting: 1
            }
        );
    }

    #[test]
    fn a_deep_place_is_written_as_it_halves_and_the_front_exactly() {
        assert_eq!(shown_ahead(None, 5000), 5000);
        assert_eq!(shown_ahead(Some(5000), 5000), 5000);
        assert_eq!(shown_ahead(Some(5000), 2600), 5000);
        assert_eq!(shown_ahead(Some(5000), 2500), 2500);
        // Further back (runs created earlier arrived late): the true count at once.
        assert_eq!(shown_ahead(Some(10), 12), 12);
        assert_eq!(shown_ahead(Some(20), 15), 15);
        assert_eq!(shown_ahead(Some(3), 2), 2);
    }

    #[test]
    fn runs_further_back_look_again_later() {
        let place = |ahead, active| Place {
            ahead,
            active,
            waiting: 10_000,
        };
        // A free slot, or the next one: soon.
        assert_eq!(retry_seconds(&place(0, 3), 4), 2);
        assert_eq!(retry_seconds(&place(0, 4), 4), 4);
        assert_eq!(retry_seconds(&place(799, 1), 800), 2);
        assert_eq!(retry_seconds(&place(1600, 800), 800), 18);
        assert_eq!(retry_seconds(&place(9000, 800), 800), 30);
        assert_eq!(retry_seconds(&place(5, 0), 0), 30);
        // A small queue: every 2 s.
        let small = Place {
            ahead: 50,
            active: 1,
            waiting: 100,
        };
        assert_eq!(retry_seconds(&small, 1), 2);
    }
}
