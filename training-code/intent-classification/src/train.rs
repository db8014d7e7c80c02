//! The training loops. Both architectures train on a seeded shuffle of the training split,
//! score the validation split after every epoch, and hand back a CPU [`Network`] that the
//! artifacts are written from.

use std::time::{Instant, SystemTime};

use candle_core::{D, DType, Device, Tensor, Var, backprop::GradStore};
use candle_nn::{Optimizer, ParamsAdamW, SGD};
use miniautoml_intent_model::{
    Architecture, FitOptions, Network, SparseBatch, Tokenizer, Vocabulary, Weighting, artifacts::argmax,
    network::bag,
};

use crate::data::{Examples, Rng, Split};
use crate::host_step::{NgramTables, ngram_step};
use crate::hyperparameters::{Hyperparameters, Loss};
use crate::metrics::{Scores, scores};
use crate::sparse::{RowSparseAdamW, distinct_features};
use crate::{Error, Result};

/// What one epoch did.
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Wall-clock start.
    pub started: SystemTime,
    /// Wall-clock end.
    pub finished: SystemTime,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Validation scores and mean loss, when there is a validation split.
    pub validation: Option<(Scores, f64)>,
    /// Training examples per second in this epoch.
    pub examples_per_second: f64,
}

/// The device to train on: the first CUDA GPU when built with the `cuda` feature and one is
/// present, else the CPU.
pub fn training_device() -> Result<Device> {
    Ok(Device::cuda_if_available(0)?)
}

/// One line per epoch.
pub fn describe_epoch(report: &EpochReport) -> String {
    let mut line = format!("epoch {:>3}  train loss {:.4}", report.epoch, report.train_loss);
    if let Some((scores, loss)) = report.validation {
        line.push_str(&format!(
            "  validation loss {loss:.4} accuracy {:.3} macro-F1 {:.3}",
            scores.accuracy, scores.macro_f1
        ));
    }
    line.push_str(&format!("  {:.0} examples/s", report.examples_per_second));
    line
}

/// One line for the second pass.
pub fn describe_refit(refit: &Refit) -> String {
    format!(
        "refit on train + validation ({} examples) for {} epochs, the best on validation",
        refit.examples, refit.epochs
    )
}

/// A trained model.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The weights, on the CPU.
    pub network: Network,
    /// The fitted vocabulary.
    pub vocabulary: Vocabulary,
    /// Every epoch (of the first pass, the one scored on validation).
    pub epochs: Vec<EpochReport>,
    /// The second pass on train + validation, when `REFIT` made one: the weights and vocabulary
    /// above are its.
    pub refit: Option<Refit>,
}

/// The second pass `REFIT` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refit {
    /// Its epochs: the first pass's epoch with the best validation macro-F1.
    pub epochs: usize,
    /// The examples it trained on (train + validation).
    pub examples: usize,
}

/// The tokenizer and weighting each architecture trains with.
pub fn fit_options(hyperparameters: &Hyperparameters) -> FitOptions {
    match hyperparameters.architecture {
        Architecture::NgramNb => FitOptions {
            tokenizer: Tokenizer {
                word_ngrams: Some([1, 2]),
                char_ngrams: Some([2, 5]),
            },
            weighting: Weighting::SublinearTfIdf,
            min_df: hyperparameters.min_df,
        },
        Architecture::EmbeddingBag => FitOptions {
            tokenizer: Tokenizer {
                word_ngrams: Some([1, 1]),
                char_ngrams: None,
            },
            weighting: Weighting::Mean,
            min_df: hyperparameters.min_df,
        },
    }
}

/// Every example's features, computed once; batches are cut from it.
struct Featurized {
    all: SparseBatch,
    /// Entries of example `i`: `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
}

impl Featurized {
    fn new(all: SparseBatch) -> Featurized {
        let mut offsets = vec![0; all.len + 1];
        for &row in &all.rows {
            offsets[row as usize + 1] += 1;
        }
        for i in 0..all.len {
            offsets[i + 1] += offsets[i];
        }
        Featurized { all, offsets }
    }

