//! Limits on connections, against clients that hold them open without finishing a
//! request (slowloris) or that open more than their share:
//!
//! - a timeout for reading a request's headers (hyper closes a connection whose request
//!   head has not fully arrived in time; it also bounds how long an idle keep-alive
//!   connection waits for its next request), and the same bound on a new connection's
//!   first request, which also covers a connection that sends nothing at all;
//! - a bound on the connections open at once from one client address, and on all of
//!   them together: a connection beyond either is closed as soon as it is accepted.
//!   IPv6 clients are counted by their /64 network, since one host usually holds a
//!   whole /64.
//!
//! Behind a reverse proxy every connection comes from the proxy's address: set
//! `per_client` to 0 (no bound) there, or above what the proxy opens.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Default of [`ConnLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`ConnLimits::per_client`].
pub const DEFAULT_PER_CLIENT: usize = 256;

/// How long and how many connections a server keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Longest a client may take to send a request's headers (and a new connection its
    /// first request, and an idle keep-alive connection its next one).
    pub header_read_timeout: Duration,
    /// Most connections open at once from one client address (an IPv6 client: its /64);
    /// 0: no bound.
    pub per_client: usize,
    /// Most connections open at once in all; 0: no bound. The default is three quarters
    /// of the process's file descriptor limit, so that connections can never take the
    /// descriptors the store needs.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    /// 10 s, 256 per client, 3/4 of the descriptor limit in all (`[limits]` overrides).
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            per_client: DEFAULT_PER_CLIENT,
            max_connections: default_max_connections(),
        }
    }
}

/// Three quarters of the soft limit on open file descriptors (none if unlimited).
fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    match limit.current {
        Some(n) => usize::try_from(n / 4 * 3).unwrap_or(usize::MAX).max(1),
        None => 0,
    }
}

impl ConnLimits {
    /// Applies the header read timeout to a server's HTTP settings (hyper's HTTP/1
    /// `header_read_timeout`; axum_server's builder has a timer installed already).
    pub fn configure<A: axum_server::Address, Acc>(
        &self,
        server: axum_server::Server<A, Acc>,
    ) -> axum_server::Server<A, Acc> {
        let mut server = server.first_request_timeout(self.header_read_timeout);
        server
            .http_builder()
            .http1()
            .header_read_timeout(self.header_read_timeout);
        server
    }
}

/// What connections are counted by: the IPv4 address, or the IPv6 /64 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(u32),
    V6Net(u64),
}

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<ClientKey, usize>,
    /// Connections refused since the last warning, and when that was.
    refused: u64,
    last_warning: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    per_client: usize,
    max_connections: usize,
    counts: Mutex<Counts>,
}

/// Why a connection was closed on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its client already had `per_client` connections open.
    PerClient,
    /// The server already had `max_connections` open.
    Total,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::PerClient => "too many connections from one client",
            Refused::Total => "too many connections",
        })
    }
}

impl std::error::Error for Refused {}

/// An axum_server acceptor that counts open connections, per client and in all, and
/// closes those beyond the bounds at once. Innermost: TLS goes around it
/// (`RustlsAcceptor::acceptor(limiter)`), so a refused connection costs no handshake.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    shared: Arc<Shared>,
}

/// A warning about refused connections at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl ConnLimiter {
    /// A limiter enforcing `limits`' bounds.
    pub fn new(limits: &ConnLimits) -> Self {
        ConnLimiter {
            shared: Arc::new(Shared {
                per_client: limits.per_client,
                max_connections: limits.max_connections,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Counts a new connection from `peer` (unknown: counted in the total only), or
    /// refuses it. The connection is counted until the guard is dropped.
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<ConnGuard, Refused> {
        let key = peer.map(ClientKey::of);
        let shared = &self.shared;
        let mut counts = shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        let refused = if shared.max_connections > 0 && counts.total >= shared.max_connections {
            Some(Refused::Total)
        } else if let Some(key) = key
            && shared.per_client > 0
            && counts.per_client.get(&key).copied().unwrap_or(0) >= shared.per_client
        {
            Some(Refused::PerClient)
        } else {
            None
        };
        if let Some(why) = refused {
            counts.refused += 1;
            let now = Instant::now();
            if counts
                .last_warning
                .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
            {
                tracing::warn!(
                    reason = %why,
                    refused = counts.refused,
                    client = ?peer,
                    per_client = shared.per_client,
                    max_connections = shared.max_connections,
                    "closing connections beyond the bounds"
                );
                counts.refused = 0;
                counts.last_warning = Some(now);
            }
            return Err(why);
        }
        counts.total += 1;
        if let Some(key) = key {
            *counts.per_client.entry(key).or_insert(0) += 1;
        }
        Ok(ConnGuard {
            shared: shared.clone(),
            key,
        })
    }

    /// Connections open now: in all, and from `peer`'s address.
    pub fn open(&self, peer: IpAddr) -> (usize, usize) {
        let counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = counts
            .per_client
            .get(&ClientKey::of(peer))
            .copied()
            .unwrap_or(0);
        (counts.total, mine)
    }
}

/// One admitted connection; uncounted when dropped, however the connection ends.
#[derive(Debug)]
pub struct ConnGuard {
    shared: Arc<Shared>,
    key: Option<ClientKey>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(n) = counts.per_client.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&key);
            }
        }
    }
}

