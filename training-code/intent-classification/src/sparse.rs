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

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::ParamsAdamW;

use crate::{Error, Result};

/// The table, its moments and where each row's decay stands.
pub struct RowSparseAdamW {
    storage: Storage,
    rows: usize,
    columns: usize,
    device: Device,
    /// Σ ln(1 − lr·λ) over every step so far.
    log_decay: f64,
    /// `log_decay` when each row was last brought up to date.
    row_log_decay: Vec<f64>,
    step: i32,
    params: ParamsAdamW,
}

/// Where the table and its moments live. On the CPU they are plain vectors and a step is one
/// fused pass over the touched rows (a dozen tensor operations, gathers and scatters cost four
/// times as much); on a GPU they are tensors, gathered and scattered in place with candle's
/// `index_select` and `scatter_set`.
enum Storage {
    Host {
        table: Vec<f32>,
        first_moment: Vec<f32>,
        second_moment: Vec<f32>,
    },
    Tensors {
        table: Tensor,
        first_moment: Tensor,
        second_moment: Tensor,
    },
}

impl RowSparseAdamW {
    /// A table of zeros on `device`. `lr × weight_decay` must be below 1 (a step would otherwise
    /// flip the weights' signs, which no optimizer survives).
    pub fn zeros(rows: usize, columns: usize, params: ParamsAdamW, device: &Device) -> Result<Self> {
        Self::zeros_as(rows, columns, params, device, device.is_cpu())
    }

    /// As [`Self::zeros`], choosing the storage (`host`: vectors; else tensors on `device`).
    pub fn zeros_as(
        rows: usize,
        columns: usize,
        params: ParamsAdamW,
        device: &Device,
        host: bool,
    ) -> Result<Self> {
        check_decay(&params)?;
        let storage = if host {
            Storage::Host {
                table: vec![0.0; rows * columns],
                first_moment: vec![0.0; rows * columns],
                second_moment: vec![0.0; rows * columns],
            }
        } else {
            let zeros = || Tensor::zeros((rows, columns), DType::F32, device);
            Storage::Tensors {
                table: zeros()?,
                first_moment: zeros()?,
                second_moment: zeros()?,
            }
        };
        Ok(RowSparseAdamW {
            storage,
            rows,
            columns,
            device: device.clone(),
            log_decay: 0.0,
            row_log_decay: vec![0.0; rows],
            step: 0,
            params,
        })
    }

    /// The decay row `row` is owed.
    fn owed(&self, row: u32) -> f32 {
        (self.log_decay - self.row_log_decay[row as usize]).exp() as f32
    }

    fn owed_column(&self, rows: &[u32]) -> Result<Tensor> {
        let factors: Vec<f32> = rows.iter().map(|&r| self.owed(r)).collect();
        Ok(Tensor::from_vec(factors, (rows.len(), 1), &self.device)?)
    }

    /// Whether the table is plain vectors (the CPU), so [`Self::gather_host`] and
    /// [`Self::step_host`] apply.
    pub fn is_host(&self) -> bool {
        matches!(self.storage, Storage::Host { .. })
    }

    /// The current values of `rows`, row-major; an error unless the table is on the host.
    pub fn gather_host(&self, rows: &[u32]) -> Result<Vec<f32>> {
        let Storage::Host { table, .. } = &self.storage else {
            return Err(not_on_host());
        };
        let columns = self.columns;
        let mut values = Vec::with_capacity(rows.len() * columns);
        for &row in rows {
            let owed = self.owed(row);
            let start = row as usize * columns;
            values.extend(table[start..start + columns].iter().map(|w| w * owed));
        }
        Ok(values)
    }

    /// The current values of `rows` as a new variable to differentiate (`index` holds the same
    /// ids as a tensor).
    pub fn gather(&self, rows: &[u32], index: &Tensor) -> Result<Var> {
        match &self.storage {
            Storage::Host { .. } => {
                let values = self.gather_host(rows)?;
                Ok(Var::from_vec(values, (rows.len(), self.columns), &self.device)?)
            }
            Storage::Tensors { table, .. } => Ok(Var::from_tensor(
                &table
                    .index_select(index, 0)?
                    .broadcast_mul(&self.owed_column(rows)?)?,
            )?),
        }
    }

    /// Counts a step and returns its scalars.
    fn advance(&mut self) -> StepScalars {
        self.step += 1;
        let ParamsAdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.params;
        StepScalars {
            lr,
            beta1,
            beta2,
            eps,
            scale_m: 1.0 / (1.0 - beta1.powi(self.step)),
            scale_v: 1.0 / (1.0 - beta2.powi(self.step)),
            decay: 1.0 - lr * weight_decay,
        }
    }

    fn mark(&mut self, rows: &[u32], decay: f64) {
        self.log_decay += decay.ln();
        for &row in rows {
            self.row_log_decay[row as usize] = self.log_decay;
        }
    }

