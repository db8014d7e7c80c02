//! `kubectl miniautoml`: MiniAutoML without a browser. Runs and their live progress, curves as a
//! PNG, compare, logs, predictions, dataset uploads, and the console opened signed in. It talks
//! to the Kubernetes API as the kubeconfig's user (so it sees what `kubectl` sees) and, for what
//! only the operator has (every epoch of a long run, predictions), to the console's JSON API
//! through `kubectl port-forward` with a token for the operator's audience.
//!
//! krew's conventions: `-n`, `-A`, `--context`, `--kubeconfig`, `-o table|wide|json|yaml`.

mod api;
mod cluster;
mod curves;
mod flags;
mod follow;
mod output;
mod upload;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::flags::Global;

/// MiniAutoML from kubectl.
#[derive(Parser, Debug)]
#[command(name = "kubectl miniautoml", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The runs (TrainingJobs): phase, epoch, queue position, dataset, metrics, duration.
    Runs,
    /// One run; with --follow, a live progress bar per run until every one has ended.
    Run {
        /// TrainingJob names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Follow until the runs end.
        #[arg(short, long)]
        follow: bool,
    },
    /// Curves of runs' epoch metrics, as a PNG (`-o curves.png`).
    Curves {
        /// TrainingJob names.
        #[arg(required = true)]
        names: Vec<String>,
        /// The metric (default: accuracy, else loss).
        #[arg(long)]
        metric: Option<String>,
        #[arg(long, default_value_t = 1000)]
        width: u32,
        #[arg(long, default_value_t = 600)]
        height: u32,
    },
    /// Runs side by side: parameters, final metrics, dataset, code version, phase.
    Compare {
        #[arg(required = true, num_args = 2..=10)]
        names: Vec<String>,
    },
    /// A run's pods' logs.
    Logs {
        name: String,
        /// Lines from the end of each pod's log.
        #[arg(long, default_value_t = 100)]
        tail: i64,
    },
    /// A document through a ModelDeployment's predictor: the label and each label's score.
    Predict { deployment: String, text: String },
    /// Datasets.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Opens the console: port-forwards the operator and prints a signed-in URL.
    Console {
        /// The local port (default: any free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[derive(Subcommand, Debug)]
enum DatasetCommand {
    /// Uploads a file with the namespace's upload key into raw/<namespace>/, then appends a
    /// commit reading it to the Dataset.
    Upload {
        file: PathBuf,
        /// The Dataset to append the commit to.
        #[arg(long)]
        dataset: String,
        /// The commit message.
        #[arg(short, long, default_value = "uploaded with kubectl miniautoml")]
        message: String,
        /// Wait until the operator has ingested the commit (or says why not).
        #[arg(long)]
        wait: bool,
        /// The bucket (chart `storage.bucket`).
        #[arg(long, default_value = "miniautoml")]
        bucket: String,
        /// An S3 endpoint to upload to (default: the bundled store, through a port-forward).
        #[arg(long)]
        s3_endpoint: Option<String>,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // A wrong -o is said before anything is asked of the cluster.
    if !matches!(cli.command, Command::Curves { .. }) {
        cli.global.format()?;
    }
    let target = cluster::Target::connect(&cli.global).await?;
    let global = &cli.global;
    match cli.command {
        Command::Runs => {
            let runs = target.runs().await?;
            print!("{}", output::runs(&runs, global.format()?)?);
        }
        Command::Run { names, follow: false } => {
            for name in names {
                let run = target.run(&name).await?;
                print!("{}", output::run(&run, global.format()?)?);
            }
        }
        Command::Run { names, follow: true } => follow::follow(&target, &names).await?,
        Command::Curves {
            names,
            metric,
            width,
            height,
        } => {
            let file = match global.output.as_str() {
                "table" => PathBuf::from("curves.png"),
                path if path.ends_with(".png") => PathBuf::from(path),
                other => anyhow::bail!("curves writes a PNG: -o FILE.png, not {other:?}"),
            };
            let mut series = Vec::new();
            let mut partial = Vec::new();
            let console = api::Console::open_if_token(&target, global).await?;
            for name in &names {
                let run = target.run(name).await?;
                let (points, complete) = match &console {
                    Some(console) => (console.epochs(&run).await?, true),
                    None => api::status_epochs(&run),
                };
                if !complete {
                    partial.push(name.clone());
                }
                series.push((name.clone(), points));
            }
            let metric = curves::metric(metric.as_deref(), &series)?;
            let png = curves::render(&series, &metric, width, height)?;
            std::fs::write(&file, png).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!(
                "{}: {metric} of {}, {width}×{height}",
                file.display(),
                names.join(", ")
            );
            if !partial.is_empty() {
                eprintln!(
                    "note: {} drawn from the epochs their status keeps (a long run's status keeps 32); \
                     pass --token or --service-account for every epoch",
                    partial.join(", ")
                );
            }
        }
        Command::Compare { names } => {
            let mut runs = Vec::new();
            for name in &names {
                runs.push(std::sync::Arc::new(target.run(name).await?));
            }
            print!("{}", output::compare(&runs, global.format()?)?);
        }
        Command::Logs { name, tail } => print!("{}", target.logs(&name, tail).await?),
        Command::Predict { deployment, text } => {
            let console = api::Console::open(&target, global).await?;
            let prediction = console.predict(&target.namespace()?, &deployment, &text).await?;
            print!("{}", output::prediction(&prediction, global.format()?)?);
        }
        Command::Dataset(DatasetCommand::Upload {
            file,
            dataset,
            message,
            wait,
            bucket,
            s3_endpoint,
        }) => {
            let store = upload::Store {
                endpoint: s3_endpoint,
                bucket,
                release_namespace: global.release_namespace.clone(),
                release: global.release.clone(),
            };
            upload::upload(&target, &store, &file, &dataset, &message, wait).await?
        }
        Command::Console { port } => api::open_console(&target, global, port).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
