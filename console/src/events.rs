//! A run's live curves: server-sent events of its epochs as the trainer reports them.
//!
//! `GET /api/runs/{namespace}/{name}/events?after=N` sends every epoch numbered N or more (the
//! page holds the rest) and then, once a second, the epochs new in the run's status (`epoch`
//! events, each with its id `<rank>-<epoch>`), its phase and progress when they change
//! (`status`), and `end` when the run has ended. A reconnecting browser sends the last id it
//! got (`Last-Event-ID`): the stream resumes from that epoch, and the page drops what it holds
//! already. A stream lasts at most [`LIFETIME`] (the browser reconnects, and is authenticated
//! anew) and checks the viewer's permission every [`RECHECK`].

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::stream::{self, Stream};
use serde::Deserialize;

use crate::{
    backend::Action,
    routes::{App, Seen, check, history},
    views::{self, Point},
};

/// How often the stream looks at the run's status.
pub const TICK: Duration = Duration::from_secs(1);
/// How often the viewer's permission is checked again.
pub const RECHECK: Duration = Duration::from_secs(30);
/// How long one stream lasts.
pub const LIFETIME: Duration = Duration::from_secs(600);

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct After {
    after: Option<u64>,
}

/// The first epoch to send: the one of `Last-Event-ID` (a reconnect) or `?after=`.
pub fn resume_from(last_event_id: Option<&str>, after: Option<u64>) -> u64 {
    last_event_id
        .and_then(|id| id.split_once('-'))
        .and_then(|(_, epoch)| epoch.parse().ok())
        .or(after)
        .unwrap_or(0)
}

fn epoch_event(point: &Point) -> Event {
    Event::default()
        .event("epoch")
        .id(point.id.clone())
        .json_data(point)
        .unwrap_or_default()
}

fn status_event(kind: &str, phase: &str, progress: Option<&str>) -> Event {
    Event::default()
        .event(kind)
        .json_data(serde_json::json!({"phase": phase, "progress": progress}))
        .unwrap_or_default()
}

struct Watch {
    app: App,
    viewer: Seen,
    namespace: String,
    name: String,
    from: u64,
    sent: HashSet<String>,
    status: Option<(String, Option<String>)>,
    /// Phase, progress and latest epoch id when the history was last read.
    seen: Option<(String, Option<String>, Option<String>)>,
    started: Instant,
    checked: Instant,
    first: bool,
    done: bool,
}

impl Watch {
    /// The next events, after waiting a tick unless this is the first call.
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.done || self.started.elapsed() > LIFETIME {
            return None;
        }
        if !self.first {
            tokio::time::sleep(TICK).await;
        }
        if self.checked.elapsed() > RECHECK {
            self.checked = Instant::now();
            if !matches!(self.viewer.0.may(Action::GetRun, &self.namespace).await, Ok(true)) {
                return None;
            }
        }
        let Some(run) = self.app.backend.run(&self.namespace, &self.name) else {
            self.done = true;
            return Some(vec![status_event("end", "Deleted", None)]);
        };
        // The status keeps a few epochs of a long run: when it has changed, the new ones come
        // from the store (read incrementally by the backend).
        let phase = views::phase(&run);
        let progress = run.status.as_ref().and_then(|s| s.progress.clone());
        let latest = run
            .status
            .as_ref()
            .and_then(|s| s.epochs.last())
            .map(|e| e.id.clone());
        let seen = (phase.clone(), progress.clone(), latest);
        let mut events = Vec::new();
        if self.first || self.seen.as_ref() != Some(&seen) {
            self.first = false;
            let points = history(self.app.backend.as_ref(), &run).await.0;
            events.extend(
                points
                    .iter()
                    .filter(|p| p.epoch >= self.from && self.sent.insert(p.id.clone()))
                    .map(epoch_event),
            );
            self.seen = Some(seen);
        }
        if !views::is_live(&run) {
            self.done = true;
            events.push(status_event("end", &phase, progress.as_deref()));
        } else if self.status.as_ref() != Some(&(phase.clone(), progress.clone())) {
            events.push(status_event("status", &phase, progress.as_deref()));
            self.status = Some((phase, progress));
        }
        Some(events)
    }
}

fn events(watch: Watch) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    use futures::StreamExt;
    stream::unfold(watch, |mut watch| async move {
        let events = watch.next().await?;
        Some((stream::iter(events.into_iter().map(Ok)), watch))
    })
    .flatten()
}

/// `GET /api/runs/{namespace}/{name}/events`.
pub(crate) async fn stream(
    State(app): State<App>,
    viewer: Seen,
    Path((namespace, name)): Path<(String, String)>,
    Query(after): Query<After>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&viewer, Action::GetRun, &namespace, false).await {
        return response;
    }
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let watch = Watch {
        from: resume_from(last, after.after),
        app,
        viewer,
        namespace,
        name,
        sent: HashSet::new(),
        status: None,
        seen: None,
        started: Instant::now(),
        checked: Instant::now(),
        first: true,
        done: false,
    };
    Sse::new(events(watch))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_resumes_from_the_last_epoch_it_got() {
        assert_eq!(resume_from(Some("1-17"), Some(3)), 17);
        assert_eq!(resume_from(None, Some(3)), 3);
        assert_eq!(resume_from(Some("garbage"), Some(4)), 4);
        assert_eq!(resume_from(None, None), 0);
    }
}