    fn select(&self, examples: &[usize]) -> SparseBatch {
        let mut batch = SparseBatch {
            len: examples.len(),
            ..SparseBatch::default()
        };
        for (row, &example) in examples.iter().enumerate() {
            let range = self.offsets[example]..self.offsets[example + 1];
            batch.rows.extend(std::iter::repeat_n(row as u32, range.len()));
            batch
                .features
                .extend_from_slice(&self.all.features[range.clone()]);
            batch.values.extend_from_slice(&self.all.values[range]);
        }
        batch
    }
}

/// Trains on `split.train`, calling `on_epoch` after every epoch (an error stops training).
/// With `REFIT` and a validation split it then trains again, from scratch, on train +
/// validation for the epoch count that scored best on validation, and returns that model; the
/// test split stays held out from both passes.
pub fn train(
    examples: &Examples,
    split: &Split,
    hyperparameters: &Hyperparameters,
    device: &Device,
    on_epoch: impl FnMut(&EpochReport) -> Result<()>,
) -> Result<Trained> {
    let host = device.is_cpu();
    let first = train_on(examples, split, hyperparameters, device, host, on_epoch)?;
    let Some(epochs) = best_epoch(&first.epochs).filter(|_| hyperparameters.refit) else {
        return Ok(first);
    };
    let merged = Split {
        train: [split.train.as_slice(), split.validation.as_slice()].concat(),
        validation: Vec::new(),
        test: split.test.clone(),
    };
    let again = Hyperparameters {
        epochs,
        ..hyperparameters.clone()
    };
    let second = train_on(examples, &merged, &again, device, host, |_| Ok(()))?;
    Ok(Trained {
        network: second.network,
        vocabulary: second.vocabulary,
        epochs: first.epochs,
        refit: Some(Refit {
            epochs,
            examples: merged.train.len(),
        }),
    })
}

/// The epoch with the highest validation macro-F1 (the earliest of equals); `None` without a
/// validation split.
pub fn best_epoch(epochs: &[EpochReport]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for report in epochs {
        if let Some((scores, _)) = report.validation
            && best.is_none_or(|(_, f1)| scores.macro_f1 > f1)
        {
            best = Some((report.epoch, scores.macro_f1));
        }
    }
    best.map(|(epoch, _)| epoch)
}

/// [`train`], ngram-nb's steps in plain loops when `host`, else in candle tensors on `device`.
fn train_on(
    examples: &Examples,
    split: &Split,
    hyperparameters: &Hyperparameters,
    device: &Device,
    host: bool,
    mut on_epoch: impl FnMut(&EpochReport) -> Result<()>,
) -> Result<Trained> {
    let train_texts: Vec<&str> = split.train.iter().map(|&i| examples.texts[i].as_str()).collect();
    let vocabulary = Vocabulary::fit(&train_texts, &fit_options(hyperparameters))?;
    let features = Featurized::new(vocabulary.transform(&examples.texts));
    let classes = examples.labels.len();
    let mut rng = Rng::new(hyperparameters.seed ^ 0x5eed);
    let class_weights = class_weights(examples, split, hyperparameters.balanced);
    let mut model = Model::new(
        hyperparameters,
        &vocabulary,
        &features,
        examples,
        split,
        classes,
        device,
        host,
        &mut rng,
    )?;
    let mut epochs = Vec::with_capacity(hyperparameters.epochs);
    let mut order = split.train.clone();
    let mut best_accuracy: Option<f64> = None;
    for epoch in 1..=hyperparameters.epochs {
        let (started, clock) = (SystemTime::now(), Instant::now());
        rng.shuffle(&mut order);
        let (mut loss_sum, mut steps) = (0.0, 0usize);
        for chunk in order.chunks(hyperparameters.batch_size) {
            let batch = features.select(chunk);
            let targets: Vec<u32> = chunk.iter().map(|&i| examples.classes[i] as u32).collect();
            let weights: Vec<f32> = chunk
                .iter()
                .map(|&i| class_weights[examples.classes[i]])
                .collect();
            let loss = model.train_step(
                &batch,
                &targets,
                &weights,
                hyperparameters.loss,
                hyperparameters.clip_norm,
            )?;
            // Past this point every weight would be NaN: stop with the reason, not with garbage.
            if !loss.is_finite() {
                return Err(Error::Diverged { epoch });
            }
            loss_sum += loss;
            steps += 1;
        }
        let elapsed = clock.elapsed().as_secs_f64();
        let validation = if split.validation.is_empty() {
            None
        } else {
            Some(evaluate(
                hyperparameters.loss,
                &model.network()?,
                &features,
                examples,
                &split.validation,
            )?)
        };
        if validation.is_some_and(|(_, loss)| !loss.is_finite()) {
            return Err(Error::Diverged { epoch });
        }
        // The original's schedule: a tenth of the rate whenever validation accuracy drops.
        if let (Model::EmbeddingBag { optimizer, .. }, Some((scores, _))) = (&mut model, &validation) {
            match best_accuracy {
                Some(best) if best > scores.accuracy => {
                    let lr = optimizer.learning_rate() * 0.1;
                    optimizer.set_learning_rate(lr);
                }
                _ => best_accuracy = Some(scores.accuracy),
            }
        }
        let report = EpochReport {
            epoch,
            started,
            finished: SystemTime::now(),
            train_loss: loss_sum / steps.max(1) as f64,
            validation,
            examples_per_second: split.train.len() as f64 / elapsed.max(1e-9),
        };
        on_epoch(&report)?;
        epochs.push(report);
    }
    let network = to_cpu(&model.network()?)?;
    Ok(Trained {
        network,
        vocabulary,
        epochs,
        refit: None,
    })
}

