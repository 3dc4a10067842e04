//! The traffic of a run as the network carried it: every TCP connection (who opened it to whom,
//! when, when each side let go) and every write on it (when, how many bytes). Recorded only when
//! asked (`RunOptions::traffic`, by `mailchaos bench`) and never into the history: it is the
//! script of the floor (`crate::floor`), a world with the same traffic and trivial hosts.

use history::Clock;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client = 0,
    Server = 1,
}

/// One TCP connection of a run.
#[derive(Clone, Debug)]
pub struct Connection {
    pub client: String,
    pub server: String,
    pub port: u16,
    pub open_ms: u64,
    /// Per side (client, server): when it dropped its end; `None` if it still held it at the end.
    pub close_ms: [Option<u64>; 2],
    /// Per side (client, server): its writes, (time, bytes).
    pub writes: [Vec<(u64, u32)>; 2],
}

impl Connection {
    pub fn bytes(&self) -> u64 {
        self.writes.iter().flatten().map(|(_, bytes)| u64::from(*bytes)).sum()
    }
}

/// The recorder, shared by every host's network of one run.
#[derive(Default)]
pub struct Traffic {
    /// The world's clock, given when the run starts.
    clock: RefCell<Option<Clock>>,
    log: RefCell<Log>,
}

#[derive(Default)]
struct Log {
    connections: Vec<Connection>,
    /// (client address, server host, port) → connection index, named by one side so far.
    half_named: BTreeMap<(SocketAddr, String, u16), usize>,
}

impl Traffic {
    pub fn new() -> Rc<Traffic> {
        Rc::default()
    }

    /// The run begins: times are read from its clock.
    pub(crate) fn start(&self, clock: Clock) {
        *self.clock.borrow_mut() = Some(clock);
    }

    fn now_ms(&self) -> u64 {
        self.clock.borrow().as_ref().map_or(0, |clock| clock())
    }

    /// The connections recorded so far, in the order they were opened.
    pub fn connections(&self) -> Vec<Connection> {
        let mut connections = self.log.borrow().connections.clone();
        connections.sort_by_key(|connection| connection.open_ms);
        connections
    }

    /// The client side of a connection it began to open at `open_ms` from `local`. The server
    /// may have accepted it already (turmoil completes the accept before the connect).
    pub(crate) fn opened(&self, client: &str, local: SocketAddr, server: &str, port: u16, open_ms: u64) -> usize {
        let index = self.side_of(client, local, server, port);
        self.log.borrow_mut().connections[index].open_ms = open_ms;
        index
    }

    /// The server side of a connection from `peer` (named `client`) to `server:port`.
    pub(crate) fn accepted(&self, client: &str, peer: SocketAddr, server: &str, port: u16) -> usize {
        self.side_of(client, peer, server, port)
    }

    /// The connection one side names: the one the other side already named, else a new one.
    fn side_of(&self, client: &str, client_addr: SocketAddr, server: &str, port: u16) -> usize {
        let mut log = self.log.borrow_mut();
        let key = (client_addr, server.to_string(), port);
        if let Some(index) = log.half_named.remove(&key) {
            return index;
        }
        let index = log.connections.len();
        let open_ms = self.now_ms();
        log.connections.push(Connection { client: client.into(), server: server.into(), port, open_ms, close_ms: [None; 2], writes: [Vec::new(), Vec::new()] });
        log.half_named.insert(key, index);
        index
    }

    /// Wraps one side of a recorded connection.
    pub(crate) fn meter<S>(self: &Rc<Self>, stream: S, index: usize, side: Side) -> Metered<S> {
        Metered { stream, traffic: self.clone(), index, side }
    }

    fn wrote(&self, index: usize, side: Side, bytes: usize) {
        let now_ms = self.now_ms();
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.log.borrow_mut().connections[index].writes[side as usize].push((now_ms, bytes));
    }

    fn closed(&self, index: usize, side: Side) {
        let now_ms = self.now_ms();
        self.log.borrow_mut().connections[index].close_ms[side as usize].get_or_insert(now_ms);
    }
}

/// A stream that records its writes and its drop; reads pass through.
pub struct Metered<S> {
    stream: S,
    traffic: Rc<Traffic>,
    index: usize,
    side: Side,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(bytes)) = poll {
            if bytes > 0 {
                self.traffic.wrote(self.index, self.side, bytes);
            }
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.traffic.closed(self.index, self.side);
    }
}
