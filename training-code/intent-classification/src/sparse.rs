//! AdamW for a `[rows, columns]` table of which each step touches a few rows: ngram-nb's
//! per-feature, per-class weights, where a batch holds a few thousand of the vocabulary's
//! hundred thousand features. A dense step costs `rows × columns` whatever the batch (at 150
//! labels that made training cost grow with vocabulary × labels); this one costs
//! `touched rows × columns`.
//!
//! The moments are updated only for the rows a step touches (as "lazy Adam" does: an untouched
//! row keeps its moments and does not move). The decoupled weight decay, which a dense step
//! applies to every row, is applied exactly all the same: the product of the decay factors since
//! a row was last brought up to date is applied when the row is next read.

use candle_core::{DType, Device, Tensor};
use candle_nn::ParamsAdamW;

use crate::{Error, Result};

/// The table, its moments and where each row's decay stands.
pub struct RowSparseAdamW {
    table: Tensor,
    first_moment: Tensor,
    second_moment: Tensor,
    /// Σ ln(1 − lr·λ) over every step so far.
    log_decay: f64,
    /// `log_decay` when each row was last brought up to date.
    row_log_decay: Vec<f64>,
    step: i32,
    params: ParamsAdamW,
}

impl RowSparseAdamW {
    /// A table of zeros. `lr × weight_decay` must be below 1 (a step would otherwise flip the
    /// weights' signs, which no optimizer survives).
    pub fn zeros(rows: usize, columns: usize, params: ParamsAdamW, device: &Device) -> Result<Self> {
        check_decay(&params)?;
        let zeros = || Tensor::zeros((rows, columns), DType::F32, device);
        Ok(RowSparseAdamW {
            table: zeros()?,
            first_moment: zeros()?,
            second_moment: zeros()?,
            log_decay: 0.0,
            row_log_decay: vec![0.0; rows],
            step: 0,
            params,
        })
    }

    /// The learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    /// Sets the learning rate (the schedule's decay).
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        let params = ParamsAdamW { lr, ..self.params };
        check_decay(&params)?;
        self.params = params;
        Ok(())
    }

    /// The decay each of `rows` is owed, as a `[rows, 1]` column.
    fn owed(&self, rows: &[u32]) -> Result<Tensor> {
        let factors: Vec<f32> = rows
            .iter()
            .map(|&r| (self.log_decay - self.row_log_decay[r as usize]).exp() as f32)
            .collect();
        Ok(Tensor::from_vec(factors, (rows.len(), 1), self.table.device())?)
    }

    /// The current values of `rows` (`index` holds the same ids as a tensor).
    pub fn gather(&self, rows: &[u32], index: &Tensor) -> Result<Tensor> {
        Ok(self
            .table
            .index_select(index, 0)?
            .broadcast_mul(&self.owed(rows)?)?)
    }

    /// One step for `rows`, whose current values are `values` (from [`Self::gather`]) and whose
    /// gradient is `grad`; every other row only decays.
    pub fn step(&mut self, rows: &[u32], index: &Tensor, values: &Tensor, grad: &Tensor) -> Result<()> {
        let ParamsAdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.params;
        self.step += 1;
        let scale_m = 1.0 / (1.0 - beta1.powi(self.step));
        let scale_v = 1.0 / (1.0 - beta2.powi(self.step));
        let m = ((self.first_moment.index_select(index, 0)? * beta1)? + (grad * (1.0 - beta1))?)?;
        let v = ((self.second_moment.index_select(index, 0)? * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
        let adjusted = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + eps)?)?;
        let decay = 1.0 - lr * weight_decay;
        let next = ((values * decay)? - (adjusted * lr)?)?;
        self.log_decay += decay.ln();
        for &row in rows {
            self.row_log_decay[row as usize] = self.log_decay;
        }
        let columns = self.table.dim(1)?;
        let at = index
            .unsqueeze(1)?
            .broadcast_as((rows.len(), columns))?
            .contiguous()?;
        self.first_moment.scatter_set(&at, &m, 0)?;
        self.second_moment.scatter_set(&at, &v, 0)?;
        self.table.scatter_set(&at, &next, 0)?;
        Ok(())
    }

    /// The whole table as it stands (every row's decay applied), as a new tensor.
    pub fn table(&self) -> Result<Tensor> {
        let rows: Vec<u32> = (0..self.row_log_decay.len() as u32).collect();
        Ok(self.table.broadcast_mul(&self.owed(&rows)?)?)
    }
}