/// Scores `indices` with `network`: scores and mean (unweighted) `loss`.
fn evaluate(
    loss: Loss,
    network: &Network,
    features: &Featurized,
    examples: &Examples,
    indices: &[usize],
) -> Result<(Scores, f64)> {
    let mut predicted = Vec::with_capacity(indices.len());
    let mut loss_sum = 0.0;
    for chunk in indices.chunks(512) {
        let logits = network.logits(&features.select(chunk))?;
        let targets: Vec<u32> = chunk.iter().map(|&i| examples.classes[i] as u32).collect();
        let ones = vec![1.0f32; chunk.len()];
        loss_sum += f64::from(weighted_loss(loss, &logits, &targets, &ones)?.to_scalar::<f32>()?)
            * chunk.len() as f64;
        predicted.extend(logits.to_vec2::<f32>()?.iter().map(|row| argmax(row)));
    }
    let truth: Vec<usize> = indices.iter().map(|&i| examples.classes[i]).collect();
    Ok((scores(&truth, &predicted), loss_sum / indices.len() as f64))
}

/// `n / (classes · n_c)` per class over the training split (scikit-learn's "balanced"), or 1.
fn class_weights(examples: &Examples, split: &Split, balanced: bool) -> Vec<f32> {
    let classes = examples.labels.len();
    if !balanced {
        return vec![1.0; classes];
    }
    let mut counts = vec![0usize; classes];
    for &i in &split.train {
        counts[examples.classes[i]] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                split.train.len() as f32 / (present * c) as f32
            }
        })
        .collect()
}

/// The class-weighted mean of `loss` over a batch: `Σ w_i loss_i / Σ w_i`.
fn weighted_loss(loss: Loss, logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    match loss {
        Loss::CrossEntropy => weighted_cross_entropy(logits, targets, weights),
        Loss::SquaredHinge => weighted_squared_hinge(logits, targets, weights),
    }
}

/// `Σ_i w_i Σ_c max(0, 1 − y_ic · logit_ic)² / Σ w_i`, `y_ic` ±1.
fn weighted_squared_hinge(logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    let device = logits.device();
    let (n, classes) = logits.dims2()?;
    let mut signs = vec![-1f32; n * classes];
    for (i, &t) in targets.iter().enumerate() {
        signs[i * classes + t as usize] = 1.0;
    }
    let signs = Tensor::from_vec(signs, (n, classes), device)?;
    let gaps = (1.0 - logits.mul(&signs)?)?.relu()?;
    let total: f32 = weights.iter().sum();
    let weights = Tensor::from_slice(weights, (n, 1), device)?;
    Ok((gaps.sqr()?.broadcast_mul(&weights)?.sum_all()? / f64::from(total.max(f32::MIN_POSITIVE)))?)
}

