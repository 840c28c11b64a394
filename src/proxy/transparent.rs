//! Transparent proxying (README, Transparent proxying): the redirect listeners, the original destination of a
//! redirected connection, and its match to an inbound or outbound listener.
//!
//! A matched connection is handed to the listener it matched, over a channel, so it is served
//! by exactly the code of an explicit listener (protocol detection, tracing, drain). Anything
//! that matches nothing passes through to where it was going, as TCP, untraced.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::policy::effective::{Direction, Listener, RedirectPorts};

/// Connections waiting for a virtual listener; beyond this the redirect listener waits.
const QUEUE: usize = 256;

type Accepted = (TcpStream, SocketAddr);

/// Where a listener's connections come from.
pub enum Incoming {
    /// Its own bound socket.
    Socket(TcpListener),
    /// The redirect listeners, for a virtual listener: never bound, reached by original
    /// destination. Holds the address it stands for.
    Redirected(mpsc::Receiver<Accepted>, SocketAddr),
}

impl From<TcpListener> for Incoming {
    fn from(listener: TcpListener) -> Self {
        Incoming::Socket(listener)
    }
}

impl Incoming {
    pub async fn accept(&mut self) -> io::Result<Accepted> {
        match self {
            Incoming::Socket(listener) => listener.accept().await,
            Incoming::Redirected(rx, _) => match rx.recv().await {
                Some(accepted) => Ok(accepted),
                // The redirect listeners stopped: nothing more comes; wait for our own stop.
                None => std::future::pending().await,
            },
        }
    }

    /// The bound address, or the address a virtual listener stands for.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Incoming::Socket(listener) => listener.local_addr(),
            Incoming::Redirected(_, address) => Ok(*address),
        }
    }
}

/// The original destination of a connection the kernel redirected (`SO_ORIGINAL_DST`, or
/// `IP6T_SO_ORIGINAL_DST` on an IPv6 socket). For a connection that was not redirected it is
/// the connection's own local address.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let address = if stream.local_addr()?.is_ipv6() {
        socket.original_dst_v6()?
    } else {
        socket.original_dst_v4()?
    };
    address
        .as_socket()
        .ok_or_else(|| io::Error::other("original destination is not an IP address"))
}

/// The virtual listeners, by what redirected connections are matched on.
#[derive(Default)]
pub struct Routes {
    /// Outbounds by the service's `address:port`.
    outbound: HashMap<SocketAddr, mpsc::Sender<Accepted>>,
    /// Inbounds by port: the application's port on whatever address the peer used.
    inbound: HashMap<u16, mpsc::Sender<Accepted>>,
}

impl Routes {
    /// Registers a virtual listener and gives the source its connections come from.
    pub fn add(&mut self, listener: &Listener) -> anyhow::Result<Incoming> {
        let address = parse_address(&listener.address)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        match listener.direction {
            Direction::Outbound => self.outbound.insert(normalize(address), tx),
            Direction::Inbound => self.inbound.insert(address.port(), tx),
        };
        Ok(Incoming::Redirected(rx, address))
    }

    /// The listener a redirected connection belongs to, if any.
    fn find(
        &self,
        direction: Direction,
        destination: SocketAddr,
    ) -> Option<&mpsc::Sender<Accepted>> {
        match direction {
            Direction::Outbound => self.outbound.get(&normalize(destination)),
            Direction::Inbound => self.inbound.get(&destination.port()),
        }
    }
}

