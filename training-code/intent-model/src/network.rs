//! The networks' forward pass, shared by training and serving. Both start with a bag of sparse
//! features: `bag(table)[i] = Σ_k value_k · table[feature_k]` over the entries of text `i`,
//! computed as a gather and an `index_add` so that a text's result does not depend on the other
//! texts in its batch.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, SparseBatch};

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The default: word 1–2-gram and character 2–5-gram TF-IDF features, each feature's weight
    /// per class scaled by its naive-Bayes log-count ratio (NBSVM, Wang & Manning 2012), one
    /// linear layer, softmax. Tensors `ngram.weight` `[features, classes]` (the ratios already
    /// multiplied in) and `ngram.bias` `[classes]`.
    NgramNb,
    /// The original MiniAutoML network: a mean `EmbeddingBag` over words, then three linear
    /// layers without activations. Tensors `embedding.weight` `[words, dim]`, `fc{1,2,3}.weight`
    /// `[out, in]` and `fc{1,2,3}.bias`.
    EmbeddingBag,
}

impl Architecture {
    /// The name used in hyperparameters and the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::NgramNb => "ngram-nb",
            Architecture::EmbeddingBag => "embedding-bag",
        }
    }

    /// Parses [`Architecture::name`].
    pub fn from_name(name: &str) -> Option<Architecture> {
        [Architecture::NgramNb, Architecture::EmbeddingBag]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// A network's weights, by architecture.
#[derive(Clone, Debug)]
pub enum Network {
    /// See [`Architecture::NgramNb`].
    NgramNb {
        /// `[features, classes]`.
        weight: Tensor,
        /// `[classes]`.
        bias: Tensor,
    },
    /// See [`Architecture::EmbeddingBag`].
    EmbeddingBag {
        /// `[words, dim]`.
        embedding: Tensor,
        /// `(weight [out, in], bias [out])` of the three linear layers.
        layers: [(Tensor, Tensor); 3],
    },
}

/// `Σ_k value_k · table[feature_k]` per text: `[batch.len, table columns]`.
pub fn bag(table: &Tensor, batch: &SparseBatch) -> Result<Tensor> {
    let device = table.device();
    let columns = table.dim(1)?;
    let zeros = Tensor::zeros((batch.len, columns), table.dtype(), device)?;
    let entries = batch.features.len();
    if entries == 0 {
        return Ok(zeros);
    }
    let features = Tensor::from_slice(&batch.features, entries, device)?;
    let rows = Tensor::from_slice(&batch.rows, entries, device)?;
    let values = Tensor::from_slice(&batch.values, (entries, 1), device)?;
    let gathered = table.index_select(&features, 0)?.broadcast_mul(&values)?;
    Ok(zeros.index_add(&rows, &gathered, 0)?)
}

fn linear(input: &Tensor, (weight, bias): &(Tensor, Tensor)) -> Result<Tensor> {
    Ok(input.matmul(&weight.t()?)?.broadcast_add(bias)?)
}

impl Network {
    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        match self {
            Network::NgramNb { .. } => Architecture::NgramNb,
            Network::EmbeddingBag { .. } => Architecture::EmbeddingBag,
        }
    }

    /// Unnormalised class scores `[batch.len, classes]`.
    pub fn logits(&self, batch: &SparseBatch) -> Result<Tensor> {
        match self {
            Network::NgramNb { weight, bias } => Ok(bag(weight, batch)?.broadcast_add(bias)?),
            Network::EmbeddingBag { embedding, layers } => {
                let mut hidden = bag(embedding, batch)?;
                for layer in layers {
                    hidden = linear(&hidden, layer)?;
                }
                Ok(hidden)
            }
        }
    }

    /// Number of input features the network expects.
    pub fn features(&self) -> Result<usize> {
        Ok(match self {
            Network::NgramNb { weight, .. } => weight.dim(0)?,
            Network::EmbeddingBag { embedding, .. } => embedding.dim(0)?,
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> Result<usize> {
        Ok(match self {
            Network::NgramNb { bias, .. } => bias.dim(0)?,
            Network::EmbeddingBag { layers, .. } => layers[2].1.dim(0)?,
        })
    }

    /// The named tensors saved in `model.safetensors`.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        match self {
            Network::NgramNb { weight, bias } => vec![
                ("ngram.weight".into(), weight.clone()),
                ("ngram.bias".into(), bias.clone()),
            ],
            Network::EmbeddingBag { embedding, layers } => {
                let mut tensors = vec![("embedding.weight".to_string(), embedding.clone())];
                for (i, (weight, bias)) in layers.iter().enumerate() {
                    tensors.push((format!("fc{}.weight", i + 1), weight.clone()));
                    tensors.push((format!("fc{}.bias", i + 1), bias.clone()));
                }
                tensors
            }
        }
    }

    /// Rebuilds a network from `model.safetensors`, checking names, shapes and types.
    pub fn from_safetensors(architecture: Architecture, bytes: &[u8], device: &Device) -> Result<Network> {
        let mut tensors = candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|e| Error::Invalid(format!("model.safetensors: {e}")))?;
        let mut take = |name: &str, rank: usize| -> Result<Tensor> {
            let tensor = tensors
                .remove(name)
                .ok_or_else(|| Error::Invalid(format!("model.safetensors has no tensor {name}")))?;
            if tensor.rank() != rank || tensor.dtype() != DType::F32 {
                return Err(Error::Invalid(format!(
                    "model.safetensors: {name} is {:?} {:?}, expected rank {rank} f32",
                    tensor.dtype(),
                    tensor.dims()
                )));
            }
            Ok(tensor)
        };
        let network = match architecture {
            Architecture::NgramNb => Network::NgramNb {
                weight: take("ngram.weight", 2)?,
                bias: take("ngram.bias", 1)?,
            },
            Architecture::EmbeddingBag => Network::EmbeddingBag {
                embedding: take("embedding.weight", 2)?,
                layers: [
                    (take("fc1.weight", 2)?, take("fc1.bias", 1)?),
                    (take("fc2.weight", 2)?, take("fc2.bias", 1)?),
                    (take("fc3.weight", 2)?, take("fc3.bias", 1)?),
                ],
            },
        };
        network.check_shapes()?;
        Ok(network)
    }

    fn check_shapes(&self) -> Result<()> {
        let mismatch = |what: &str| Err(Error::Invalid(format!("model.safetensors: {what}")));
        match self {
            Network::NgramNb { weight, bias } => {
                if weight.dim(1)? != bias.dim(0)? {
                    return mismatch("ngram.weight and ngram.bias disagree on the number of classes");
                }
            }
            Network::EmbeddingBag { embedding, layers } => {
                let mut width = embedding.dim(1)?;
                for (i, (weight, bias)) in layers.iter().enumerate() {
                    if weight.dim(1)? != width || weight.dim(0)? != bias.dim(0)? {
                        return mismatch(&format!("fc{} does not fit the layer before it", i + 1));
                    }
                    width = weight.dim(0)?;
                }
            }
        }
        Ok(())
    }

    /// `model.safetensors`.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let tensors: HashMap<String, Tensor> = self.tensors().into_iter().collect();
        let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        safetensors::serialize(sorted, None).map_err(|e| Error::Invalid(format!("model.safetensors: {e}")))
    }
}