/// `-Σ w_i log p(y_i) / Σ w_i`.
fn weighted_cross_entropy(logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    let device = logits.device();
    let n = targets.len();
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let targets = Tensor::from_slice(targets, (n, 1), device)?;
    let picked = log_probs.gather(&targets, 1)?.squeeze(1)?;
    let total: f32 = weights.iter().sum();
    let weights = Tensor::from_slice(weights, n, device)?;
    Ok((picked.mul(&weights)?.sum_all()? / f64::from(-total.max(f32::MIN_POSITIVE)))?)
}

fn to_cpu(network: &Network) -> Result<Network> {
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu).and_then(|t| t.detach().copy());
    Ok(match network {
        Network::NgramNb { weight, bias } => Network::NgramNb {
            weight: cpu(weight)?,
            bias: cpu(bias)?,
        },
        Network::EmbeddingBag { embedding, layers } => Network::EmbeddingBag {
            embedding: cpu(embedding)?,
            layers: [
                (cpu(&layers[0].0)?, cpu(&layers[0].1)?),
                (cpu(&layers[1].0)?, cpu(&layers[1].1)?),
                (cpu(&layers[2].0)?, cpu(&layers[2].1)?),
            ],
        },
    })
}

/// Uniform in `[-range, range)` from our seeded generator (candle's own random tensors are not
/// reproducible from a seed).
fn uniform(rng: &mut Rng, shape: (usize, usize), range: f64, device: &Device) -> Result<Var> {
    let values: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * range) as f32)
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?)
}

/// Trainable state by architecture.
enum Model {
    NgramNb {
        /// Per-feature, per-class weights (multiplied by the fixed ratios), stepped sparsely.
        weight: Box<RowSparseAdamW>,
        /// `1 × classes`, stepped like a dense AdamW (its one row is in every step).
        bias: Box<RowSparseAdamW>,
        ratios: Tensor,
        /// `ratios` as a vector, when the steps run in plain loops.
        host_ratios: Vec<f32>,
        /// Scratch for renumbering a batch's features (`sparse::distinct_features`).
        slots: Vec<u32>,
    },
    EmbeddingBag {
        embedding: Var,
        layers: Vec<(Var, Var)>,
        optimizer: SGD,
    },
}