    /// One step for `rows` on the host: `values` from [`Self::gather_host`], `grad` row-major
    /// alike; every other row only decays. One pass over the rows' entries.
    pub fn step_host(&mut self, rows: &[u32], values: &[f32], grad: &[f32]) -> Result<()> {
        if !self.is_host() {
            return Err(not_on_host());
        }
        let step = self.advance();
        let columns = self.columns;
        if let Storage::Host {
            table,
            first_moment,
            second_moment,
        } = &mut self.storage
        {
            let [lr, beta1, beta2, eps, scale_m, scale_v, decay] = [
                step.lr,
                step.beta1,
                step.beta2,
                step.eps,
                step.scale_m,
                step.scale_v,
                step.decay,
            ]
            .map(|x| x as f32);
            for (i, &row) in rows.iter().enumerate() {
                let at = row as usize * columns;
                for j in 0..columns {
                    let (k, g) = (at + j, grad[i * columns + j]);
                    let m = beta1 * first_moment[k] + (1.0 - beta1) * g;
                    let v = beta2 * second_moment[k] + (1.0 - beta2) * g * g;
                    first_moment[k] = m;
                    second_moment[k] = v;
                    let adjusted = (m * scale_m) / ((v * scale_v).sqrt() + eps);
                    table[k] = values[i * columns + j] * decay - adjusted * lr;
                }
            }
        }
        self.mark(rows, step.decay);
        Ok(())
    }

    /// One step for `rows`, whose values `values` came from [`Self::gather`] and whose gradient
    /// is `grad`; every other row only decays.
    pub fn step(&mut self, rows: &[u32], index: &Tensor, values: &Var, grad: &Tensor) -> Result<()> {
        if self.is_host() {
            let grad = grad.flatten_all()?.to_vec1::<f32>()?;
            let values = values.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            return self.step_host(rows, &values, &grad);
        }
        let StepScalars {
            lr,
            beta1,
            beta2,
            eps,
            scale_m,
            scale_v,
            decay,
        } = self.advance();
        let columns = self.columns;
        if let Storage::Tensors {
            table,
            first_moment,
            second_moment,
        } = &mut self.storage
        {
            let m = ((first_moment.index_select(index, 0)? * beta1)? + (grad * (1.0 - beta1))?)?;
            let v = ((second_moment.index_select(index, 0)? * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let adjusted = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + eps)?)?;
            let next = ((values.as_tensor() * decay)? - (adjusted * lr)?)?;
            let at = index
                .unsqueeze(1)?
                .broadcast_as((rows.len(), columns))?
                .contiguous()?;
            first_moment.scatter_set(&at, &m, 0)?;
            second_moment.scatter_set(&at, &v, 0)?;
            table.scatter_set(&at, &next, 0)?;
        }
        self.mark(rows, decay);
        Ok(())
    }

    /// The whole table as it stands (every row's decay applied), as a new tensor.
    pub fn table(&self) -> Result<Tensor> {
        let all: Vec<u32> = (0..self.rows as u32).collect();
        match &self.storage {
            Storage::Host { table, .. } => {
                let values: Vec<f32> = table
                    .chunks(self.columns.max(1))
                    .zip(&all)
                    .flat_map(|(row, &r)| {
                        let owed = self.owed(r);
                        row.iter().map(move |w| w * owed)
                    })
                    .collect();
                Ok(Tensor::from_vec(values, (self.rows, self.columns), &self.device)?)
            }
            Storage::Tensors { table, .. } => Ok(table.broadcast_mul(&self.owed_column(&all)?)?),
        }
    }
}

/// What one step computes with: the rate and moments' parameters, the moments' bias
/// corrections and the decay factor.
struct StepScalars {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    scale_m: f64,
    scale_v: f64,
    decay: f64,
}

fn not_on_host() -> Error {
    Error::Contract("a host step on a table that is not on the host".into())
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

    /// With every row touched at every step, the sparse step is candle's dense AdamW, in both
    /// storages.
    #[test]
    fn touching_every_row_is_dense_adamw() {
        use candle_nn::{AdamW, Optimizer};
        let device = Device::Cpu;
        let p = params(0.01, 0.5);
        let grads = [[0.5f32, -1.0, 0.25, 2.0], [-0.3, 0.1, 0.0, 1.5]];
        let dense = Var::zeros((2, 2), DType::F32, &device).unwrap();
        let mut adamw = AdamW::new(vec![dense.clone()], p.clone()).unwrap();
        let mut sparse =
            [true, false].map(|host| RowSparseAdamW::zeros_as(2, 2, p.clone(), &device, host).unwrap());
        let rows = [0u32, 1];
        let index = Tensor::new(&rows, &device).unwrap();
        for g in grads {
            let g = Tensor::from_slice(&g, (2, 2), &device).unwrap();
            let loss = (dense.as_tensor() * &g).unwrap().sum_all().unwrap();
            adamw.backward_step(&loss).unwrap();
            for sparse in &mut sparse {
                let values = sparse.gather(&rows, &index).unwrap();
                sparse.step(&rows, &index, &values, &g).unwrap();
            }
        }
        let a = dense.as_tensor().to_vec2::<f32>().unwrap();
        for sparse in &sparse {
            let b = sparse.table().unwrap().to_vec2::<f32>().unwrap();
            for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
            }
        }
    }

    /// An untouched row does not move, but decays as a dense step would decay it.
    #[test]
    fn untouched_rows_decay_exactly() {
        let device = Device::Cpu;
        for host in [true, false] {
            let mut sparse = RowSparseAdamW::zeros_as(2, 1, params(0.1, 0.5), &device, host).unwrap();
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
    }

    #[test]
    fn a_decay_that_flips_signs_is_refused() {
        let error = RowSparseAdamW::zeros(1, 1, params(2.0, 0.5), &Device::Cpu)
            .err()
            .unwrap();
        assert!(error.to_string().contains("must be below 1"), "{error}");
    }
}
