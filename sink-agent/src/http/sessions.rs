//! The HTTP proxy's sessions and the decisions it keeps for sessions to come.
//!
//! A session is kept under the `Mcp-Session-Id` the upstream gave in its answer to an
//! `initialize`, and under no other id: a request naming an id the proxy did not learn
//! that way gets 404 (the client starts a new session), so inventing ids makes no
//! session and pushes none out. Past the caps (all clients, or one client) a new
//! `initialize` is refused; a live session is never dropped to make room. A session is
//! forgotten when the client ends it (DELETE) or after it has been idle, with no request
//! in progress, for the idle timeout.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use toolgate_protocol::Timestamp;
use toolgate_protocol::decision::Decision;

use super::{HttpProxy, respond_json};
use crate::jsonrpc;
use crate::session::Session;
use toolgate_http::Request;

/// One session as the proxy's request threads share it.
pub(crate) type Shared = Arc<Mutex<Session>>;

/// Why a new session was refused: the cap that is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `sink.http_max_sessions` sessions are open.
    Total(usize),
    /// `sink.http_max_sessions_per_client` sessions are open for this client.
    Client(usize),
}

struct Entry {
    session: Shared,
    /// Who started it (see [`client_of`]).
    client: IpAddr,
    last_used: Instant,
}

/// The sessions of one proxy.
pub(crate) struct Registry {
    max_sessions: usize,
    max_per_client: usize,
    idle: Duration,
    /// Sessions under the id the upstream gave them.
    by_id: HashMap<String, Entry>,
    /// Sessions whose `initialize` is on its way upstream, each holding its place
    /// under the caps (and reached by decisions) until the answer names it.
    starting: HashMap<u64, Entry>,
    next_ticket: u64,
    /// The session of requests without an `Mcp-Session-Id` (a stateless upstream).
    shared: Option<Shared>,
}

impl Registry {
    pub(crate) fn new(max_sessions: usize, max_per_client: usize, idle: Duration) -> Self {
        Registry {
            max_sessions: max_sessions.max(1),
            max_per_client: max_per_client.max(1),
            idle,
            by_id: HashMap::new(),
            starting: HashMap::new(),
            next_ticket: 0,
            shared: None,
        }
    }

    /// The session the upstream named `id`, marked used; `None` when there is none
    /// (never issued, ended, or expired).
    pub(crate) fn get(&mut self, id: &str, now: Instant) -> Option<Shared> {
        let idle = self.idle;
        let entry = self.by_id.get_mut(id)?;
        if is_idle(entry, idle, now) {
            self.by_id.remove(id);
            return None;
        }
        entry.last_used = now;
        Some(entry.session.clone())
    }

    /// Marks session `id` used (at the end of a request: a long stream counts from its end).
    pub(crate) fn touch(&mut self, id: &str, now: Instant) {
        if let Some(entry) = self.by_id.get_mut(id) {
            entry.last_used = now;
        }
    }

    /// Whether `client` (see [`client_of`]) may start one more session; idle sessions
    /// are forgotten first.
    pub(crate) fn room_for(&mut self, client: IpAddr, now: Instant) -> Result<(), Full> {
        let idle = self.idle;
        self.by_id.retain(|_, e| !is_idle(e, idle, now));
        if self.by_id.len() + self.starting.len() >= self.max_sessions {
            return Err(Full::Total(self.max_sessions));
        }
        let mine = self
            .by_id
            .values()
            .chain(self.starting.values())
            .filter(|e| e.client == client)
            .count();
        if mine >= self.max_per_client {
            return Err(Full::Client(self.max_per_client));
        }
        Ok(())
    }

    /// Holds a place for `session`, started by `client`, while its `initialize` is
    /// on its way; the ticket names it to [`Registry::promote`] or [`Registry::release`].
    pub(crate) fn reserve(
        &mut self,
        client: IpAddr,
        session: Shared,
        now: Instant,
    ) -> Result<u64, Full> {
        self.room_for(client, now)?;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.starting.insert(
            ticket,
            Entry {
                session,
                client,
                last_used: now,
            },
        );
        Ok(ticket)
    }

    /// The upstream named the session of `ticket` `id`: it is kept under that id.
    pub(crate) fn promote(&mut self, ticket: u64, id: &str, now: Instant) {
        if let Some(mut entry) = self.starting.remove(&ticket) {
            entry.last_used = now;
            // An id already kept keeps its session, and what was decided for it.
            self.by_id.entry(id.to_string()).or_insert(entry);
        }
    }

