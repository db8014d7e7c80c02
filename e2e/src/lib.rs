//! What the end-to-end suite drives, as a user would: `kubectl`, `helm`, `grpcurl` and `curl`
//! on the PATH, against the cluster `KUBECONFIG` names, reaching Services only through
//! `kubectl port-forward` (loopback). Nothing here knows which cluster it is on.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod browser;
pub mod rbac;

/// The repository root (charts, examples, test data, hack scripts).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ sits in the repository root")
}

/// A path under the repository root, as a string for command lines.
pub fn repo_path(relative: &str) -> String {
    repo_root().join(relative).display().to_string()
}

/// Runs `program args`; its stdout, or `Err` with the command line, exit status and stderr.
pub fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e} (is it on PATH? `make e2e` puts the pinned tools there)"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// As [`try_run`], panicking on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `kubectl args`, stdout.
pub fn kubectl(args: &[&str]) -> String {
    run("kubectl", args)
}

/// `kubectl args -o json`, parsed.
pub fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let text = kubectl(&all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {text}"))
}

/// `kubectl apply -f -` of `manifest`.
pub fn kubectl_apply(namespace: &str, manifest: &str) -> String {
    let mut child = Command::new("kubectl")
        .args(["apply", "-n", namespace, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), manifest.as_bytes())
        .expect("writing to kubectl");
    let output = child.wait_with_output().expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl apply failed: {}\n{manifest}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `helm args`, stdout.
pub fn helm(args: &[&str]) -> String {
    run("helm", args)
}

/// Polls `check` every `every` until it returns `Some`, at most `timeout`; panics naming
/// `what` and the last state `check` described.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(found) => return found,
            Err(state) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {state}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// `kubectl port-forward` to a Service or pod on a free loopback port, stopped when dropped.
pub struct PortForward {
    child: Child,
    /// The loopback port forwarded.
    pub port: u16,
}

impl PortForward {
    /// Forwards to `target` (`svc/NAME` or `pod/NAME`) port `remote` in `namespace`.
    pub fn start(namespace: &str, target: &str, remote: u16) -> PortForward {
        wait_until(
            &format!("kubectl port-forward {target}"),
            Duration::from_secs(60),
            Duration::from_secs(1),
            || PortForward::try_start(namespace, target, remote),
        )
    }

    fn try_start(namespace: &str, target: &str, remote: u16) -> Result<PortForward, String> {
        let mut child = Command::new("kubectl")
            .args([
                "port-forward",
                "-n",
                namespace,
                target,
                &format!(":{remote}"),
                "--address=127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        // "Forwarding from 127.0.0.1:41234 -> 8333"
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        // kubectl prints a line per connection: keep reading, or a full pipe stalls it.
        std::thread::spawn(move || for _ in stdout.lines().map_while(Result::ok) {});
        let port = line
            .split_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok());
        match port {
            Some(port) => Ok(PortForward { child, port }),
            None => {
                let _ = child.kill();
                let output = child.wait_with_output().map_err(|e| e.to_string())?;
                Err(format!("{line}{}", String::from_utf8_lossy(&output.stderr)))
            }
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl logs -f` of a pod into memory, from now until the pod ends or this is dropped.
pub struct LogFollower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LogFollower {
    /// Follows `pod` in `namespace`.
    pub fn start(namespace: &str, pod: &str) -> LogFollower {
        let mut child = Command::new("kubectl")
            .args(["logs", "-f", "-n", namespace, pod])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl runs");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("log lines").push(line);
            }
        });
        LogFollower { child, lines }
    }

    /// The lines read so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The timestamp (RFC 3339) of the first JSON log line whose message is `message`.
pub fn logged_at(lines: &[String], message: &str) -> Option<String> {
    lines.iter().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        (entry["fields"]["message"] == message).then(|| entry["timestamp"].as_str().map(String::from))?
    })
}

/// A string field of a JSON value at a `/`-separated pointer, or "".
pub fn text(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The figures a run measured, printed at the end.
#[derive(Default)]
pub struct Figures(Vec<(String, String)>);

impl Figures {
    /// Records a duration.
    pub fn time(&mut self, name: &str, took: Duration) {
        println!("[e2e] {name}: {:.1} s", took.as_secs_f64());
        self.0.push((name.into(), format!("{:.1} s", took.as_secs_f64())));
    }

    /// Records any other value.
    pub fn note(&mut self, name: &str, value: impl std::fmt::Display) {
        println!("[e2e] {name}: {value}");
        self.0.push((name.into(), value.to_string()));
    }

    /// The table of everything recorded.
    pub fn table(&self) -> String {
        let width = self.0.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        self.0
            .iter()
            .map(|(name, value)| format!("  {name:width$}  {value}\n"))
            .collect()
    }
}

/// Prints a step heading and returns when it started.
pub fn step(what: &str) -> Instant {
    println!("\n[e2e] ==> {what}");
    Instant::now()
}

/// The path of a file of the reference data set.
pub fn testdata(file: &str) -> PathBuf {
    repo_root().join("testdata/tweet_emotion").join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_found_by_message() {
        let lines = vec![
            "not json".to_string(),
            r#"{"timestamp":"2026-12-02T10:00:01.5Z","level":"INFO","fields":{"message":"became the leader"}}"#.into(),
        ];
        assert_eq!(
            logged_at(&lines, "became the leader").as_deref(),
            Some("2026-12-02T10:00:01.5Z")
        );
        assert_eq!(logged_at(&lines, "released the leader lease"), None);
    }

    #[test]
    fn fields_are_read_as_text() {
        let value = serde_json::json!({"status": {"phase": "Succeeded", "runId": "3", "n": 2963}});
        assert_eq!(text(&value, "/status/phase"), "Succeeded");
        assert_eq!(text(&value, "/status/n"), "2963");
        assert_eq!(text(&value, "/status/missing"), "");
    }
}