/// An inbound may name its address by DNS name; only its port matters for matching.
fn parse_address(address: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(parsed) = address.parse() {
        return Ok(parsed);
    }
    let port = address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("listener address {address} has no valid port"))?;
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn normalize(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

/// Binds the two redirect ports, IPv4 and (where the kernel has it) IPv6, and starts
/// dispatching what arrives there.
pub(crate) fn start(
    ports: RedirectPorts,
    routes: Routes,
    drain: crate::drain::Watcher,
) -> anyhow::Result<()> {
    let routes = std::sync::Arc::new(routes);
    let own_ports = std::sync::Arc::new(OwnPorts::default());
    for (direction, port) in [
        (Direction::Inbound, ports.inbound),
        (Direction::Outbound, ports.outbound),
    ] {
        for socket in bind_both(port)? {
            tracing::info!(?direction, address = %socket.local_addr()?, "redirect listener");
            tokio::spawn(serve(
                socket,
                direction,
                routes.clone(),
                own_ports.clone(),
                drain.clone(),
            ));
        }
    }
    Ok(())
}

fn bind_both(port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let listener = super::listener::listen(v4, false)
        .map_err(|e| anyhow::anyhow!("cannot listen on redirect port {v4}: {e}"))?;
    let mut sockets = vec![listener];
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match super::listener::listen(v6, true) {
        Ok(v6) => sockets.push(v6),
        // A kernel without IPv6 redirects no IPv6 traffic either.
        Err(e) => tracing::info!(port, error = %e, "no IPv6 redirect listener"),
    }
    Ok(sockets)
}

async fn serve(
    listener: TcpListener,
    direction: Direction,
    routes: std::sync::Arc<Routes>,
    own_ports: std::sync::Arc<OwnPorts>,
    mut drain: crate::drain::Watcher,
) {
    let own = listener.local_addr().ok();
    let mut passthrough = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.draining() => break,
        };
        while passthrough.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let destination = match original_destination(&stream) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no original destination; closing");
                continue;
            }
        };
        // Called directly rather than redirected: passing it on would connect to ourselves.
        if own.is_some_and(|own| own.port() == destination.port())
            && stream.local_addr().is_ok_and(|local| local == destination)
        {
            tracing::debug!(%peer, "connection to the redirect port itself; closing");
            continue;
        }
        if direction == Direction::Outbound && own_ports.contains(peer.port()) {
            // Our own passthrough, redirected back: the rules do not exclude the uid tracecar
            // runs as. Passing it on again would open connections without end.
            tracing::error!(
                %destination,
                "tracecar's own connection was redirected back to it: install the rules with --uid set to the uid tracecar runs as"
            );
            continue;
        }
        match routes.find(direction, destination) {
            Some(listener) => {
                if listener.send((stream, peer)).await.is_err() {
                    tracing::debug!(%peer, %destination, "listener stopped; closing");
                }
            }
            None => {
                tracing::debug!(%peer, %destination, "no listener matches; passing through");
                passthrough.spawn(pass_through(stream, destination, own_ports.clone()));
            }
        }
    }
    drop(listener);
    while passthrough.join_next().await.is_some() {}
}

/// Kuma's passthrough: plain TCP to where the connection was going. tracecar's own uid is
/// excluded from the redirect rules, so this connection is not redirected again.
#[allow(clippy::manual_async_fn)] // an async block: see `listener::Connection::serve`
fn pass_through(
    mut downstream: TcpStream,
    destination: SocketAddr,
    own_ports: std::sync::Arc<OwnPorts>,
) -> impl std::future::Future<Output = ()> {
    async move {
        // The local port is taken before connecting, so that a redirected-back connection is
        // recognised even when it is accepted before `connect` returns.
        let socket = match bind_ephemeral(destination) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%destination, error = %e, "passthrough socket failed");
                return;
            }
        };
        let _own = socket
            .local_addr()
            .ok()
            .map(|local| own_ports.enter(local.port()));
        // Boxed, as in `tcp::pass_through`: the task holds only what copying needs.
        let mut upstream = match Box::pin(socket.connect(destination)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%destination, error = %e, "passthrough connect failed");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        // No copy buffers held while the connection is quiet: see `tcp`.
        let _ = super::tcp::copy_both_ways(&mut downstream, &mut upstream).await;
    }
}

fn bind_ephemeral(destination: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let (socket, any) = if destination.is_ipv4() {
        (
            tokio::net::TcpSocket::new_v4()?,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        )
    } else {
        (
            tokio::net::TcpSocket::new_v6()?,
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        )
    };
    socket.bind(SocketAddr::new(any, 0))?;
    Ok(socket)
}

/// Local ports of tracecar's passthrough connections while they are open.
#[derive(Default)]
struct OwnPorts(std::sync::Mutex<std::collections::HashSet<u16>>);

impl OwnPorts {
    fn enter(self: &std::sync::Arc<Self>, port: u16) -> OwnPort {
        if let Ok(mut ports) = self.0.lock() {
            ports.insert(port);
        }
        OwnPort(self.clone(), port)
    }

    fn contains(&self, port: u16) -> bool {
        self.0.lock().is_ok_and(|ports| ports.contains(&port))
    }
}

struct OwnPort(std::sync::Arc<OwnPorts>, u16);

impl Drop for OwnPort {
    fn drop(&mut self) {
        if let Ok(mut ports) = self.0.0.lock() {
            ports.remove(&self.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_destinations_match_ipv4_outbounds() {
        let mapped: SocketAddr = "[::ffff:10.96.0.10]:80".parse().unwrap();
        assert_eq!(normalize(mapped), "10.96.0.10:80".parse().unwrap());
    }

    #[test]
    fn an_inbound_named_by_host_name_is_matched_by_its_port() {
        assert_eq!(parse_address("web.local:8080").unwrap().port(), 8080);
    }
}
