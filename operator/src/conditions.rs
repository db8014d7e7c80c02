//! Pure helpers for Kubernetes-style status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub use miniautoml_api::common::ACCEPTED;

/// A condition's status value.
pub fn status_str(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

/// Builds a condition observed at `now` for `generation`.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status_str(ok).to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// Puts `new` into `conditions`, replacing the condition of the same type. The previous
/// `lastTransitionTime` is kept while the status value stays the same. Returns whether anything
/// other than the time changed.
pub fn upsert(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// When conditions are observed: the object's generation and the time. The one helper every
/// status writer sets its conditions with.
#[derive(Clone, Copy, Debug)]
pub struct At<'a> {
    /// The object's `metadata.generation`.
    pub generation: Option<i64>,
    /// The time of the observation.
    pub now: &'a Time,
}

impl At<'_> {
    /// Sets the condition `type_` of `conditions` ([`upsert`]); true when anything but the time
    /// changed.
    pub fn set(
        self,
        conditions: &mut Vec<Condition>,
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> bool {
        upsert(
            conditions,
            condition(type_, ok, reason, message, self.generation, self.now.clone()),
        )
    }
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn new_condition_is_added() {
        let mut conditions = Vec::new();
        assert!(upsert(
            &mut conditions,
            condition(ACCEPTED, true, "Valid", "", Some(1), at(10))
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "True");
    }

    #[test]
    fn same_status_keeps_transition_time_and_reports_no_change() {
        let mut conditions = vec![condition(ACCEPTED, true, "Valid", "ok", Some(1), at(10))];
        let changed = upsert(
            &mut conditions,
            condition(ACCEPTED, true, "Valid", "ok", Some(1), at(99)),
        );
        assert!(!changed);
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn new_generation_or_message_is_a_change_without_a_transition() {
        let mut conditions = vec![condition(ACCEPTED, true, "Valid", "ok", Some(1), at(10))];
        assert!(upsert(
            &mut conditions,
            condition(ACCEPTED, true, "Valid", "ok", Some(2), at(20))
        ));
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn status_flip_moves_transition_time_and_leaves_other_types() {
        let mut conditions = vec![
            condition("Ready", false, "Waiting", "", Some(1), at(5)),
            condition(ACCEPTED, true, "Valid", "ok", Some(1), at(10)),
        ];
        assert!(upsert(
            &mut conditions,
            condition(ACCEPTED, false, "UnknownAlgorithm", "no", Some(2), at(20))
        ));
        assert_eq!(conditions.len(), 2);
        let accepted = find(&conditions, ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.last_transition_time.clone()),
            ("False", at(20))
        );
        assert_eq!(find(&conditions, "Ready").unwrap().last_transition_time, at(5));
    }
}