impl Model {
    #[allow(clippy::too_many_arguments)]
    fn new(
        hyperparameters: &Hyperparameters,
        vocabulary: &Vocabulary,
        features: &Featurized,
        examples: &Examples,
        split: &Split,
        classes: usize,
        device: &Device,
        host: bool,
        rng: &mut Rng,
    ) -> Result<Model> {
        let width = vocabulary.len();
        Ok(match hyperparameters.architecture {
            Architecture::NgramNb => {
                let ratios = nb_ratios(
                    features,
                    examples,
                    split,
                    width,
                    classes,
                    hyperparameters.nb_alpha,
                );
                let host_ratios = if host { ratios.clone() } else { Vec::new() };
                let ratios = Tensor::from_vec(ratios, (width, classes), device)?;
                // From zero, with strong decay: starting from the naive-Bayes classifier itself (all
                // ones) overfits the training split (validation macro-F1 0.62 against 0.67).
                let params = ParamsAdamW {
                    lr: hyperparameters.optimizer_lr(),
                    weight_decay: hyperparameters.weight_decay,
                    ..ParamsAdamW::default()
                };
                let weight = Box::new(RowSparseAdamW::zeros_as(
                    width,
                    classes,
                    params.clone(),
                    device,
                    host,
                )?);
                let bias = Box::new(RowSparseAdamW::zeros_as(1, classes, params, device, host)?);
                Model::NgramNb {
                    weight,
                    bias,
                    ratios,
                    host_ratios,
                    slots: vec![u32::MAX; width],
                }
            }
            Architecture::EmbeddingBag => {
                let (dim, hidden) = (hyperparameters.embedding_dim, hyperparameters.fc_size);
                let embedding = uniform(rng, (width, dim), 0.5, device)?;
                let mut layers = Vec::new();
                for (out, input) in [(hidden, dim), (hidden, hidden), (classes, hidden)] {
                    layers.push((
                        uniform(rng, (out, input), 0.5, device)?,
                        Var::zeros(out, DType::F32, device)?,
                    ));
                }
                let mut vars = vec![embedding.clone()];
                vars.extend(layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]));
                let optimizer = SGD::new(vars, hyperparameters.optimizer_lr())?;
                Model::EmbeddingBag {
                    embedding,
                    layers,
                    optimizer,
                }
            }
        })
    }

    fn network(&self) -> Result<Network> {
        Ok(match self {
            Model::NgramNb {
                weight, bias, ratios, ..
            } => Network::NgramNb {
                weight: weight.table()?.mul(ratios)?,
                bias: bias.table()?.squeeze(0)?,
            },
            Model::EmbeddingBag {
                embedding, layers, ..
            } => embedding_bag(embedding, layers),
        })
    }

    /// One optimizer step on a batch; returns its loss. A loss that is not finite is returned
    /// without a step.
    fn train_step(
        &mut self,
        batch: &SparseBatch,
        targets: &[u32],
        weights: &[f32],
        loss: Loss,
        clip_norm: f64,
    ) -> Result<f64> {
        match self {
            Model::NgramNb {
                weight,
                bias,
                ratios,
                host_ratios,
                slots,
            } => {
                // Only the batch's features take part: their rows, renumbered 0..n.
                let (rows, features) = distinct_features(&batch.features, slots);
                let local = SparseBatch {
                    len: batch.len,
                    rows: batch.rows.clone(),
                    features,
                    values: batch.values.clone(),
                };
                if weight.is_host() {
                    let tables = NgramTables {
                        weight,
                        bias,
                        ratios: host_ratios,
                        classes: ratios.dim(1)?,
                        loss,
                    };
                    return ngram_step(tables, &rows, &local, targets, weights, clip_norm);
                }
                let device = ratios.device();
                let index = Tensor::from_slice(&rows, rows.len(), device)?;
                let first = Tensor::from_slice(&[0u32], 1, device)?;
                let trained = weight.gather(&rows, &index)?;
                let trained_bias = bias.gather(&[0], &first)?;
                let effective = trained.as_tensor().mul(&ratios.index_select(&index, 0)?)?;
                let logits = bag(&effective, &local)?.broadcast_add(trained_bias.as_tensor())?;
                let loss = weighted_loss(loss, &logits, targets, weights)?;
                let value = f64::from(loss.to_scalar::<f32>()?);
                if !value.is_finite() {
                    return Ok(value);
                }
                let mut grads = loss.backward()?;
                clip_gradients(&mut grads, &[&trained, &trained_bias], clip_norm)?;
                if let Some(grad) = grads.get(trained.as_tensor()) {
                    weight.step(&rows, &index, &trained, grad)?;
                }
                if let Some(grad) = grads.get(trained_bias.as_tensor()) {
                    bias.step(&[0], &first, &trained_bias, grad)?;
                }
                Ok(value)
            }
            Model::EmbeddingBag {
                embedding,
                layers,
                optimizer,
            } => {
                let logits = embedding_bag(embedding, layers).logits(batch)?;
                let loss = weighted_loss(loss, &logits, targets, weights)?;
                let value = f64::from(loss.to_scalar::<f32>()?);
                if !value.is_finite() {
                    return Ok(value);
                }
                let mut grads = loss.backward()?;
                let vars: Vec<&Var> = std::iter::once(&*embedding)
                    .chain(layers.iter().flat_map(|(w, b)| [w, b]))
                    .collect();
                clip_gradients(&mut grads, &vars, clip_norm)?;
                optimizer.step(&grads)?;
                Ok(value)
            }
        }
    }
}

/// The embedding-bag network over the trainable variables.
fn embedding_bag(embedding: &Var, layers: &[(Var, Var)]) -> Network {
    Network::EmbeddingBag {
        embedding: embedding.as_tensor().clone(),
        layers: [0, 1, 2].map(|i| (layers[i].0.as_tensor().clone(), layers[i].1.as_tensor().clone())),
    }
}

