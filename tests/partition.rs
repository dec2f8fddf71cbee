//! A leader cut off from the API server (but not from Vultr) must stop writing to
//! Vultr at its renew deadline, cancel its reconciles and exit, while the standby
//! takes over. The partition is a TCP proxy between that replica and the API server.

mod support;

use std::time::Duration;

use support::proxy::{Link, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Echoes every byte back, one task per connection.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Sends `msg` and reads the echo; None if the connection fails or closes first.
async fn round_trip(conn: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    conn.write_all(msg).await.ok()?;
    let mut buf = vec![0; msg.len()];
    match tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// True when the connection ends (EOF or error) within a second.
async fn closes(conn: &mut TcpStream) -> bool {
    let mut buf = [0; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn the_proxy_forwards_cuts_and_restores() {
    let proxy = TcpProxy::start(echo_server().await).await;
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(
        round_trip(&mut open, b"ping").await.as_deref(),
        Some(&b"ping"[..])
    );

    // A cut closes the open connection and refuses new ones.
    proxy.cut();
    assert_eq!(proxy.link(), Link::Refusing);
    assert!(
        closes(&mut open).await,
        "the open connection survived the cut"
    );
    let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(
        closes(&mut fresh).await,
        "a new connection was served while cut"
    );

    // Restored: new connections are forwarded again.
    proxy.restore();
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(
        round_trip(&mut again, b"pong").await.as_deref(),
        Some(&b"pong"[..])
    );

    // A black hole closes open connections and leaves new ones unanswered.
    proxy.black_hole();
    assert!(closes(&mut again).await, "the open connection survived");
    let mut held = TcpStream::connect(proxy.addr()).await.expect("connect");
    held.write_all(b"lost").await.expect("write");
    let mut buf = [0; 4];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), held.read(&mut buf))
            .await
            .is_err(),
        "a black-holed connection answered"
    );
    // A quick cut-and-restore still closes what was open.
    proxy.restore();
    assert!(
        closes(&mut held).await,
        "the held connection survived restore"
    );
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(round_trip(&mut open, b"x").await.is_some());
    proxy.cut();
    proxy.restore();
    assert!(
        closes(&mut open).await,
        "a quick cut-and-restore missed the connection"
    );
}
