//! A TCP proxy on 127.0.0.1 that breaks connections on purpose: it forwards between an ssh
//! client and the sshd fixture, and cuts or stalls a connection after a chosen number of
//! bytes in a chosen direction, counting connections and bytes as it goes.
//!
//! Each accepted connection takes the next [`Fault`] from the list the proxy was started
//! with; once the list is used up, connections are forwarded untouched. That is how a test
//! says "break the first connection, let the reconnect through".

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::TestServer;

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// From the ssh client to sshd.
    ToServer,
    /// From sshd to the ssh client.
    ToClient,
}

/// What happens to one proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Forward exactly `after` bytes in `flow`, then close both sockets, as a dropped
    /// network path or a killed peer would.
    Cut { flow: Flow, after: u64 },
    /// Forward `after` bytes in `flow`, then stop forwarding either way while keeping both
    /// sockets open: a path that silently went dead.
    Stall { flow: Flow, after: u64 },
    /// Accept, never connect upstream, never answer: a server that hangs before its banner.
    Blackhole,
}

struct Counters {
    connections: AtomicUsize,
    faults_fired: AtomicUsize,
    to_server: AtomicU64,
    to_client: AtomicU64,
}

/// The proxy; it runs in background threads until dropped.
pub struct CutProxy {
    port: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// Every socket the proxy holds, so dropping it closes them all.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    /// Starts a proxy to `127.0.0.1:upstream_port`; connection number `i` (from 0) suffers
    /// `faults[i]`, later ones none. Panics if it cannot listen.
    pub fn start(upstream_port: u16, faults: Vec<Fault>) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy: local address").port();
        let counters = Arc::new(Counters {
            connections: AtomicUsize::new(0),
            faults_fired: AtomicUsize::new(0),
            to_server: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let (c, s, socks) = (counters.clone(), stop.clone(), sockets.clone());
        thread::spawn(move || {
            for (i, client) in listener.incoming().enumerate() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let fault = faults.get(i).copied().unwrap_or(Fault::None);
                let (c, s, socks) = (c.clone(), s.clone(), socks.clone());
                thread::spawn(move || {
                    let _ = serve(client, upstream_port, fault, &c, &s, &socks);
                });
            }
        });
        CutProxy {
            port,
            counters,
            stop,
            sockets,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// How many connections have been cut or stalled so far.
    pub fn faults_fired(&self) -> usize {
        self.counters.faults_fired.load(Ordering::SeqCst)
    }

    /// Bytes forwarded in `flow`, over all connections.
    pub fn bytes(&self, flow: Flow) -> u64 {
        match flow {
            Flow::ToServer => self.counters.to_server.load(Ordering::SeqCst),
            Flow::ToClient => self.counters.to_client.load(Ordering::SeqCst),
        }
    }

    /// An `-e` command for `server` that goes through this proxy. The host key is still
    /// checked strictly: `HostKeyAlias` names the entry recorded for the real port.
    pub fn ssh_command(&self, server: &TestServer) -> String {
        let mut args = server.ssh_args();
        let p = args
            .iter()
            .position(|a| a == "-p")
            .expect("ssh_args has -p PORT");
        args[p + 1] = self.port.to_string();
        args.push("-o".to_owned());
        args.push(format!(
            "HostKeyAlias=[{}]:{}",
            server.host(),
            server.port()
        ));
        args.join(" ")
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    fault: Fault,
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
    sockets: &Arc<Mutex<Vec<TcpStream>>>,
) -> io::Result<()> {
    sockets.lock().unwrap().push(client.try_clone()?);
    if fault == Fault::Blackhole {
        // Hold the socket open, read nothing, until the proxy goes away.
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(50));
        }
        return Ok(());
    }
    let server = TcpStream::connect(("127.0.0.1", upstream_port))?;
    sockets.lock().unwrap().push(server.try_clone()?);
    let link = Arc::new(Link {
        client: client.try_clone()?,
        server: server.try_clone()?,
        stalled: AtomicBool::new(false),
        fault,
    });
    let up = {
        let (link, counters, stop) = (link.clone(), counters.clone(), stop.clone());
        let (from, to) = (client, server.try_clone()?);
        thread::spawn(move || pump(from, to, Flow::ToServer, &link, &counters, &stop))
    };
    let (from, to) = (server, link.client.try_clone()?);
    pump(from, to, Flow::ToClient, &link, counters, stop);
    let _ = up.join();
    Ok(())
}

/// The two sockets of one proxied connection and what is to happen to it.
struct Link {
    client: TcpStream,
    server: TcpStream,
    stalled: AtomicBool,
    fault: Fault,
}

impl Link {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    /// Parks a pump of a stalled link until the proxy is dropped.
    fn stall_forever(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(50));
        }
        self.close();
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flow: Flow,
    link: &Link,
    counters: &Counters,
    stop: &AtomicBool,
) {
    let total = match flow {
        Flow::ToServer => &counters.to_server,
        Flow::ToClient => &counters.to_client,
    };
    // Bytes this pump may still forward before the fault fires; `None`: no limit here.
    let mut budget = match link.fault {
        Fault::Cut { flow: f, after } | Fault::Stall { flow: f, after } if f == flow => Some(after),
        _ => None,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if budget == Some(0) {
            counters.faults_fired.fetch_add(1, Ordering::SeqCst);
            match link.fault {
                Fault::Cut { .. } => link.close(),
                _ => {
                    link.stalled.store(true, Ordering::SeqCst);
                    link.stall_forever(stop);
                }
            }
            return;
        }
        let want = budget.map_or(buf.len(), |b| b.min(buf.len() as u64) as usize);
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => {
                // One side finished: pass the end on, and let the other pump run dry.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if link.stalled.load(Ordering::SeqCst) {
            link.stall_forever(stop);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            link.close();
            return;
        }
        total.fetch_add(n as u64, Ordering::SeqCst);
        if let Some(b) = budget.as_mut() {
            *b -= n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that sends `n` bytes to whoever connects, then reads until the end.
    fn talker(n: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                thread::spawn(move || {
                    let _ = conn.write_all(&vec![7u8; n]);
                    let _ = io::copy(&mut conn, &mut io::sink());
                });
            }
        });
        port
    }

    /// Reads until the end, an error or a pause of a second; returns the bytes and whether the
    /// stream ended (as opposed to going quiet).
    fn read_what_comes(conn: &mut TcpStream) -> (usize, bool) {
        conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut total = 0;
        let mut buf = [0u8; 8192];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return (total, true),
                Ok(n) => total += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return (total, false)
                }
                Err(_) => return (total, true),
            }
        }
    }

    #[test]
    fn cuts_after_exactly_the_bytes_asked_then_lets_later_connections_through() {
        let upstream = talker(100_000);
        let cut = Fault::Cut {
            flow: Flow::ToClient,
            after: 12_345,
        };
        let proxy = CutProxy::start(upstream, vec![cut]);
        let mut first = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        assert_eq!(read_what_comes(&mut first), (12_345, true));
        let mut second = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        assert_eq!(read_what_comes(&mut second), (100_000, false));
        assert_eq!(proxy.connections(), 2);
        assert_eq!(proxy.faults_fired(), 1);
        assert_eq!(proxy.bytes(Flow::ToClient), 112_345);
    }

    #[test]
    fn stall_keeps_the_socket_open_and_blackhole_never_answers() {
        let upstream = talker(100_000);
        let stall = Fault::Stall {
            flow: Flow::ToClient,
            after: 5_000,
        };
        let proxy = CutProxy::start(upstream, vec![stall, Fault::Blackhole]);
        let mut stalled = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        assert_eq!(read_what_comes(&mut stalled), (5_000, false));
        let mut hole = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        assert_eq!(read_what_comes(&mut hole), (0, false));
        drop(proxy);
        // Dropping the proxy closes what it held open.
        assert_eq!(read_what_comes(&mut stalled), (0, true));
    }
}
