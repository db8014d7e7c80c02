//! The binary's local commands: `train` writes verified artifacts, `eval` scores them.

use std::path::PathBuf;
use std::process::{Command, Output};

use miniautoml_intent_model::Classifier;
use miniautoml_test_support::repo_root;

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_intent-classification"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn part(n: u8) -> String {
    repo_root()
        .join(format!("testdata/tweet_emotion/tweet_emotion_part{n}.csv"))
        .display()
        .to_string()
}

#[test]
fn train_then_eval_on_local_files() {
    let dir: PathBuf = std::env::temp_dir().join(format!("intent-cli-{}", std::process::id()));
    let out = dir.join("model");
    let output = trainer(&[
        "train",
        "--data",
        &part(1),
        &part(2),
        "--out",
        out.to_str().unwrap(),
        "--param",
        "EPOCHS=3",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let log = text(&output);
    assert!(log.contains("epoch   3"), "{log}");
    assert!(log.contains("test accuracy"), "{log}");
    let classifier = Classifier::load_dir(&out).unwrap();
    assert_eq!(classifier.manifest().hyperparameters["EPOCHS"], "3");

    let output = trainer(&["eval", "--model", out.to_str().unwrap(), "--data", &part(2)]);
    assert!(output.status.success(), "{}", text(&output));
    let printed = text(&output);
    let value = |key: &str| -> f64 {
        let line = printed
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{printed}"));
        line[key.len()..].trim().parse().unwrap()
    };
    assert_eq!(value("examples"), 294.0);
    // Part 2 was mostly trained on: well above chance.
    assert!(value("accuracy") > 0.8, "{printed}");
    assert!((0.0..=1.0).contains(&value("macro-F1")), "{printed}");

    // A label the model never saw is an error naming the line.
    let unknown = dir.join("unknown.csv");
    std::fs::write(&unknown, "\"so scared\",\"fear\"\n").unwrap();
    let output = trainer(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        unknown.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("line 1: label \"fear\" is not one the model knows"),
        "{}",
        text(&output)
    );

    // A model with a corrupt file is refused.
    let vocabulary = out.join("vocab.json");
    let mut bytes = std::fs::read(&vocabulary).unwrap();
    bytes.push(b' ');
    std::fs::write(&vocabulary, bytes).unwrap();
    let output = trainer(&["eval", "--model", out.to_str().unwrap(), "--data", &part(2)]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("vocab.json is corrupt"),
        "{}",
        text(&output)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_parameter_is_named() {
    let output = trainer(&[
        "train",
        "--data",
        &part(1),
        "--out",
        "/nonexistent",
        "--param",
        "BATCH_SIZE=0",
    ]);
    assert!(!output.status.success());
    assert!(text(&output).contains("BATCH_SIZE=\"0\""), "{}", text(&output));
    let output = trainer(&[
        "train",
        "--data",
        &part(1),
        "--out",
        "/nonexistent",
        "--param",
        "EPOCHS",
    ]);
    assert!(text(&output).contains("expected NAME=VALUE"), "{}", text(&output));
}

#[test]
fn the_same_data_and_seed_give_the_same_model_bit_for_bit() {
    let dir: PathBuf = std::env::temp_dir().join(format!("intent-seed-{}", std::process::id()));
    let train = |name: &str, seed: &str| {
        let out = dir.join(name);
        let output = trainer(&[
            "train",
            "--data",
            &part(2),
            "--out",
            out.to_str().unwrap(),
            "--param",
            &format!("SEED={seed}"),
        ]);
        assert!(output.status.success(), "{}", text(&output));
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let (first, again, other) = (train("a", "7"), train("b", "7"), train("c", "8"));
    assert!(first == again, "two runs with SEED=7 differ");
    assert!(first != other, "SEED=8 gave the same model as SEED=7");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_learning_rate_that_diverges_ends_training_with_the_reason() {
    let dir: PathBuf = std::env::temp_dir().join(format!("intent-diverge-{}", std::process::id()));
    let output = trainer(&[
        "train",
        "--data",
        &part(1),
        "--out",
        dir.to_str().unwrap(),
        "--param",
        "ARCHITECTURE=embedding-bag",
        "--param",
        "LR=1e30",
        "--param",
        "EPOCHS=3",
    ]);
    assert!(!output.status.success(), "{}", text(&output));
    let log = text(&output);
    assert!(
        log.contains("intent-classification: diverged at epoch ")
            && log.contains(": loss is not finite; lower LR"),
        "{log}"
    );
    assert!(!dir.exists(), "a diverged run wrote artifacts");
}