    /// The place of `ticket` is given back (no id came, or the request failed).
    pub(crate) fn release(&mut self, ticket: u64) {
        self.starting.remove(&ticket);
    }

    /// Forgets session `id` (the client ended it).
    pub(crate) fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    /// The session of requests without an id, if made yet.
    pub(crate) fn shared(&self) -> Option<Shared> {
        self.shared.clone()
    }

    pub(crate) fn set_shared(&mut self, session: Shared) {
        self.shared = Some(session);
    }

    /// Every session a decision must reach.
    pub(crate) fn all(&self) -> Vec<Shared> {
        self.by_id
            .values()
            .chain(self.starting.values())
            .map(|e| e.session.clone())
            .chain(self.shared.iter().cloned())
            .collect()
    }
}

fn is_idle(entry: &Entry, idle: Duration, now: Instant) -> bool {
    // A request in progress holds a clone: its session is in use, however long it runs.
    now.saturating_duration_since(entry.last_used) >= idle && Arc::strong_count(&entry.session) == 1
}

/// Whom a session is counted against: the peer's address, an IPv6 peer by its /64
/// (one host is commonly given a whole /64, so single addresses would not cap it).
pub(crate) fn client_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// The decisions that verified, replayed into each session made later, so that what
/// the engine decided for the whole agent binds its new sessions too.
pub(crate) struct Kept {
    items: VecDeque<(Decision, Vec<u8>)>,
    max: usize,
}

impl Kept {
    /// At most `max` kept (`sink.max_decisions`).
    pub(crate) fn new(max: usize) -> Self {
        Kept {
            items: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Keeps a decision that verified (its JSON bytes).
    pub(crate) fn keep(&mut self, bytes: &[u8], now: Timestamp) {
        let Ok(decision) = serde_json::from_slice::<Decision>(bytes) else {
            return;
        };
        self.items
            .retain(|(d, _)| d.decision_id != decision.decision_id && !d.is_expired(now));
        if self.items.len() >= self.max {
            // A verdict on one call or one session goes before a decision for the whole
            // agent: a flood of verdicts must not push an agent-wide block out.
            let narrow = self
                .items
                .iter()
                .position(|(d, _)| d.scope.call_id.is_some() || d.scope.session_id.is_some());
            let _ = self.items.remove(narrow.unwrap_or(0));
        }
        self.items.push_back((decision, bytes.to_vec()));
    }

    /// Applies every decision still in force to a new session.
    pub(crate) fn replay(&self, session: &mut Session, now: Timestamp) {
        for (decision, bytes) in &self.items {
            if !decision.is_expired(now) {
                let _ = session.apply_decision(bytes, now);
            }
        }
    }
}

/// The proxy's side: finding, starting and refusing sessions.
impl HttpProxy {
    pub(super) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn kept(&self) -> MutexGuard<'_, Kept> {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session the upstream named `id`, if the proxy keeps it.
    pub(super) fn known_session(&self, id: &str) -> Option<Arc<Mutex<Session>>> {
        self.registry().get(id, Instant::now())
    }

    /// A new session for an `initialize` from `peer`, holding its place under the caps
    /// until the upstream's answer names it.
    pub(super) fn start_session(
        &self,
        peer: IpAddr,
    ) -> Result<(Arc<Mutex<Session>>, Starting<'_>), Start> {
        let client = client_of(peer);
        // Refused before the work of making a session.
        self.registry()
            .room_for(client, Instant::now())
            .map_err(Start::Full)?;
        let session = Arc::new(Mutex::new(self.make_session().ok_or(Start::Failed)?));
        // Placed and given the kept decisions under the lock `apply_decision` holds,
        // so a decision arriving meanwhile reaches it one way or the other.
        let kept = self.kept();
        let ticket = self
            .registry()
            .reserve(client, session.clone(), Instant::now())
            .map_err(Start::Full)?;
        kept.replay(
            &mut session.lock().unwrap_or_else(PoisonError::into_inner),
            Timestamp::now(),
        );
        drop(kept);
        Ok((
            session,
            Starting {
                proxy: self,
                ticket,
            },
        ))
    }

    /// The session of requests without an `Mcp-Session-Id`, made on first use.
    pub(super) fn shared_session(&self) -> Option<Arc<Mutex<Session>>> {
        if let Some(s) = self.registry().shared() {
            return Some(s);
        }
        let made = Arc::new(Mutex::new(self.make_session()?));
        let kept = self.kept();
        let mut registry = self.registry();
        // Another request may have made it meanwhile.
        if let Some(s) = registry.shared() {
            return Some(s);
        }
        kept.replay(
            &mut made.lock().unwrap_or_else(PoisonError::into_inner),
            Timestamp::now(),
        );
        registry.set_shared(made.clone());
        Some(made)
    }

    fn make_session(&self) -> Option<Session> {
        match (self.new_session)() {
            Ok(mut session) => {
                session.answer_batch_refusals_at_once();
                Some(session)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a session");
                None
            }
        }
    }

    /// 404 for an id the proxy never issued (or that ended or expired): the spec's
    /// answer, on which the client starts a new session.
    pub(super) fn unknown_session(&self, request: Request<'_>) {
        self.counters
            .unknown_sessions
            .fetch_add(1, Ordering::Relaxed);
        let answer = jsonrpc::error(
            &Value::Null,
            -32001,
            "toolgate-sink: unknown or expired Mcp-Session-Id; start a new session with initialize",
        );
        respond_json(request, 404, answer.to_string().into_bytes());
    }

    /// An `initialize` past a session cap: refused, the open sessions untouched.
    pub(super) fn refuse_session(&self, request: Request<'_>, body: &[u8], full: Full) {
        self.counters
            .refused_sessions
            .fetch_add(1, Ordering::Relaxed);
        let (status, text) = match full {
            Full::Client(max) => (
                429,
                format!(
                    "toolgate-sink: this client has {max} sessions open (sink.http_max_sessions_per_client); end one (DELETE) or let one expire first"
                ),
            ),
            Full::Total(max) => (
                503,
                format!(
                    "toolgate-sink: {max} sessions are open (sink.http_max_sessions); end one (DELETE) or let one expire first"
                ),
            ),
        };
        tracing::warn!(client = %client_of(request.peer), "{text}");
        let answer = jsonrpc::error(&request_id(body), -32000, &text);
        respond_json(request, status, answer.to_string().into_bytes());
    }
}

/// Why no session was started for an `initialize`.
pub(super) enum Start {
    /// A cap is reached.
    Full(Full),
    /// The session could not be made (logged).
    Failed,
}

/// A new session's place under the caps while its `initialize` is on its way: kept
/// under the id the upstream's answer names, or given back when dropped without one.
pub(super) struct Starting<'a> {
    proxy: &'a HttpProxy,
    ticket: u64,
}

impl Starting<'_> {
    pub(super) fn promote(self, id: &str) {
        self.proxy
            .registry()
            .promote(self.ticket, id, Instant::now());
        // Dropped now, it finds nothing left to give back.
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.proxy.registry().release(self.ticket);
    }
}

