//! Accept loop and per-connection tasks.
//!
//! Not `axum::serve`: a drop fault must close one connection without answering,
//! so each connection gets a kill switch that the request pipeline can pull.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Put into each request's extensions; `kill` closes its connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnControl {
    kill: Arc<Notify>,
}

impl ConnControl {
    pub(crate) fn kill(&self) {
        // notify_one keeps a permit if the connection task is not waiting yet.
        self.kill.notify_one();
    }
}

/// How long in-flight requests get to finish once shutdown starts.
const GRACE: Duration = Duration::from_secs(2);

/// Serves until `shutdown` turns true or its sender is dropped.
pub(crate) async fn serve(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set does not grow under load.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, app.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(GRACE + Duration::from_millis(500), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// Resolves once shutdown is requested (or the handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped, which also means "stop".
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn connection(stream: TcpStream, app: Router, mut shutdown: watch::Receiver<bool>) {
    // Small JSON answers: do not let Nagle delay them.
    let _ = stream.set_nodelay(true);
    let control = ConnControl {
        kill: Arc::new(Notify::new()),
    };
    let kill = control.kill.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(control.clone());
        app.clone().oneshot(req)
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Dropping the connection future closes the socket without a response.
        _ = kill.notified() => {}
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}
