//! The stack's [`Net`] over turmoil's simulated network. The only place sockets meet turmoil.

use history::Journal;
use stack::net::tap::Tap;
use stack::net::{Accepted, BoxStream, Listener, Net, NetFuture};
use stack::{LMTP_PORT, SMTP_PORT};
use super::traffic::{Side, Traffic};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;

/// Network faults that live outside turmoil's links, switched by the world.
#[derive(Default)]
pub struct NetFaults {
    /// Hosts that cannot resolve names (a temporary DNS failure, SERVFAIL).
    pub dns_down: RefCell<BTreeSet<String>>,
    /// (host, port, who closed it) for listeners that refuse connections. Who: a `port-closed`
    /// fault or the operator's `closed-port` answer to an outage; each opens only its own
    /// closure, so the end of one never reopens a port the other still keeps closed.
    pub closed: RefCell<BTreeSet<(String, u16, Closer)>>,
    /// Connections accepted so far in the run, on any host: numbers each one.
    pub accepted: Cell<u64>,
    /// Set while the world tears a host down (a crash, the end of the run): the wire tap does
    /// not take the streams dropped then for the server closing them.
    pub teardown: Rc<Cell<bool>>,
}

/// Who closed a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Closer {
    Fault,
    Operator,
}

impl NetFaults {
    /// Whether any closure holds `port` of `host` closed.
    pub fn is_closed(&self, host: &str, port: u16) -> bool {
        self.closed.borrow().iter().any(|(h, p, _)| h == host && *p == port)
    }
}

/// One host's view of the simulated network.
pub struct SimNet {
    pub host: String,
    pub faults: Rc<NetFaults>,
    /// The host's journal: the wire of its SMTP and LMTP listeners is recorded there.
    pub journal: Journal,
    /// Whether this host's SMTP and LMTP wire is recorded (the hosts of the stack under test).
    pub tapped: bool,
    /// Where every connection's traffic is recorded, when a benchmark asks (never the history).
    pub traffic: Option<Rc<Traffic>>,
}

/// The ports whose wire is recorded, and what they speak: SMTP and LMTP, whose replies A1 and
/// A3 judge. (POP3 is judged by its clients' own records.)
const TAPPED_PORTS: [(u16, &str); 2] = [(SMTP_PORT, "smtp"), (LMTP_PORT, "lmtp")];

struct SimListener {
    listener: turmoil::net::TcpListener,
    host: String,
    port: u16,
    faults: Rc<NetFaults>,
    journal: Journal,
    tapped: bool,
    traffic: Option<Rc<Traffic>>,
}

impl Listener for SimListener {
    fn accept(&self) -> NetFuture<'_, Accepted> {
        Box::pin(async move {
            let (stream, peer_addr) = self.listener.accept().await?;
            let peer = turmoil::reverse_lookup(peer_addr.ip()).unwrap_or_else(|| peer_addr.to_string());
            self.faults.accepted.set(self.faults.accepted.get() + 1);
            let conn = format!("{}:{}#{}", self.host, self.port, self.faults.accepted.get());
            let stream: BoxStream = match &self.traffic {
                Some(traffic) => {
                    let index = traffic.accepted(&peer, peer_addr, &self.host, self.port);
                    Box::new(traffic.meter(stream, index, Side::Server))
                }
                None => Box::new(stream),
            };
            let stream = match TAPPED_PORTS.iter().find(|(port, _)| self.tapped && *port == self.port) {
                Some((_, protocol)) => Tap::wrap(stream, self.journal.clone(), conn.clone(), protocol, &peer, self.faults.teardown.clone()),
                None => stream,
            };
            Ok(Accepted { stream, peer, conn })
        })
    }
}

impl Net for SimNet {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> NetFuture<'a, BoxStream> {
        Box::pin(async move {
            if self.faults.dns_down.borrow().contains(&self.host) {
                return Err(io::Error::other(format!("temporary failure resolving {host} (SERVFAIL)")));
            }
            if self.faults.is_closed(host, port) {
                return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
            }
            let open_ms = turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64);
            let stream = turmoil::net::TcpStream::connect((host, port)).await?;
            match &self.traffic {
                Some(traffic) => {
                    let index = traffic.opened(&self.host, stream.local_addr()?, host, port, open_ms);
                    Ok(Box::new(traffic.meter(stream, index, Side::Client)) as BoxStream)
                }
                None => Ok(Box::new(stream) as BoxStream),
            }
        })
    }

    fn listen(&self, port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
            let listener = SimListener { listener, host: self.host.clone(), port, faults: self.faults.clone(), journal: self.journal.clone(), tapped: self.tapped, traffic: self.traffic.clone() };
            Ok(Box::new(listener) as Box<dyn Listener>)
        })
    }
}

#[cfg(test)]
mod closure_tests {
    use super::*;

    #[test]
    fn a_port_stays_closed_until_every_closer_has_opened_it() {
        let faults = NetFaults::default();
        faults.closed.borrow_mut().insert(("mx".into(), 25, Closer::Fault));
        faults.closed.borrow_mut().insert(("mx".into(), 25, Closer::Operator));
        // The port-closed fault ends while the operator's outage answer still holds.
        faults.closed.borrow_mut().remove(&("mx".into(), 25, Closer::Fault));
        assert!(faults.is_closed("mx", 25));
        assert!(!faults.is_closed("mx", 24));
        faults.closed.borrow_mut().remove(&("mx".into(), 25, Closer::Operator));
        assert!(!faults.is_closed("mx", 25));
    }
}
