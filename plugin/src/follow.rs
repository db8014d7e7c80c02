//! `run NAME… --follow`: a live progress bar per run (epoch n/N, phase, the latest metrics) from
//! a watch on the TrainingJobs, until every one has ended; exits non-zero when one failed.

use std::collections::BTreeMap;

use anyhow::bail;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use miniautoml_api::{TrainingJob, training_job::TrainingPhase};
use miniautoml_console::views;

use crate::cluster::Target;

/// The bar's message: phase, queue position and rank 0's latest metrics.
pub fn message(run: &TrainingJob) -> String {
    let status = run.status.clone().unwrap_or_default();
    let phase = views::phase(run);
    let mut parts = vec![phase];
    if let Some(position) = status.position_in_queue {
        parts.push(format!("#{position} in queue"));
    }
    let (points, _) = views::points(&status.epochs);
    if let Some(latest) = points.iter().rev().find(|p| p.rank == 0) {
        for (name, value) in &latest.metrics {
            parts.push(format!("{name} {value:.4}"));
        }
    }
    if run.has_ended()
        && let Some(message) = &status.message
    {
        parts.push(message.clone());
    }
    parts.join(" · ")
}

/// Follows `names` in the target's namespace until each has ended.
pub async fn follow(target: &Target, names: &[String]) -> anyhow::Result<()> {
    let namespace = target.namespace()?;
    let api: Api<TrainingJob> = Api::namespaced(target.client.clone(), &namespace);
    for name in names {
        target.run(name).await?;
    }
    let style = ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let bars = MultiProgress::new();
    let mut followed: BTreeMap<String, ProgressBar> = BTreeMap::new();
    for name in names {
        let bar = bars.add(ProgressBar::new(0));
        bar.set_style(style.clone());
        bar.set_prefix(name.clone());
        followed.insert(name.clone(), bar);
    }
    let mut failed = Vec::new();
    let mut stream = watcher(api, watcher::Config::default()).applied_objects().boxed();
    while let Some(event) = stream.next().await {
        let run = event?;
        let Some(bar) = followed.get(&run.name_any()) else {
            continue;
        };
        if let Some(total) = run.spec.epochs() {
            bar.set_length(total as u64);
        }
        bar.set_position(views::epochs_done(&run).unwrap_or(0));
        bar.set_message(message(&run));
        if run.has_ended() {
            bar.finish();
            // Also on stdout, for logs and scripts (a bar is drawn only on a terminal).
            println!(
                "{}: {}/{} · {}",
                run.name_any(),
                views::epochs_done(&run).unwrap_or(0),
                run.spec
                    .epochs()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                message(&run)
            );
            if matches!(
                run.status.as_ref().and_then(|s| s.phase),
                Some(TrainingPhase::Failed)
            ) {
                failed.push(run.name_any());
            }
            followed.remove(&run.name_any());
            if followed.is_empty() {
                break;
            }
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
