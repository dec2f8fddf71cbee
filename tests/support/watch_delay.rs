//! An HTTP proxy in front of kube-apiserver that holds back every watch event for a
//! fixed delay, and nothing else: the operator's own reads and writes are answered at
//! once while its watch cache lags. That is the interleaving a real cluster produces
//! under load, on demand. The operator talks plain HTTP to the proxy (a kubeconfig of
//! its own); the proxy talks TLS to the API server with the admin identity.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    task: tokio::task::JoinHandle<()>,
}

struct Upstream {
    http: reqwest::Client,
    base: String,
    delay: Duration,
}

impl WatchDelayProxy {
    pub async fn start(cp: &ControlPlane, delay: Duration) -> WatchDelayProxy {
        let pki = cp.dir.join("pki");
        let read = |name: &str| {
            std::fs::read(pki.join(name)).unwrap_or_else(|e| panic!("read pki/{name}: {e}"))
        };
        let mut identity = read("admin.crt");
        identity.extend(read("admin.key"));
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&read("ca.crt")).expect("the cluster CA"),
            )
            .identity(reqwest::Identity::from_pem(&identity).expect("the admin identity"))
            .build()
            .expect("an HTTPS client");
        let port =
            std::fs::read_to_string(cp.dir.join("apiserver-port")).expect("read apiserver-port");
        let upstream = Arc::new(Upstream {
            http,
            base: format!("https://127.0.0.1:{}", port.trim()),
            delay,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let app = axum::Router::new().fallback(forward).with_state(upstream);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = tempfile::Builder::new()
            .prefix("vio-watch-delay-")
            .suffix(".kubeconfig")
            .tempfile()
            .expect("a kubeconfig file")
            .keep()
            .expect("keep the kubeconfig")
            .1;
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    \
                 server: http://{addr}\nusers:\n- name: proxy\n  user: {{}}\ncontexts:\n\
                 - name: proxy\n  context:\n    cluster: proxy\n    user: proxy\n\
                 current-context: proxy\n"
            ),
        )
        .expect("write the kubeconfig");
        WatchDelayProxy {
            addr,
            kubeconfig,
            task,
        }
    }
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
    let is_watch = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
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
    let delay = if is_watch { up.delay } else { Duration::ZERO };
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
