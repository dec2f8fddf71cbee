//! A TCP proxy for partition tests: put it between a process and a server, then
//! [`TcpProxy::cut`] every connection at once (a network partition) and
//! [`TcpProxy::restore`] it later. It forwards bytes only, so TLS still verifies
//! end to end against the upstream's certificate (as long as the client dials an
//! address the certificate names, e.g. 127.0.0.1).

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Forwards every byte both ways.
    Up,
    /// Closes new connections as soon as they are accepted (the peer sees EOF or a
    /// reset at once, like a refused connection).
    Refusing,
    /// Accepts new connections and never answers (requests hang until the client's
    /// own timeout, like packets lost on the way).
    BlackHole,
    /// The proxy was dropped: every task ends.
    Gone,
}

/// A running proxy; dropping it closes the listener and every connection.
pub struct TcpProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (link, _) = watch::channel(Link::Up);
        let accept = tokio::spawn(accept_loop(listener, upstream, link.clone()));
        TcpProxy { addr, link, accept }
    }

    /// The address clients dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection at once and refuses new ones until
    /// [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.set(Link::Refusing);
    }

    /// Closes every open connection at once; new ones are accepted and then get no
    /// answer until [`TcpProxy::restore`] (which closes them).
    pub fn black_hole(&self) {
        self.set(Link::BlackHole);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.set(Link::Up);
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// Notifies the connections only on a real change: each connection ends on the
    /// first change it sees, so a quick cut-and-restore still closes it.
    fn set(&self, to: Link) {
        self.link
            .send_if_modified(|l| std::mem::replace(l, to) != to);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.link.send_replace(Link::Gone);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, link: watch::Sender<Link>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, most likely: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        // Subscribed before the state is read: a change after this point is seen.
        let rx = link.subscribe();
        tokio::spawn(connection(client, upstream, rx));
    }
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    let state = *link.borrow_and_update();
    match state {
        Link::Up => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = copy_bidirectional(&mut client, &mut server) => {}
                // Any change cuts this connection; both sockets drop here.
                _ = link.changed() => {}
            }
        }
        Link::Refusing | Link::Gone => {}
        Link::BlackHole => {
            // Held open, unanswered, until the link changes; then closed.
            let _ = link.changed().await;
        }
    }
}
