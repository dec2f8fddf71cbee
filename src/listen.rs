//! The metrics listener: `[::]:PORT` accepts IPv4 and IPv6 (dual-stack, whatever the
//! node's `net.ipv6.bindv6only`), and falls back to `0.0.0.0:PORT` on a node whose
//! kernel has IPv6 turned off, so one default works on IPv4, IPv6 and dual-stack
//! clusters.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tracing::warn;

/// Binds `addr`; the IPv6 wildcard is bound dual-stack.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match bind_once(addr) {
        Ok(listener) => Ok(listener),
        Err(err) => match ipv4_fallback(addr, &err) {
            Some(fallback) => {
                warn!(%addr, %fallback, %err, "IPv6 unavailable; listening on IPv4 only");
                bind_once(fallback)
            }
            None => Err(err),
        },
    }
}

fn bind_once(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The IPv4 wildcard on the same port when the IPv6 wildcard cannot be used because
/// the kernel has no IPv6 (`ipv6.disable=1`); any other error (a taken port, a
/// specific address) stands.
fn ipv4_fallback(addr: SocketAddr, err: &io::Error) -> Option<SocketAddr> {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    let no_ipv6 = matches!(err.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL));
    (addr.ip() == Ipv6Addr::UNSPECIFIED && no_ipv6)
        .then(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ipv6_wildcard_falls_back_and_only_without_ipv6() {
        let wildcard: SocketAddr = "[::]:8080".parse().unwrap();
        let no_family = io::Error::from_raw_os_error(97);
        let taken = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(
            ipv4_fallback(wildcard, &no_family),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(ipv4_fallback(wildcard, &taken), None);
        assert_eq!(
            ipv4_fallback("[::1]:8080".parse().unwrap(), &no_family),
            None
        );
        assert_eq!(
            ipv4_fallback("0.0.0.0:8080".parse().unwrap(), &no_family),
            None
        );
    }

    #[tokio::test]
    async fn the_ipv6_wildcard_accepts_ipv4_and_ipv6() {
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            for _ in 0..2 {
                listener.accept().await.unwrap();
            }
        });
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("IPv4 on the IPv6 wildcard");
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            tokio::net::TcpStream::connect(("::1", port))
                .await
                .expect("IPv6 on the IPv6 wildcard");
        } else {
            // No IPv6 on this machine: the IPv4 connection above is the whole claim.
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
        }
        accept.await.unwrap();
    }
}
