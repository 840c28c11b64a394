//! Loopback ports for the proxies under test and their peers; shared by the load bench and
//! the training run of the profile-guided build (`benches/train.rs`).

/// A port that was free a moment ago (the Dataplane validator wants real ports, not 0).
pub fn free_port() -> anyhow::Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` different ports that were free a moment ago. Each is held until all are chosen: the
/// kernel may hand out a port again as soon as it is let go, and two inbounds on one port
/// fail the Dataplane's validation (seen once in a 6-round run).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let held = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
