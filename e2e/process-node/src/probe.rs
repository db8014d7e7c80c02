//! Container probes, run against the pod's IP as the kubelet runs them: HTTP GET (a status of
//! 200–399 passes), TCP connect, gRPC health `Check` (SERVING passes) and exec (exit 0 passes;
//! the command runs on the node with the container's environment).

use std::{net::SocketAddr, time::Duration};

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// A probe's timing, with the kubelet's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// One probe's limit.
    pub timeout: Duration,
    /// Successes in a row that count as passing.
    pub success_threshold: u32,
    /// Failures in a row that count as failing.
    pub failure_threshold: u32,
}

impl Timing {
    /// The probe's timing, defaults filled in.
    pub fn of(probe: &Probe) -> Timing {
        let seconds = |value: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(value.unwrap_or(default)).unwrap_or(0))
        };
        let count = |value: Option<i32>| u32::try_from(value.unwrap_or(0)).unwrap_or(0);
        Timing {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold).max(1),
            failure_threshold: if probe.failure_threshold.is_some() {
                count(probe.failure_threshold).max(1)
            } else {
                3
            },
        }
    }
}

/// Runs `probe` once for `container` at `pod_ip`: `Ok(())` passes, `Err` says why not.
pub async fn run(
    probe: &Probe,
    container: &Container,
    pod_ip: &str,
    env: &[(String, String)],
) -> Result<(), String> {
    let timeout = Timing::of(probe).timeout;
    match tokio::time::timeout(timeout, run_once(probe, container, pod_ip, env)).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

async fn run_once(
    probe: &Probe,
    container: &Container,
    pod_ip: &str,
    env: &[(String, String)],
) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err("HTTPS probes are not supported by the process node".into());
        }
        let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let port = port(&http.port, container)?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: String = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| format!("{}: {}\r\n", h.name, h.value))
            .collect();
        return http_get(&host, port, &path, &headers).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let port = port(&tcp.port, container)?;
        return TcpStream::connect((host.as_str(), port))
            .await
            .map(|_| ())
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("bad gRPC probe port {}", grpc.port))?;
        return grpc_check(pod_ip, port, grpc.service.clone().unwrap_or_default()).await;
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let Some((program, args)) = command.split_first() else {
            return Err("exec probe without a command".into());
        };
        let output = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("exec {program}: {e}"))?;
        return if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "command {command:?} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim()
            ))
        };
    }
    Err("the probe sets no handler".into())
}

/// A probe port: a number, or the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).map_err(|_| format!("bad port {number}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

async fn http_get(host: &str, port: u16, path: &str, headers: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/process-node\r\n\
         Accept: */*\r\n{headers}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("http://{host}:{port}{path}: {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() && !head[..read].contains(&b'\n') {
        let n = stream
            .read(&mut head[read..])
            .await
            .map_err(|e| format!("http://{host}:{port}{path}: {e}"))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("http://{host}:{port}{path}: not an HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

async fn grpc_check(ip: &str, port: u16, service: String) -> Result<(), String> {
    let address: SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{ip}:{port}: {e}"))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {address:?} within probe timeout: {e}"))?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|status| format!("health rpc failed: {}", status.message()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("service unhealthy (responded with {other:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, TCPSocketAction};
    use tokio::net::TcpListener;

    fn container() -> Container {
        Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_kubelets() {
        let timing = Timing::of(&Probe::default());
        assert_eq!(timing.period, Duration::from_secs(10));
        assert_eq!(timing.timeout, Duration::from_secs(1));
        assert_eq!((timing.success_threshold, timing.failure_threshold), (1, 3));
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        assert_eq!(port(&IntOrString::String("http".into()), &container()), Ok(8080));
        assert!(port(&IntOrString::String("grpc".into()), &container()).is_err());
    }

    /// Serves one HTTP response with `status` on a loopback port.
    async fn serve_once(status: u16) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let _ = socket.write_all(response.as_bytes()).await;
        });
        port
    }

    fn http_probe(port: u16) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(i32::from(port)),
                path: Some("/ready".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_fail_otherwise() {
        let ok = serve_once(204).await;
        assert_eq!(run(&http_probe(ok), &container(), "127.0.0.1", &[]).await, Ok(()));
        let unavailable = serve_once(503).await;
        let error = run(&http_probe(unavailable), &container(), "127.0.0.1", &[]).await;
        assert_eq!(error, Err("HTTP probe failed with statuscode: 503".into()));
    }

    #[tokio::test]
    async fn tcp_probes_need_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = |port: u16| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(port)),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(run(&probe(port), &container(), "127.0.0.1", &[]).await, Ok(()));
        drop(listener);
        assert!(run(&probe(port), &container(), "127.0.0.1", &[]).await.is_err());
    }
}