/// Fewer classes than this and candle's CPU softmax sums its exponentials one after the other
/// (its AVX sum works in blocks of 32), so [`DirectNgramNb`] can repeat it exactly.
const DIRECT_MAX_CLASSES: usize = 32;

/// [`Network::NgramNb`] as plain `f32` rows, to classify one text without tensors: serving
/// classifies one document per request, where building a handful of small tensors costs more
/// than the arithmetic. The same `f32` operations in the same order as [`Network::logits`] and
/// [`probabilities`] on the CPU, so the results are bit for bit the same (a unit test checks).
#[derive(Clone, Debug)]
pub struct DirectNgramNb {
    /// `ngram.weight`, row-major `[features, classes]`.
    weight: Vec<f32>,
    /// `ngram.bias`.
    bias: Vec<f32>,
}

impl DirectNgramNb {
    /// The direct form of `network`, if it is an n-gram network with fewer than 32 classes.
    pub fn new(network: &Network) -> Result<Option<DirectNgramNb>> {
        match network {
            Network::NgramNb { weight, bias } if bias.dim(0)? < DIRECT_MAX_CLASSES => {
                Ok(Some(DirectNgramNb {
                    weight: weight.flatten_all()?.to_vec1::<f32>()?,
                    bias: bias.to_vec1::<f32>()?,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Class probabilities of one text whose feature `features[k]` has value `values[k]`.
    pub fn probabilities(&self, features: &[u32], values: &[f32]) -> Result<Vec<f32>> {
        let classes = self.bias.len();
        // The bag: entries added in order onto zeros, as `index_add` does.
        let mut scores = vec![0f32; classes];
        for (&feature, &value) in features.iter().zip(values) {
            let start = feature as usize * classes;
            let row = self
                .weight
                .get(start..start + classes)
                .ok_or_else(|| Error::Invalid(format!("feature {feature} is outside the network's table")))?;
            for (score, &weight) in scores.iter_mut().zip(row) {
                *score += weight * value;
            }
        }
        for (score, &bias) in scores.iter_mut().zip(&self.bias) {
            *score += bias;
        }
        // Softmax: the maximum, exponentials of the differences, their sum in order, quotients.
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for score in &mut scores {
            *score = (*score - max).exp();
        }
        let mut sum = 0f32;
        for &score in &scores {
            sum += score;
        }
        for score in &mut scores {
            *score /= sum;
        }
        Ok(scores)
    }
}

/// Softmax over the last dimension.
pub fn probabilities(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(logits, D::Minus1)?)
}
