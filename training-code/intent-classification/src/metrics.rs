//! Classification scores.

/// Accuracy and macro-averaged F1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Share of texts classified right.
    pub accuracy: f64,
    /// Mean F1 over the classes that occur in the truth or the predictions (as scikit-learn's
    /// `f1_score(average="macro")`; a class never predicted right scores 0).
    pub macro_f1: f64,
}

/// Scores `predicted` against `truth` (class indices).
pub fn scores(truth: &[usize], predicted: &[usize]) -> Scores {
    assert_eq!(truth.len(), predicted.len(), "one prediction per text");
    if truth.is_empty() {
        return Scores {
            accuracy: 0.0,
            macro_f1: 0.0,
        };
    }
    let classes = truth.iter().chain(predicted).max().map_or(0, |m| m + 1);
    let (mut tp, mut fp, mut fn_) = (
        vec![0usize; classes],
        vec![0usize; classes],
        vec![0usize; classes],
    );
    for (&t, &p) in truth.iter().zip(predicted) {
        if t == p {
            tp[t] += 1;
        } else {
            fp[p] += 1;
            fn_[t] += 1;
        }
    }
    let mut f1_sum = 0.0;
    let mut present = 0;
    for c in 0..classes {
        if tp[c] + fp[c] + fn_[c] == 0 {
            continue;
        }
        present += 1;
        f1_sum += 2.0 * tp[c] as f64 / (2 * tp[c] + fp[c] + fn_[c]) as f64;
    }
    Scores {
        accuracy: tp.iter().sum::<usize>() as f64 / truth.len() as f64,
        macro_f1: f1_sum / present as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_matches_scikit_learn() {
        // sklearn.metrics.f1_score([0,0,1,1,2,2], [0,1,1,1,0,2], average="macro") = 0.6555…
        let s = scores(&[0, 0, 1, 1, 2, 2], &[0, 1, 1, 1, 0, 2]);
        assert!((s.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!(
            (s.macro_f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12,
            "{}",
            s.macro_f1
        );
        // A class that is only ever predicted counts with F1 0.
        let s = scores(&[0, 0], &[0, 3]);
        assert!((s.macro_f1 - (2.0 / 3.0 + 0.0) / 2.0).abs() < 1e-12);
    }
}