/// Scales `grads` of `vars` down to the global norm `clip_norm` when it is larger (as the
/// original does, at 0.1): a step can only be so large, whatever the rate.
fn clip_gradients(grads: &mut GradStore, vars: &[&Var], clip_norm: f64) -> Result<()> {
    let mut squares = 0f64;
    for var in vars {
        if let Some(grad) = grads.get(var.as_tensor()) {
            squares += f64::from(grad.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = squares.sqrt();
    if norm > clip_norm {
        for var in vars {
            if let Some(grad) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (grad * (clip_norm / norm))?);
            }
        }
    }
    Ok(())
}

/// Naive-Bayes log-count ratios `r[f, c] = ln(p_c[f] / |p_c|) − ln(q_c[f] / |q_c|)` where
/// `p_c`/`q_c` count the training texts of class `c`/not `c` containing feature `f`, plus
/// `alpha`.
fn nb_ratios(
    features: &Featurized,
    examples: &Examples,
    split: &Split,
    width: usize,
    classes: usize,
    alpha: f64,
) -> Vec<f32> {
    let mut per_class = vec![0f64; width * classes];
    let mut total = vec![0f64; width];
    for &i in &split.train {
        let class = examples.classes[i];
        for k in features.offsets[i]..features.offsets[i + 1] {
            let f = features.all.features[k] as usize;
            per_class[f * classes + class] += 1.0;
            total[f] += 1.0;
        }
    }
    let mut p_sum = vec![0f64; classes];
    let mut q_sum = vec![0f64; classes];
    for f in 0..width {
        for c in 0..classes {
            let p = per_class[f * classes + c] + alpha;
            p_sum[c] += p;
            q_sum[c] += total[f] - per_class[f * classes + c] + alpha;
        }
    }
    let mut ratios = vec![0f32; width * classes];
    for f in 0..width {
        for c in 0..classes {
            let p = (per_class[f * classes + c] + alpha) / p_sum[c];
            let q = (total[f] - per_class[f * classes + c] + alpha) / q_sum[c];
            ratios[f * classes + c] = (p / q).ln() as f32;
        }
    }
    ratios
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(trained: &Trained) -> Vec<(String, Vec<f32>)> {
        trained
            .network
            .tensors()
            .into_iter()
            .map(|(name, tensor)| (name, tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect()
    }

    /// Forty short texts of three classes, words shared within a class.
    fn three_classes() -> Examples {
        let words = [
            ["happy", "sunny", "great", "joy", "smile"],
            ["angry", "furious", "late", "broken", "rage"],
            ["sad", "tears", "alone", "miss", "gloomy"],
        ];
        let (mut texts, mut classes) = (Vec::new(), Vec::new());
        for i in 0..40 {
            let class = i % 3;
            let w = &words[class];
            texts.push(format!("{} and {} day {}", w[i % 5], w[(i / 3) % 5], i % 7));
            classes.push(class);
        }
        Examples {
            texts,
            classes,
            labels: vec!["joy".into(), "anger".into(), "sadness".into()],
        }
    }

    #[test]
    fn the_refit_trains_on_train_and_validation_for_the_best_epoch_and_never_sees_the_test_rows() {
        let examples = three_classes();
        let split = Split::new(examples.len(), 3, 0.25, 0.25).unwrap();
        let hyperparameters = Hyperparameters::from_lookup(|name| match name {
            "EPOCHS" => Some("4".into()),
            "BATCH_SIZE" => Some("4".into()),
            "MIN_DF" => Some("1".into()),
            _ => None,
        })
        .unwrap();
        assert!(hyperparameters.refit);
        let mut reported = 0;
        let trained = train(&examples, &split, &hyperparameters, &Device::Cpu, |_| {
            reported += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(reported, 4, "the live epochs are the first pass's");
        let refit = trained.refit.expect("a refit");
        assert_eq!(refit.epochs, best_epoch(&trained.epochs).unwrap());
        assert_eq!(refit.examples, split.train.len() + split.validation.len());

        // The same as training on train + validation for that many epochs.
        let merged = Split {
            train: [split.train.clone(), split.validation.clone()].concat(),
            validation: Vec::new(),
            test: split.test.clone(),
        };
        let direct = train(
            &examples,
            &merged,
            &Hyperparameters {
                epochs: refit.epochs,
                ..hyperparameters.clone()
            },
            &Device::Cpu,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(
            direct.refit, None,
            "no validation split: nothing to choose, no refit"
        );
        assert_eq!(weights(&direct), weights(&trained));

        // The test rows' texts and labels change nothing.
        let mut other = examples.clone();
        for &i in &split.test {
            other.texts[i] = format!("unseen words {i} everywhere");
            other.classes[i] = (other.classes[i] + 1) % 3;
        }
        let again = train(&other, &split, &hyperparameters, &Device::Cpu, |_| Ok(())).unwrap();
        assert_eq!(weights(&again), weights(&trained));
        assert_eq!(again.refit, trained.refit);

        // REFIT=false keeps the first pass.
        let once = Hyperparameters {
            refit: false,
            ..hyperparameters
        };
        let first = train(&examples, &split, &once, &Device::Cpu, |_| Ok(())).unwrap();
        assert_eq!(first.refit, None);
        assert_ne!(weights(&first), weights(&trained));
    }

    #[test]
    fn the_best_epoch_is_the_earliest_with_the_highest_validation_macro_f1() {
        let report = |epoch, f1: Option<f64>| EpochReport {
            epoch,
            started: SystemTime::UNIX_EPOCH,
            finished: SystemTime::UNIX_EPOCH,
            train_loss: 1.0,
            validation: f1.map(|macro_f1| {
                (
                    Scores {
                        accuracy: 0.5,
                        macro_f1,
                    },
                    1.0,
                )
            }),
            examples_per_second: 1.0,
        };
        let curve = [0.5, 0.7, 0.6, 0.7, 0.65].map(Some);
        let epochs: Vec<_> = curve
            .iter()
            .enumerate()
            .map(|(i, f1)| report(i + 1, *f1))
            .collect();
        assert_eq!(best_epoch(&epochs), Some(2));
        assert_eq!(best_epoch(&[report(1, None), report(2, None)]), None);
    }

    /// ngram-nb's plain-loop step (the CPU's) and its candle step (a GPU's, run here on the
    /// CPU) train the same model.
    #[test]
    fn the_host_step_and_the_tensor_step_agree() {
        let texts = [
            "what a happy sunny day",
            "so angry at the late train again",
            "feeling sad and alone tonight",
            "happy happy joy joy",
            "this queue makes me furious",
            "i miss you so much, sad",
            "great news, so happy for you",
            "angry about the broken phone",
            "tears and a sad song",
        ];
        let examples = Examples {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            classes: vec![0, 1, 2, 0, 1, 2, 0, 1, 2],
            labels: vec!["joy".into(), "anger".into(), "sadness".into()],
        };
        let split = Split::new(texts.len(), 1, 0.0, 0.0).unwrap();
        for loss in ["squared-hinge", "cross-entropy"] {
            let hyperparameters = Hyperparameters::from_lookup(|name| match name {
                "EPOCHS" => Some("3".into()),
                "BATCH_SIZE" => Some("4".into()),
                "MIN_DF" => Some("1".into()),
                "LOSS" => Some(loss.into()),
                _ => None,
            })
            .unwrap();
            let trained = [true, false].map(|host| {
                train_on(
                    &examples,
                    &split,
                    &hyperparameters,
                    &Device::Cpu,
                    host,
                    |_| Ok(()),
                )
                .unwrap()
            });
            for (a, b) in trained[0].epochs.iter().zip(&trained[1].epochs) {
                let (a, b) = (a.train_loss, b.train_loss);
                assert!((a - b).abs() < 1e-5, "{loss}: {a} vs {b}");
            }
            let tensors = trained.each_ref().map(|t| {
                t.network
                    .tensors()
                    .into_iter()
                    .map(|(name, tensor)| (name, tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                    .collect::<Vec<_>>()
            });
            for ((name, host), (_, candle)) in tensors[0].iter().zip(&tensors[1]) {
                assert!(host.iter().any(|&w| w != 0.0), "{loss}: {name} did not train");
                for (x, y) in host.iter().zip(candle) {
                    assert!((x - y).abs() < 1e-5, "{loss}: {name}: {x} vs {y}");
                }
            }
        }
    }
}