/// A connection with its place in the counts.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    _guard: ConnGuard,
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S> Accept<TcpStream, S> for ConnLimiter {
    type Stream = Limited<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        std::future::ready(match self.admit(peer) {
            Ok(guard) => Ok((
                Limited {
                    inner: stream,
                    _guard: guard,
                },
                service,
            )),
            // The stream is dropped here: the connection is closed at once.
            Err(why) => Err(io::Error::new(io::ErrorKind::ConnectionRefused, why)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn limiter(per_client: usize, max_connections: usize) -> ConnLimiter {
        ConnLimiter::new(&ConnLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            per_client,
            max_connections,
        })
    }

    #[test]
    fn a_client_beyond_its_bound_is_refused_until_one_of_its_connections_ends() {
        let l = limiter(3, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut held: Vec<ConnGuard> = (0..3).map(|_| l.admit(Some(a)).unwrap()).collect();
        assert_eq!(l.admit(Some(a)).unwrap_err(), Refused::PerClient);
        // Another client is not affected.
        let other = l.admit(Some(b)).unwrap();
        assert_eq!(l.open(a), (4, 3));
        held.pop();
        assert_eq!(l.open(a), (3, 2));
        held.push(l.admit(Some(a)).unwrap());
        drop(held);
        drop(other);
        assert_eq!(l.open(a), (0, 0));
        assert!(
            l.shared.counts.lock().unwrap().per_client.is_empty(),
            "no entry is kept for a client with nothing open"
        );
    }

    #[test]
    fn the_total_bound_holds_across_clients() {
        let l = limiter(0, 2);
        let g1 = l.admit(Some("192.0.2.1".parse().unwrap())).unwrap();
        let _g2 = l.admit(None).unwrap();
        assert_eq!(
            l.admit(Some("192.0.2.3".parse().unwrap())).unwrap_err(),
            Refused::Total
        );
        drop(g1);
        l.admit(Some("192.0.2.3".parse().unwrap())).unwrap();
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let l = limiter(2, 0);
        let _a = l.admit(Some("2001:db8:1:2::1".parse().unwrap())).unwrap();
        let _b = l
            .admit(Some("2001:db8:1:2:ffff::9".parse().unwrap()))
            .unwrap();
        assert_eq!(
            l.admit(Some("2001:db8:1:2:abcd::1".parse().unwrap()))
                .unwrap_err(),
            Refused::PerClient
        );
        let _c = l.admit(Some("2001:db8:1:3::1".parse().unwrap())).unwrap();
        let _v4 = l.admit(Some("192.0.2.7".parse().unwrap())).unwrap();
        let _mapped = l.admit(Some("::ffff:192.0.2.7".parse().unwrap())).unwrap();
        assert_eq!(
            l.admit(Some("192.0.2.7".parse().unwrap())).unwrap_err(),
            Refused::PerClient
        );
    }

    #[test]
    fn zero_means_no_bound() {
        let l = limiter(0, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| l.admit(Some(ip)).unwrap()).collect();
        assert_eq!(l.open(ip), (1000, 1000));
        drop(held);
    }

    #[test]
    fn the_default_total_bound_leaves_descriptors_for_the_store() {
        let n = default_max_connections();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        if let Some(soft) = limit.current {
            assert!(n as u64 <= soft, "{n} of {soft}");
            assert!(n > 0);
        }
    }
}
