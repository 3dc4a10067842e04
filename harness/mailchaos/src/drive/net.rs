//! The driver's network: its senders and clients reach the target's endpoints through links the
//! driver owns, so it can partition them (traffic held both ways, as a dropped packet holds it,
//! until the partition heals or the peer times out), and a TCP proxy between the MTA and the
//! store's LMTP where the target names one.

use stack::net::{Accepted, BoxStream, Listener, Net, NetFuture};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// The driver runs on a real runtime against real daemons: tokio's clock here is real time.

/// How often a held link looks again whether its partition healed.
const HELD_RECHECK: Duration = Duration::from_millis(50);

/// The longest a connect waits on a partitioned link before it fails as a lost SYN would.
const CONNECT_HELD_MAX: Duration = Duration::from_secs(30);

/// Which pairs of hosts are partitioned now (unordered pairs, stored sorted), and the cuts
/// armed on them: the next message whose final dot crosses the link freezes it.
#[derive(Default)]
pub struct Links {
    partitioned: RefCell<BTreeSet<(String, String)>>,
    /// (pair, how long the link then freezes, set once it fired).
    armed_cuts: RefCell<Vec<((String, String), Duration, Rc<Cell<bool>>)>>,
    frozen_until: RefCell<std::collections::BTreeMap<(String, String), tokio::time::Instant>>,
}

impl Links {
    fn pair(a: &str, b: &str) -> (String, String) {
        if a <= b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) }
    }

    pub fn partition(&self, a: &str, b: &str) {
        self.partitioned.borrow_mut().insert(Links::pair(a, b));
    }

    pub fn repair(&self, a: &str, b: &str) {
        self.partitioned.borrow_mut().remove(&Links::pair(a, b));
    }

    pub fn blocked(&self, a: &str, b: &str) -> bool {
        let pair = Links::pair(a, b);
        let frozen = self.frozen_until.borrow().get(&pair).is_some_and(|until| tokio::time::Instant::now() < *until);
        frozen || self.partitioned.borrow().contains(&pair)
    }

    /// Arms a cut after the final dot on the link; `fired` is set when a message triggers it.
    pub fn arm_cut(&self, a: &str, b: &str, freeze: Duration, fired: Rc<Cell<bool>>) {
        self.armed_cuts.borrow_mut().push((Links::pair(a, b), freeze, fired));
    }

    /// Takes back a cut that never fired.
    pub fn disarm_cut(&self, fired: &Rc<Cell<bool>>) {
        self.armed_cuts.borrow_mut().retain(|(_, _, armed)| !Rc::ptr_eq(armed, fired));
    }

    /// A message's end of data just crossed the link: an armed cut freezes it now (the reply
    /// is held, as a link lost right after the final dot holds it: RFC 1047).
    fn end_of_data(&self, a: &str, b: &str) {
        let pair = Links::pair(a, b);
        let mut armed = self.armed_cuts.borrow_mut();
        let Some(at) = armed.iter().position(|(cut, _, _)| *cut == pair) else { return };
        let (pair, freeze, fired) = armed.remove(at);
        fired.set(true);
        self.frozen_until.borrow_mut().insert(pair, tokio::time::Instant::now() + freeze);
    }
}

/// Finds the end of each message's data in what a client writes: the final dot of DATA, or the
/// end of a `BDAT n LAST` chunk (RFC 3030). Bounded: one command line is kept, at most.
#[derive(Default)]
struct DataEnds {
    line: Vec<u8>,
    in_data: bool,
    /// The last five octets of DATA, to see CRLF.CRLF across writes.
    tail: Vec<u8>,
    /// Octets of the BDAT chunk still to come, and whether it is the LAST.
    chunk: Option<(u64, bool)>,
}

impl DataEnds {
    /// Feeds written octets; the number of ends of data among them.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut ends = 0;
        for &byte in bytes {
            if let Some((remaining, last)) = self.chunk {
                self.chunk = Some((remaining - 1, last)).filter(|(left, _)| *left > 0);
                ends += usize::from(remaining == 1 && last);
                continue;
            }
            if self.in_data {
                self.tail.push(byte);
                if self.tail.len() > 5 {
                    self.tail.remove(0);
                }
                if self.tail == b"\r\n.\r\n" {
                    (self.in_data, ends) = (false, ends + 1);
                    self.tail.clear();
                }
                continue;
            }
            if self.line.len() < 1024 {
                self.line.push(byte);
            }
            if byte == b'\n' {
                self.command();
            }
        }
        ends
    }

    fn command(&mut self) {
        let line = String::from_utf8_lossy(&self.line).trim_end().to_ascii_uppercase();
        self.line.clear();
        if line == "DATA" {
            // The tail starts as if after a line end, so an empty body's lone dot ends it too.
            (self.in_data, self.tail) = (true, b"\r\n".to_vec());
        } else if let Some(rest) = line.strip_prefix("BDAT ") {
            let size = rest.split_whitespace().next().and_then(|size| size.parse::<u64>().ok()).unwrap_or(0);
            self.chunk = Some((size, rest.ends_with(" LAST"))).filter(|(size, _)| *size > 0);
        }
    }
}

/// Where the target's services listen, as the scenario's host names reach them.
#[derive(Clone)]
pub struct Endpoints {
    pub smtp: SocketAddr,
    pub pop3: Option<SocketAddr>,
    pub imap: Option<SocketAddr>,
    pub dsn: Option<SocketAddr>,
}

/// One host's view of the network: its connections go through the driver's links.
pub struct DriveNet {
    pub host: String,
    pub links: Rc<Links>,
    pub endpoints: Endpoints,
    /// Whether some provider already listens at the DSN address (one listener takes the
    /// target's bounces for every provider domain).
    pub dsn_taken: Rc<Cell<bool>>,
}

