//! The stack's [`Net`] over turmoil's simulated network. The only place sockets meet turmoil.

use stack::net::{BoxStream, Listener, Net, NetFuture};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;

/// Network faults that live outside turmoil's links, switched by the world.
#[derive(Default)]
pub struct NetFaults {
    /// Hosts that cannot resolve names (a temporary DNS failure, SERVFAIL).
    pub dns_down: RefCell<BTreeSet<String>>,
    /// (host, port) pairs whose listener refuses connections.
    pub closed: RefCell<BTreeSet<(String, u16)>>,
}

/// One host's view of the simulated network.
pub struct SimNet {
    pub host: String,
    pub faults: Rc<NetFaults>,
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&self) -> NetFuture<'_, (BoxStream, String)> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            let name = turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.to_string());
            Ok((Box::new(stream) as BoxStream, name))
        })
    }
}

impl Net for SimNet {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> NetFuture<'a, BoxStream> {
        Box::pin(async move {
            if self.faults.dns_down.borrow().contains(&self.host) {
                return Err(io::Error::other(format!("temporary failure resolving {host} (SERVFAIL)")));
            }
            if self.faults.closed.borrow().contains(&(host.to_string(), port)) {
                return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
            }
            let stream = turmoil::net::TcpStream::connect((host, port)).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn listen(&self, port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }
}