/// The id of the request in `body`, or null.
fn request_id(body: &[u8]) -> Value {
    match jsonrpc::parse(body).map(|d| d.parsed) {
        Ok(jsonrpc::Parsed::Single(jsonrpc::Message::Request { id, .. })) => id,
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(client_of(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn verdicts_are_pushed_out_before_an_agent_wide_block() {
        use toolgate_protocol::decision::{DecisionAction, Scope};
        let decision = |id: &str, call: Option<&str>| {
            let d = Decision {
                schema: Default::default(),
                decision_id: id.into(),
                time: Timestamp::EPOCH,
                expires_at: None,
                action: DecisionAction::Block,
                scope: Scope {
                    agent_id: "a1".into(),
                    session_id: None,
                    server: None,
                    tool: None,
                    call_id: call.map(str::to_string),
                    destination: None,
                },
                reason: "r".into(),
                finding_ids: vec![],
                key_id: String::new(),
                signature: String::new(),
            };
            serde_json::to_vec(&d).unwrap()
        };
        let mut kept = Kept::new(2);
        let now = Timestamp::EPOCH;
        kept.keep(&decision("agent-wide", None), now);
        for i in 0..10 {
            kept.keep(&decision(&format!("verdict-{i}"), Some("7")), now);
        }
        kept.keep(&decision("agent-wide", None), now);
        let ids: Vec<&str> = kept
            .items
            .iter()
            .map(|(d, _)| d.decision_id.as_str())
            .collect();
        assert_eq!(ids, ["verdict-9", "agent-wide"]);
    }
}
