//! The floor of a run's cost: a turmoil world with the run's hosts, tick, latencies and length,
//! carrying the run's traffic (the same TCP connections, opened and closed at the same moments,
//! with the same writes of the same sizes), but whose hosts do nothing else. What turmoil itself
//! costs for that traffic; `mailchaos bench` divides the harness's cost by it.
//!
//! Each side of a connection writes on its own schedule, whatever it reads (it reads and
//! discards everything): the floor replays the traffic, not the conversation.

use crate::scenario::Scenario;
use crate::seed::Seed;
use crate::world::traffic::Connection;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::cell::RefCell;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest write replayed at once; a larger recorded one is written in pieces.
const CHUNK_BYTES: usize = 64 * 1024;

/// What every write of the floor sends: its bytes do not matter, only how many. One buffer for
/// all, so that the floor does not pay for filling buffers the harness never fills.
static ZEROS: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];

/// What a floor host reads at once: the stack's own read size (`stack::conn`), so both read a
/// segment in as many pieces.
const READ_BYTES: usize = 4096;

/// Runs the floor of a run of `scenario` with `seed` that carried `connections` and ended at
/// `end_ms`. Returns the simulated milliseconds stepped.
pub fn run(scenario: &Scenario, seed: Seed, connections: &[Connection], end_ms: u64) -> u64 {
    let mut sim = crate::world::build_sim(scenario, seed);
    for link in &scenario.links {
        let (a, b) = (link.hosts.get_ref()[0].as_str(), link.hosts.get_ref()[1].as_str());
        sim.set_link_latency(a, b, Duration::from_millis(link.min_latency_ms));
        sim.set_link_max_message_latency(a, b, Duration::from_millis(*link.max_latency_ms.get_ref()));
    }
    let connections: Rc<Vec<Connection>> = Rc::new(connections.to_vec());
    for host in scenario.hosts() {
        let connections = connections.clone();
        let name = host.clone();
        sim.host(host.as_str(), move || replay_host(name.clone(), connections.clone()));
    }
    while (sim.elapsed().as_millis() as u64) < end_ms {
        // A host's error ends only that host's part; the clock goes on as in the run.
        if sim.step().is_err() {
            break;
        }
    }
    sim.elapsed().as_millis() as u64
}

/// One host's part: its listeners, and the connections it opens, each on its schedule.
async fn replay_host(host: String, connections: Rc<Vec<Connection>>) -> turmoil::Result {
    // Per (client, port) the connections this host accepts, in the order they were opened.
    let mut expected: BTreeMap<u16, BTreeMap<String, VecDeque<usize>>> = BTreeMap::new();
    for (index, connection) in connections.iter().enumerate().filter(|(_, c)| c.server == host) {
        expected.entry(connection.port).or_default().entry(connection.client.clone()).or_default().push_back(index);
    }
    let ports: BTreeSet<u16> = expected.keys().copied().collect();
    let expected = Rc::new(RefCell::new(expected));
    for port in ports {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
        let (connections, expected) = (connections.clone(), expected.clone());
        tokio::task::spawn_local(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let client = turmoil::reverse_lookup(peer.ip()).unwrap_or_default();
                let index = expected.borrow_mut().get_mut(&port).and_then(|by_client| by_client.get_mut(&client)?.pop_front());
                if let Some(index) = index {
                    tokio::task::spawn_local(replay_side(stream, connections.clone(), index, 1));
                }
            }
        });
    }
    // tokio's clock inside a turmoil host is the simulated one (turmoil drives it): no wall clock.
    let start = tokio::time::Instant::now();
    for (index, connection) in connections.iter().enumerate().filter(|(_, c)| c.client == host) {
        let (connections, server, port, open_ms) = (connections.clone(), connection.server.clone(), connection.port, connection.open_ms);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(start + Duration::from_millis(open_ms)).await;
            if let Ok(stream) = turmoil::net::TcpStream::connect((server.as_str(), port)).await {
                replay_side(stream, connections, index, 0).await;
            }
        });
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// One side of one connection: its writes at their moments, everything it receives read and
/// dropped, its end let go when the run let it go.
async fn replay_side(stream: turmoil::net::TcpStream, connections: Rc<Vec<Connection>>, index: usize, side: usize) {
    let (mut reader, mut writer) = stream.into_split();
    tokio::task::spawn_local(async move {
        let mut buffer = [0u8; READ_BYTES];
        while reader.read(&mut buffer).await.is_ok_and(|read| read > 0) {}
    });
    // The simulation's start on the simulated clock, as the recorded times count from it.
    let start = tokio::time::Instant::now() - Duration::from_millis(turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64));
    let connection = &connections[index];
    for &(at_ms, bytes) in &connection.writes[side] {
        tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
        let mut left = bytes as usize;
        while left > 0 {
            let piece = left.min(CHUNK_BYTES);
            if writer.write_all(&ZEROS[..piece]).await.is_err() {
                return;
            }
            left -= piece;
        }
    }
    match connection.close_ms[side] {
        Some(close_ms) => tokio::time::sleep_until(start + Duration::from_millis(close_ms)).await,
        None => std::future::pending::<()>().await,
    }
}