fn check_decay(params: &ParamsAdamW) -> Result<()> {
    if params.lr * params.weight_decay >= 1.0 {
        return Err(Error::Contract(format!(
            "the AdamW rate {} times WEIGHT_DECAY {} must be below 1 (lower LR or WEIGHT_DECAY)",
            params.lr, params.weight_decay
        )));
    }
    Ok(())
}

/// The distinct features of a batch, in order of first appearance, and the batch's features
/// renumbered into that list (`local[k]` is the position of `features[k]` in `distinct`).
/// `slots` is scratch space of the vocabulary's size, all `u32::MAX`, and is left so.
pub fn distinct_features(features: &[u32], slots: &mut [u32]) -> (Vec<u32>, Vec<u32>) {
    let mut distinct = Vec::new();
    let local = features
        .iter()
        .map(|&f| {
            let slot = &mut slots[f as usize];
            if *slot == u32::MAX {
                *slot = distinct.len() as u32;
                distinct.push(f);
            }
            *slot
        })
        .collect();
    for &f in &distinct {
        slots[f as usize] = u32::MAX;
    }
    (distinct, local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(lr: f64, weight_decay: f64) -> ParamsAdamW {
        ParamsAdamW {
            lr,
            weight_decay,
            ..ParamsAdamW::default()
        }
    }

    #[test]
    fn distinct_features_renumber_the_batch() {
        let mut slots = vec![u32::MAX; 10];
        let (distinct, local) = distinct_features(&[7, 2, 7, 9, 2], &mut slots);
        assert_eq!((distinct, local), (vec![7, 2, 9], vec![0, 1, 0, 2, 1]));
        assert!(slots.iter().all(|&s| s == u32::MAX));
    }

    /// With every row touched at every step, the sparse step is candle's dense AdamW.
    #[test]
    fn touching_every_row_is_dense_adamw() {
        use candle_nn::{AdamW, Optimizer};
        let device = Device::Cpu;
        let p = params(0.01, 0.5);
        let grads = [[0.5f32, -1.0, 0.25, 2.0], [-0.3, 0.1, 0.0, 1.5]];
        let dense = candle_core::Var::zeros((2, 2), DType::F32, &device).unwrap();
        let mut adamw = AdamW::new(vec![dense.clone()], p.clone()).unwrap();
        let mut sparse = RowSparseAdamW::zeros(2, 2, p, &device).unwrap();
        let rows = [0u32, 1];
        let index = Tensor::new(&rows, &device).unwrap();
        for g in grads {
            let g = Tensor::from_slice(&g, (2, 2), &device).unwrap();
            let loss = (dense.as_tensor() * &g).unwrap().sum_all().unwrap();
            adamw.backward_step(&loss).unwrap();
            let values = sparse.gather(&rows, &index).unwrap();
            sparse.step(&rows, &index, &values, &g).unwrap();
        }
        let (a, b) = (
            dense.as_tensor().to_vec2::<f32>().unwrap(),
            sparse.table().unwrap().to_vec2::<f32>().unwrap(),
        );
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    /// An untouched row does not move, but decays as a dense step would decay it.
    #[test]
    fn untouched_rows_decay_exactly() {
        let device = Device::Cpu;
        let mut sparse = RowSparseAdamW::zeros(2, 1, params(0.1, 0.5), &device).unwrap();
        let both = [0u32, 1];
        let index = Tensor::new(&both, &device).unwrap();
        let values = sparse.gather(&both, &index).unwrap();
        let grad = Tensor::new(&[[-1f32], [-1.0]], &device).unwrap();
        sparse.step(&both, &index, &values, &grad).unwrap();
        let after_one = sparse.table().unwrap().to_vec2::<f32>().unwrap();
        let first = [0u32];
        let index = Tensor::new(&first, &device).unwrap();
        for _ in 0..3 {
            let values = sparse.gather(&first, &index).unwrap();
            let grad = Tensor::new(&[[-1f32]], &device).unwrap();
            sparse.step(&first, &index, &values, &grad).unwrap();
        }
        let table = sparse.table().unwrap().to_vec2::<f32>().unwrap();
        let expected = after_one[1][0] * 0.95f32.powi(3);
        assert!((table[1][0] - expected).abs() < 1e-7, "{table:?}");
        assert!(table[0][0] > after_one[0][0]);
    }

    #[test]
    fn a_decay_that_flips_signs_is_refused() {
        let error = RowSparseAdamW::zeros(1, 1, params(2.0, 0.5), &Device::Cpu)
            .err()
            .unwrap();
        assert!(error.to_string().contains("must be below 1"), "{error}");
    }
}
