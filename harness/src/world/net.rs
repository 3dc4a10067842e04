//! The stack's [`Net`] over turmoil's simulated network. The only place sockets meet turmoil.

use crate::stack::net::{BoxStream, Listener, Net, NetFuture};

pub struct SimNet;

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
