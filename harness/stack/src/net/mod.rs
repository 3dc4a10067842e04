//! Sockets as the stack sees them: a [`Net`] opens connections and listeners by host name.
//! The world provides one over turmoil's simulated network; [`LiveNet`] uses real TCP, so real
//! clients can talk to the same stack.

pub mod tap;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

pub trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

pub type BoxStream = Box<dyn Stream>;
pub type NetFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

/// A connection a listener accepted.
pub struct Accepted {
    pub stream: BoxStream,
    /// The peer: a host name, or an address.
    pub peer: String,
    /// The network's name for this connection, unique in a run: the stack names it in its own
    /// records of what it did on it, so checkers can lay those beside the wire's records.
    pub conn: String,
}

pub trait Listener {
    fn accept(&self) -> NetFuture<'_, Accepted>;
}

pub trait Net {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> NetFuture<'a, BoxStream>;
    fn listen(&self, port: u16) -> NetFuture<'_, Box<dyn Listener>>;
}

/// Real TCP on this machine. `host` names resolve through the system resolver; listeners bind
/// `bind_ip:port` (use 127.0.0.1 in tests: nothing here is meant for another machine).
pub struct LiveNet {
    pub bind_ip: String,
    /// Added to every port, so an unprivileged user can run the stack (25 → 2525 with 2500).
    pub port_offset: u16,
    /// Ports (before the offset) that listen on loopback whatever `bind_ip` is: LMTP delivers
    /// straight into mailboxes, so only this machine's MX may reach it.
    pub loopback_only_ports: Vec<u16>,
}

impl LiveNet {
    /// The address `port` listens on: `bind_ip`, or for a loopback-only port the loopback
    /// address of `bind_ip`'s family (::1 for an IPv6 bind, else 127.0.0.1).
    pub fn listen_ip(&self, port: u16) -> String {
        if !self.loopback_only_ports.contains(&port) {
            return self.bind_ip.clone();
        }
        loopback_of(&self.bind_ip)
    }
}

/// The loopback address of `ip`'s family: ::1 for an IPv6 address, else 127.0.0.1.
pub fn loopback_of(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => "::1".into(),
        _ => "127.0.0.1".into(),
    }
}

struct LiveListener {
    listener: tokio::net::TcpListener,
    port: u16,
    accepted: Cell<u64>,
}

impl Listener for LiveListener {
    fn accept(&self) -> NetFuture<'_, Accepted> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            self.accepted.set(self.accepted.get() + 1);
            let conn = format!("{}#{}", self.port, self.accepted.get());
            Ok(Accepted { stream: Box::new(stream), peer: peer.to_string(), conn })
        })
    }
}

impl Net for LiveNet {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> NetFuture<'a, BoxStream> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((host, port + self.port_offset)).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn listen(&self, port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind((self.listen_ip(port).as_str(), port + self.port_offset)).await?;
            Ok(Box::new(LiveListener { listener, port, accepted: Cell::new(0) }) as Box<dyn Listener>)
        })
    }
}
