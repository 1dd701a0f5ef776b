//! The HTTP/1.1 server every toolgate listener runs on (the sink's HTTP proxy, the
//! engine's OTLP receiver, `/metrics` and `/healthz`), bounded in what one client can
//! hold: at most [`Limits::max_connections`] connections are served at once, each on a
//! thread of its own, and one more is answered 503 with `Retry-After` on the accepting
//! thread, never waited on. A client has [`Limits::idle_timeout`] to send the first
//! byte of a request, then [`Limits::request_timeout`] from that byte for the whole
//! request (line, header fields, body), or the connection is closed (408 if a request
//! had begun); each write of an answer must be taken within the request timeout too.
//! Bodies over [`Limits::max_body`] are never read into memory: the handler is told.
//!
//! tiny_http, used before, gave no access to its sockets (no timeout could be set),
//! started a thread for every connection however many came, and allocated a request's
//! declared `Content-Length` when a request was dropped unread: one request could
//! abort the process.
#![deny(missing_docs)]

mod connection;
mod request;

pub use connection::{Request, hung_up};
pub use request::reason;

/// The request decoder, for its fuzz target.
#[doc(hidden)]
pub use request::{READ_REST_MAX, ReadOutcome, read_requests};

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one server lets its clients hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once, idle kept-alive ones included; one more is answered
    /// 503 and closed.
    pub max_connections: usize,
    /// The setting that sets `max_connections`, named in the 503 so that an operator
    /// knows what to raise (e.g. `sink.http_max_connections`).
    pub setting: &'static str,
    /// How long a client has, from a request's first byte, to send all of it, and to
    /// take each write of an answer.
    pub request_timeout: Duration,
    /// How long a connection may wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// Bodies larger than this are left unread ([`Request::oversized`]).
    pub max_body: usize,
}

/// What a server has refused, for metrics; shared with whoever reports them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections answered 503 at once because `max_connections` were open.
    pub refused_connections: AtomicU64,
    /// Requests begun but not whole by their deadline, answered 408.
    pub timed_out: AtomicU64,
    /// Requests this server does not read (malformed or ambiguous framing, header
    /// fields too large, another HTTP version), answered 4xx or 505.
    pub malformed: AtomicU64,
    /// Requests being handled now.
    busy: AtomicUsize,
}

/// A server: its limits, its counters and its open connections. Serve a listener with
/// [`Server::serve`] (on the caller's thread) or [`Server::spawn`].
#[derive(Debug)]
pub struct Server {
    name: String,
    limits: Limits,
    counters: Arc<Counters>,
    open: AtomicUsize,
}

/// Handles each request read; the server answers what it refuses itself.
pub type Handler = Arc<dyn Fn(Request<'_>) + Send + Sync>;

impl Server {
    /// A server whose own answers (408, 503, ...) begin with `name`, e.g.
    /// `toolgate-sink`. A `max_connections` of 0 is taken as 1.
    pub fn new(name: impl Into<String>, mut limits: Limits, counters: Arc<Counters>) -> Arc<Self> {
        limits.max_connections = limits.max_connections.max(1);
        Arc::new(Server {
            name: name.into(),
            limits,
            counters,
            open: AtomicUsize::new(0),
        })
    }

    /// Its counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Requests being handled now.
    pub fn busy(&self) -> usize {
        self.counters.busy.load(Ordering::Acquire)
    }

    /// Accepts connections on `listener` until `stop`, each served on a thread of its
    /// own by `handle`. Accepting never blocks: the loop waits in poll(2) and looks at
    /// `stop` between. Connections still open when it returns are served to their end.
    pub fn serve(
        self: &Arc<Self>,
        listener: &TcpListener,
        stop: &AtomicBool,
        handle: &Handler,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut lingering = connection::Lingering::default();
        while !stop.load(Ordering::Relaxed) {
            // Refused clients are drained often enough to see their close soon.
            let wait = if lingering.is_empty() { 100 } else { 20 };
            let ready = connection::wait_for_connection(listener, Duration::from_millis(wait));
            lingering.drain();
            if !ready {
                continue;
            }
            // A bounded batch, so that `stop` is seen under a flood of connections.
            for _ in 0..64 {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        if let Some(refused) = self.admit(stream, peer.ip(), handle) {
                            lingering.add(refused);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!(server = %self.name, error = %e, "accepting a connection");
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Serves `listener` on a thread named `thread` until the returned [`Running`] is
    /// stopped or dropped.
    pub fn spawn(
        self: &Arc<Self>,
        listener: TcpListener,
        thread: &str,
        handle: Handler,
    ) -> io::Result<Running> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (server, stopping) = (Arc::clone(self), Arc::clone(&stop));
        let accepting = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                if let Err(e) = server.serve(&listener, &stopping, &handle) {
                    tracing::error!(server = %server.name, error = %e, "the listener failed");
                }
            })?;
        Ok(Running {
            server: Arc::clone(self),
            addr,
            stop,
            thread: Some(accepting),
        })
    }

    /// Serves a new connection on a thread of its own, or answers 503 at the cap and
    /// returns the refused connection, to be drained before it is closed.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: IpAddr,
        handle: &Handler,
    ) -> Option<TcpStream> {
        let max = self.limits.max_connections;
        if self.open.load(Ordering::Acquire) >= max {
            self.counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            return connection::refuse_connection(stream, &self.name, max, self.limits.setting);
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        let (server, handle) = (Arc::clone(self), Arc::clone(handle));
        let spawned = std::thread::Builder::new()
            .name("http-connection".into())
            .spawn(move || {
                let _open = Open(&server.open);
                connection::serve_connection(
                    stream,
                    peer,
                    &server.limits,
                    &server.name,
                    &server.counters,
                    &*handle,
                );
            });
        if let Err(e) = spawned {
            self.open.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(server = %self.name, error = %e, "cannot start a connection thread");
        }
        None
    }
}

/// Gives a connection's place back however its thread ends.
struct Open<'a>(&'a AtomicUsize);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A server accepting on a thread of its own; stops accepting when dropped, after the
/// requests being handled are answered (within the request timeout).
#[derive(Debug)]
pub struct Running {
    server: Arc<Server>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let grace = Instant::now() + self.server.limits.request_timeout;
        while self.server.busy() > 0 && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests;
