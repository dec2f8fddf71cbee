//! An HTTP proxy in front of kube-apiserver that holds back watch events for a fixed
//! delay, and nothing else: the operator's own reads and writes are answered at once
//! while its watch cache lags. It delays every watch, or only the watches whose query
//! contains a marker (one lane's watch: see `Lane::watch_timeout_secs`). That is the interleaving a real cluster produces
//! under load, on demand. The operator talks plain HTTP to the proxy (a kubeconfig of
//! its own); the proxy talks TLS to the API server with the admin identity.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ControlPlane;

pub struct WatchDelayProxy {
    pub addr: SocketAddr,
    /// A kubeconfig that points at the proxy.
    pub kubeconfig: PathBuf,
    /// The current delay, in milliseconds (see [`WatchDelayProxy::set_delay`]).
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

struct Upstream {
    http: reqwest::Client,
    base: String,
    delay_ms: Arc<AtomicU64>,
    /// Only watches whose query contains this are delayed (all when `None`).
    only: Option<String>,
}

impl WatchDelayProxy {
    pub async fn start(cp: &ControlPlane, delay: Duration) -> WatchDelayProxy {
        Self::start_matching(cp, delay, None).await
    }

    /// Delays only the watches whose query string contains `marker`. The proxy talks to
    /// the API server with the admin identity.
    pub async fn start_matching(
        cp: &ControlPlane,
        delay: Duration,
        marker: Option<&str>,
    ) -> WatchDelayProxy {
        let mut identity = read_pki(cp, "admin.crt");
        identity.extend(read_pki(cp, "admin.key"));
        let http = https_client(cp)
            .identity(reqwest::Identity::from_pem(&identity).expect("the admin identity"))
            .build()
            .expect("an HTTPS client");
        let port =
            std::fs::read_to_string(cp.dir.join("apiserver-port")).expect("read apiserver-port");
        let base = format!("https://127.0.0.1:{}", port.trim());
        let kubeconfig = |addr: SocketAddr| {
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    \
                 server: http://{addr}\nusers:\n- name: proxy\n  user: {{}}\ncontexts:\n\
                 - name: proxy\n  context:\n    cluster: proxy\n    user: proxy\n\
                 current-context: proxy\n"
            )
        };
        Self::serve(http, base, delay, marker, kubeconfig).await
    }

    /// In front of `upstream`, a TLS endpoint of the API server (e.g. a TCP proxy),
    /// forwarding the client's own bearer token: the client keeps its identity. The
    /// kubeconfig is `token_kubeconfig` pointed at the proxy. No delay until
    /// [`WatchDelayProxy::set_delay`].
    pub async fn in_front_of(
        cp: &ControlPlane,
        upstream: SocketAddr,
        marker: Option<&str>,
        token_kubeconfig: &Path,
    ) -> WatchDelayProxy {
        let http = https_client(cp).build().expect("an HTTPS client");
        let text = std::fs::read_to_string(token_kubeconfig).expect("read the kubeconfig");
        let kubeconfig = move |addr: SocketAddr| {
            text.lines()
                .map(|line| match line.trim_start().strip_prefix("server: ") {
                    Some(_) => format!("    server: http://{addr}"),
                    None => line.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        Self::serve(
            http,
            format!("https://{upstream}"),
            Duration::ZERO,
            marker,
            kubeconfig,
        )
        .await
    }

    /// Changes the delay of watch events that arrive from now on (order is kept).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    async fn serve(
        http: reqwest::Client,
        base: String,
        delay: Duration,
        marker: Option<&str>,
        kubeconfig: impl FnOnce(SocketAddr) -> String,
    ) -> WatchDelayProxy {
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let upstream = Arc::new(Upstream {
            http,
            base,
            delay_ms: delay_ms.clone(),
            only: marker.map(str::to_owned),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let app = axum::Router::new().fallback(forward).with_state(upstream);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let path = tempfile::Builder::new()
            .prefix("vio-watch-delay-")
            .suffix(".kubeconfig")
            .tempfile()
            .expect("a kubeconfig file")
            .keep()
            .expect("keep the kubeconfig")
            .1;
        std::fs::write(&path, kubeconfig(addr)).expect("write the kubeconfig");
        WatchDelayProxy {
            addr,
            kubeconfig: path,
            delay_ms,
            task,
        }
    }
}

fn read_pki(cp: &ControlPlane, name: &str) -> Vec<u8> {
    std::fs::read(cp.dir.join("pki").join(name)).unwrap_or_else(|e| panic!("read pki/{name}: {e}"))
}

/// A client that trusts the cluster CA, without an identity of its own.
fn https_client(cp: &ControlPlane) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&read_pki(cp, "ca.crt")).expect("the cluster CA"),
        )
}

impl Drop for WatchDelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hop-by-hop and framing headers are the proxy's own business on each side.
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive"
    )
}

async fn forward(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let query = parts.uri.query().unwrap_or_default();
    let is_watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let delayed = is_watch && up.only.as_deref().is_none_or(|m| query.contains(m));
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut request = up
        .http
        .request(parts.method.clone(), format!("{}{path}", up.base))
        .body(body);
    for (name, value) in parts.headers.iter().filter(|(n, _)| forwarded(n)) {
        request = request.header(name, value);
    }
    let mut upstream = match request.send().await {
        Ok(resp) => resp,
        Err(err) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(err.to_string()))
                .unwrap_or_default();
        }
    };
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers().iter().filter(|(n, _)| forwarded(n)) {
        response = response.header(name, value);
    }
    let delay = if delayed {
        Duration::from_millis(up.delay_ms.load(Ordering::Relaxed))
    } else {
        Duration::ZERO
    };
    // A delay line: each chunk is released `delay` after it arrived, in order.
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    tokio::spawn(async move {
        while let Ok(Some(chunk)) = upstream.chunk().await {
            if tx.send((Instant::now() + delay, chunk)).is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let (due, chunk) = rx.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((Ok::<_, Infallible>(chunk), rx))
    });
    response.body(Body::from_stream(stream)).unwrap_or_default()
}
