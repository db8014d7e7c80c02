//! ngram-nb's training step on the CPU, in plain loops over the batch's entries. The same
//! arithmetic as the candle path in `train.rs` (which a GPU runs, and a unit test compares this
//! with), without its intermediate tensors: candle's gather-and-`index_add` bag materialises
//! `entries × labels` values forward and backward, which at 150 labels cost more than the step
//! itself. Forward, loss, backward and the optimizer step touch each entry's row once.

use miniautoml_intent_model::SparseBatch;

use crate::Result;
use crate::hyperparameters::Loss;
use crate::sparse::RowSparseAdamW;

/// What one step needs to know of the model.
pub struct NgramTables<'a> {
    /// Per-feature, per-class weights.
    pub weight: &'a mut RowSparseAdamW,
    /// The bias, a `1 × classes` table.
    pub bias: &'a mut RowSparseAdamW,
    /// The naive-Bayes ratios, row-major `[features, classes]`.
    pub ratios: &'a [f32],
    /// Number of classes.
    pub classes: usize,
    /// What the step minimises.
    pub loss: Loss,
}

/// One step on `batch`, whose features are positions in `distinct` (the batch's feature ids):
/// `logit[i, c] = Σ_k x_k · r[f_k, c] · w[f_k, c] + b[c]`, the class-weighted loss,
/// its gradient clipped to `clip_norm`, AdamW on the touched rows and the bias. Returns the
/// loss; a loss that is not finite is returned without a step.
pub fn ngram_step(
    tables: NgramTables<'_>,
    distinct: &[u32],
    batch: &SparseBatch,
    targets: &[u32],
    weights: &[f32],
    clip_norm: f64,
) -> Result<f64> {
    let NgramTables {
        weight,
        bias,
        ratios,
        classes: c,
        loss: kind,
    } = tables;
    let values = weight.gather_host(distinct)?;
    let bias_values = bias.gather_host(&[0])?;
    let ratio = |i: usize| {
        let start = distinct[i] as usize * c;
        &ratios[start..start + c]
    };
    // Forward: each distinct feature's effective row once, then one pass over the entries.
    let mut effective = vec![0f32; values.len()];
    for i in 0..distinct.len() {
        for ((e, &w), &r) in effective[i * c..(i + 1) * c]
            .iter_mut()
            .zip(&values[i * c..(i + 1) * c])
            .zip(ratio(i))
        {
            *e = w * r;
        }
    }
    let mut logits = vec![0f32; batch.len * c];
    for ((&row, &feature), &x) in batch.rows.iter().zip(&batch.features).zip(&batch.values) {
        let (row, feature) = (row as usize, feature as usize);
        for (l, &e) in logits[row * c..(row + 1) * c]
            .iter_mut()
            .zip(&effective[feature * c..(feature + 1) * c])
        {
            *l += x * e;
        }
    }
    // Loss and its gradient with respect to the logits.
    let total = weights.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    let mut loss = 0f64;
    let mut d_logits = vec![0f32; batch.len * c];
    for (i, (&target, &w)) in targets.iter().zip(weights).enumerate() {
        let row = &mut logits[i * c..(i + 1) * c];
        for (l, &b) in row.iter_mut().zip(&bias_values) {
            *l += b;
        }
        let scale = w / total;
        let d_row = &mut d_logits[i * c..(i + 1) * c];
        match kind {
            Loss::SquaredHinge => {
                for (j, (d, &l)) in d_row.iter_mut().zip(row.iter()).enumerate() {
                    let y = if j == target as usize { 1.0 } else { -1.0 };
                    let gap = (1.0 - y * l).max(0.0);
                    loss += f64::from(w * gap * gap);
                    *d = -2.0 * y * gap * scale;
                }
            }
            Loss::CrossEntropy => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let log_sum = max + row.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
                loss -= f64::from(w * (row[target as usize] - log_sum));
                for (j, (d, &l)) in d_row.iter_mut().zip(row.iter()).enumerate() {
                    let truth = if j == target as usize { 1.0 } else { 0.0 };
                    *d = ((l - log_sum).exp() - truth) * scale;
                }
            }
        }
    }
    let loss = loss / f64::from(total);
    if !loss.is_finite() {
        return Ok(loss);
    }
    // Backward: the entries' contributions per distinct feature, then the ratios.
    let mut grad = vec![0f32; values.len()];
    for ((&row, &feature), &x) in batch.rows.iter().zip(&batch.features).zip(&batch.values) {
        let (row, feature) = (row as usize, feature as usize);
        for (g, &d) in grad[feature * c..(feature + 1) * c]
            .iter_mut()
            .zip(&d_logits[row * c..(row + 1) * c])
        {
            *g += x * d;
        }
    }
    for i in 0..distinct.len() {
        for (g, &r) in grad[i * c..(i + 1) * c].iter_mut().zip(ratio(i)) {
            *g *= r;
        }
    }
    let mut bias_grad = vec![0f32; c];
    for row in d_logits.chunks(c) {
        for (g, &d) in bias_grad.iter_mut().zip(row) {
            *g += d;
        }
    }
    let squares: f64 = grad
        .iter()
        .chain(&bias_grad)
        .map(|&g| f64::from(g) * f64::from(g))
        .sum();
    let norm = squares.sqrt();
    if norm > clip_norm {
        let scale = (clip_norm / norm) as f32;
        for g in grad.iter_mut().chain(bias_grad.iter_mut()) {
            *g *= scale;
        }
    }
    weight.step_host(distinct, &values, &grad)?;
    bias.step_host(&[0], &bias_values, &bias_grad)?;
    Ok(loss)
}