impl DriveNet {
    /// The target address and the scenario host behind a (host, port) the stack asks for.
    fn resolve(&self, host: &str, port: u16) -> Option<(SocketAddr, &'static str)> {
        match (host, port) {
            ("mx", stack::SMTP_PORT) => Some((self.endpoints.smtp, "mx")),
            ("store", stack::POP3_PORT) => self.endpoints.pop3.map(|address| (address, "store")),
            ("store", stack::IMAP_PORT) => self.endpoints.imap.map(|address| (address, "store")),
            _ => None,
        }
    }
}

impl Net for DriveNet {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> NetFuture<'a, BoxStream> {
        Box::pin(async move {
            let Some((address, peer)) = self.resolve(host, port) else {
                return Err(io::Error::new(io::ErrorKind::HostUnreachable, format!("the target names no endpoint for {host}:{port}")));
            };
            let held_until = tokio::time::Instant::now() + CONNECT_HELD_MAX;
            while self.links.blocked(&self.host, peer) {
                if tokio::time::Instant::now() >= held_until {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out (partitioned)"));
                }
                tokio::time::sleep(HELD_RECHECK).await;
            }
            let stream = tokio::net::TcpStream::connect(address).await?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(Held::new(stream, self.links.clone(), &self.host, peer)) as BoxStream)
        })
    }

    fn listen(&self, port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        Box::pin(async move {
            match self.endpoints.dsn.filter(|_| port == stack::SMTP_PORT && !self.dsn_taken.get()) {
                Some(address) => {
                    self.dsn_taken.set(true);
                    let listener = tokio::net::TcpListener::bind(address).await?;
                    Ok(Box::new(DsnListener { listener, accepted: Cell::new(0) }) as Box<dyn Listener>)
                }
                // Only one provider takes the target's bounces; the others listen nowhere.
                None => Ok(Box::new(Nowhere) as Box<dyn Listener>),
            }
        })
    }
}

struct DsnListener {
    listener: tokio::net::TcpListener,
    accepted: Cell<u64>,
}

impl Listener for DsnListener {
    fn accept(&self) -> NetFuture<'_, Accepted> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            self.accepted.set(self.accepted.get() + 1);
            Ok(Accepted { stream: Box::new(stream), peer: peer.to_string(), conn: format!("dsn#{}", self.accepted.get()) })
        })
    }
}

/// A listener that never accepts.
struct Nowhere;

impl Listener for Nowhere {
    fn accept(&self) -> NetFuture<'_, Accepted> {
        Box::pin(std::future::pending())
    }
}

/// A stream on a link between two hosts: while they are partitioned, nothing moves either way.
pub struct Held<S> {
    inner: S,
    links: Rc<Links>,
    from: String,
    to: String,
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What this side writes, watched for the ends of data an armed cut waits for.
    data_ends: DataEnds,
}

impl<S> Held<S> {
    pub fn new(inner: S, links: Rc<Links>, from: &str, to: &str) -> Held<S> {
        Held { inner, links, from: from.to_string(), to: to.to_string(), recheck: None, data_ends: DataEnds::default() }
    }

    /// Pending while the link is partitioned (woken to look again shortly).
    fn hold(&mut self, context: &mut Context<'_>) -> Poll<()> {
        if !self.links.blocked(&self.from, &self.to) {
            self.recheck = None;
            return Poll::Ready(());
        }
        loop {
            let sleep = self.recheck.get_or_insert_with(|| Box::pin(tokio::time::sleep(HELD_RECHECK)));
            match sleep.as_mut().poll(context) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.links.blocked(&self.from, &self.to) => self.recheck = None,
                Poll::Ready(()) => {
                    self.recheck = None;
                    return Poll::Ready(());
                }
            }
        }
    }
}

use std::future::Future as _;

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.hold(context).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(context, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.hold(context).is_pending() {
            return Poll::Pending;
        }
        let written = Pin::new(&mut self.inner).poll_write(context, buf);
        if let Poll::Ready(Ok(count)) = &written {
            let ends = self.data_ends.feed(&buf[..*count]);
            if ends > 0 {
                self.links.end_of_data(&self.from, &self.to);
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

/// The proxy between the MTA and the store's LMTP: every connection the MTA opens at `listen`
/// is forwarded to `store` on a link the driver can partition (hosts `mx` and `store`).
pub async fn lmtp_proxy(listen: SocketAddr, store: SocketAddr, links: Rc<Links>) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tokio::task::spawn_local(async move {
        while let Ok((client, _)) = listener.accept().await {
            let links = links.clone();
            tokio::task::spawn_local(async move {
                let Ok(server) = tokio::net::TcpStream::connect(store).await else { return };
                // The MTA's side writes the LMTP commands and data: watched on the server stream.
                let mut server = Held::new(server, links, "mx", "store");
                let mut client = client;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DataEnds;

    #[test]
    fn the_final_dot_of_data_and_the_end_of_a_last_chunk_are_ends_of_data() {
        let mut ends = DataEnds::default();
        assert_eq!(ends.feed(b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"), 0);
        // A stuffed dot line is not the end; split across writes, the real end is found.
        assert_eq!(ends.feed(b"Subject: x\r\n\r\n..not the end\r\n.\r"), 0);
        assert_eq!(ends.feed(b"\n"), 1);
        assert_eq!(ends.feed(b"QUIT\r\n"), 0);
        let mut chunks = DataEnds::default();
        assert_eq!(chunks.feed(b"BDAT 3\r\nabcBDAT 4 LAST\r\n.\r\n"), 0);
        assert_eq!(chunks.feed(b"x"), 1);
        assert_eq!(chunks.feed(b"DATA\r\n.\r\n"), 1, "an empty body ends at its lone dot");
    }
}
