//! What the commands print, as text: `-o table` (aligned columns), `wide` (more of them),
//! `json` and `yaml` (the rows the console computes, for scripts). Pure functions.

use std::sync::Arc;

use miniautoml_api::TrainingJob;
use miniautoml_console::{
    Prediction,
    pages::duration,
    views::{self, RunQuery, RunRow},
};
use serde::Serialize;

use crate::flags::Format;

/// Columns padded to their widest cell, two spaces apart.
pub fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c < last {
                out.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    }
    out
}

fn structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        _ => serde_yaml::to_string(value)?,
    })
}

fn number(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into())
}

fn epoch(row: &RunRow) -> String {
    match (row.epoch, row.epochs) {
        (Some(done), Some(total)) => format!("{done}/{total}"),
        (Some(done), None) => done.to_string(),
        (None, Some(total)) => format!("0/{total}"),
        (None, None) => "-".into(),
    }
}

/// The runs table, newest first.
pub fn runs(runs: &[TrainingJob], format: Format) -> anyhow::Result<String> {
    let shared: Vec<Arc<TrainingJob>> = runs.iter().cloned().map(Arc::new).collect();
    let rows = views::run_rows(&shared, &RunQuery::default(), k8s_openapi::jiff::Timestamp::now());
    if matches!(format, Format::Json | Format::Yaml) {
        return structured(&rows, format);
    }
    let wide = format == Format::Wide;
    let mut table = vec![
        [
            "NAMESPACE",
            "NAME",
            "PHASE",
            "EPOCH",
            "QUEUE",
            "DATASET",
            "ACCURACY",
            "MACRO-F1",
            "DURATION",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    if wide {
        table[0].extend(["VERSION", "CODE", "PARAMETERS"].map(String::from));
    }
    for row in &rows {
        let mut cells = vec![
            row.namespace.clone(),
            row.name.clone(),
            row.phase.clone(),
            epoch(row),
            row.queue_position
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            row.dataset.clone(),
            number(row.accuracy),
            number(row.macro_f1),
            duration(row.duration),
        ];
        if wide {
            cells.push(row.version_hash.clone().unwrap_or_else(|| "-".into()));
            cells.push(row.code_version.clone().unwrap_or_else(|| "-".into()));
            cells.push(row.parameters.join(","));
        }
        table.push(cells);
    }
    if rows.is_empty() {
        return Ok("No runs found.\n".into());
    }
    Ok(align(&table))
}

/// One run: its row, then its latest epochs and message.
pub fn run(run: &TrainingJob, format: Format) -> anyhow::Result<String> {
    if matches!(format, Format::Json | Format::Yaml) {
        return structured(run, format);
    }
    let row = views::run_row(run, k8s_openapi::jiff::Timestamp::now());
    let status = run.status.clone().unwrap_or_default();
    let mut lines = vec![
        vec!["Run".into(), format!("{}/{}", row.namespace, row.name)],
        vec!["Phase".into(), row.phase.clone()],
        vec!["Epoch".into(), epoch(&row)],
        vec![
            "Dataset".into(),
            format!("{} {}", row.dataset, row.version_hash.clone().unwrap_or_default()),
        ],
        vec!["Parameters".into(), row.parameters.join(" ")],
        vec!["Accuracy".into(), number(row.accuracy)],
        vec!["Macro-F1".into(), number(row.macro_f1)],
        vec!["Duration".into(), duration(row.duration)],
    ];
    if let Some(position) = row.queue_position {
        lines.push(vec!["Queue position".into(), position.to_string()]);
    }
    if let Some(message) = &status.message {
        lines.push(vec!["Message".into(), message.clone()]);
    }
    if let Some(artifact) = &status.artifact {
        lines.push(vec!["Artifact".into(), artifact.uri.clone()]);
    }
    let mut out = align(&lines);
    let (points, names) = views::points(&status.epochs);
    if !points.is_empty() {
        let mut table = vec![
            std::iter::once("EPOCH".to_string())
                .chain(names.iter().map(|n| n.to_uppercase()))
                .collect::<Vec<_>>(),
        ];
        let recent: Vec<_> = points.iter().rev().take(5).rev().collect();
        for p in recent {
            table.push(
                std::iter::once(p.id.clone())
                    .chain(names.iter().map(|n| number(p.metrics.get(n).copied())))
                    .collect(),
            );
        }
        out.push('\n');
        out.push_str(&align(&table));
    }
    Ok(out)
}

/// Runs side by side; `*` marks what differs.
pub fn compare(runs: &[Arc<TrainingJob>], format: Format) -> anyhow::Result<String> {
    let lines = views::compare(runs);
    if matches!(format, Format::Json | Format::Yaml) {
        return structured(&lines, format);
    }
    let mut table = vec![
        std::iter::once(String::new())
            .chain(runs.iter().map(|r| views::key(r.as_ref())))
            .collect::<Vec<_>>(),
    ];
    for line in &lines {
        let mark = if line.differs { "* " } else { "  " };
        table.push(
            std::iter::once(format!("{mark}{}", line.name))
                .chain(
                    line.values
                        .iter()
                        .map(|v| v.clone().unwrap_or_else(|| "-".into())),
                )
                .collect(),
        );
    }
    Ok(align(&table))
}

/// A prediction: the label, then each label's score, highest first.
pub fn prediction(prediction: &Prediction, format: Format) -> anyhow::Result<String> {
    if matches!(format, Format::Json | Format::Yaml) {
        return structured(prediction, format);
    }
    let mut out = format!("{}\n", prediction.label);
    let mut scores: Vec<(&String, &f64)> = prediction.scores.iter().collect();
    scores.sort_by(|a, b| b.1.total_cmp(a.1));
    let rows: Vec<Vec<String>> = scores
        .into_iter()
        .map(|(label, score)| vec![format!("  {label}"), format!("{score:.3}")])
        .collect();
    out.push_str(&align(&rows));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_their_widest_cell() {
        let rows = vec![
            vec!["NAME".to_string(), "PHASE".to_string()],
            vec!["a-long-name".to_string(), "Running".to_string()],
        ];
        assert_eq!(align(&rows), "NAME         PHASE\na-long-name  Running\n");
    }

    #[test]
    fn a_prediction_lists_scores_highest_first() {
        let p = Prediction {
            label: "joy".into(),
            scores: [("anger".to_string(), 0.1), ("joy".to_string(), 0.9)].into(),
        };
        assert_eq!(
            prediction(&p, Format::Table).unwrap(),
            "joy\n  joy    0.900\n  anger  0.100\n"
        );
        let json: serde_json::Value = serde_json::from_str(&prediction(&p, Format::Json).unwrap()).unwrap();
        assert_eq!(json["label"], "joy");
    }
}
