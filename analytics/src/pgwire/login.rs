//! Logging in to `serve-sql` with a password: a name that is not the user fails the
//! same way, after the same work, with the same message as a wrong password; failures
//! are delayed, counted per client address, and past a limit the address is refused
//! for a while; and all addresses together may fail only so often per second.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::sasl::scram::gen_salted_password;
use datafusion_postgres::pgwire::api::auth::{AuthSource, LoginInfo, Password, StartupHandler};
use datafusion_postgres::pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;
use sha2::{Digest, Sha256};

/// How failed logins are throttled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins from one address (for IPv6, one /64) within `lockout` after which
    /// that address is refused for `lockout`. Logins in progress count too, so
    /// parallel connections do not get more guesses. At least 1.
    pub max_failures: u32,
    /// How long failures are remembered, and how long an address that reached
    /// `max_failures` is refused.
    pub lockout: Duration,
    /// How long every failed login waits before its error is sent.
    pub failure_delay: Duration,
    /// Failed logins per second from all addresses together; past it every new login
    /// is refused for the rest of that second. At least 1.
    pub max_failures_per_second: u32,
    /// Most addresses remembered at once (bounds the memory the throttle uses); when
    /// full, logins from addresses not remembered are refused until entries expire.
    pub max_tracked_addresses: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            max_failures: 5,
            lockout: Duration::from_secs(60),
            failure_delay: Duration::from_millis(500),
            max_failures_per_second: 20,
            max_tracked_addresses: 10_000,
        }
    }
}

/// Why a login was refused before its password was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// This address failed too often, or has too many logins in progress.
    Address { retry_after: Duration },
    /// Too many failures server-wide this second, or too many addresses tracked.
    Busy,
}

impl Refusal {
    fn into_error(self) -> PgWireError {
        let message = match self {
            Refusal::Address { retry_after } => format!(
                "too many failed login attempts from this address; try again in {} s",
                retry_after.as_secs().max(1)
            ),
            Refusal::Busy => "too many failed login attempts; try again later".to_string(),
        };
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".into(),
            "28000".into(),
            message,
        )))
    }
}

/// Failures and logins in progress per address, and failures server-wide.
#[derive(Debug)]
pub(crate) struct Throttle {
    limits: LoginLimits,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    addresses: HashMap<IpAddr, Entry>,
    /// The current one-second window of the server-wide count.
    second: Option<Instant>,
    failures_this_second: u32,
}

#[derive(Debug, Default)]
struct Entry {
    failures: u32,
    first_failure: Option<Instant>,
    locked_until: Option<Instant>,
    in_progress: u32,
}

impl Entry {
    /// Forgets failures older than `lockout`, and a lockout that has ended.
    fn expire(&mut self, now: Instant, lockout: Duration) {
        if self.locked_until.is_some_and(|until| until <= now) {
            *self = Entry {
                in_progress: self.in_progress,
                ..Entry::default()
            };
        }
        if self.locked_until.is_none()
            && self
                .first_failure
                .is_some_and(|first| now.saturating_duration_since(first) >= lockout)
        {
            self.failures = 0;
            self.first_failure = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.failures == 0 && self.locked_until.is_none() && self.in_progress == 0
    }
}

/// Clients of one IPv6 /64 are usually one host or one site: they share a budget.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        },
    }
}

impl Throttle {
    pub(crate) fn new(limits: LoginLimits) -> Throttle {
        Throttle {
            limits,
            state: Mutex::new(State {
                addresses: HashMap::new(),
                second: None,
                failures_this_second: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere while
        // holding the lock does not make it unusable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn failure_delay(&self) -> Duration {
        self.limits.failure_delay
    }

    /// A login from `ip` starts, or is refused.
    pub(crate) fn begin(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Attempt, Refusal> {
        let key = address_key(ip);
        let limits = &self.limits;
        let mut state = self.lock();
        state.roll_second(now);
        if state.failures_this_second >= limits.max_failures_per_second {
            return Err(Refusal::Busy);
        }
        if !state.addresses.contains_key(&key)
            && state.addresses.len() >= limits.max_tracked_addresses
        {
            state.addresses.retain(|_, e| {
                e.expire(now, limits.lockout);
                !e.is_empty()
            });
            if state.addresses.len() >= limits.max_tracked_addresses {
                return Err(Refusal::Busy);
            }
        }
        let entry = state.addresses.entry(key).or_default();
        entry.expire(now, limits.lockout);
        if let Some(until) = entry.locked_until {
            return Err(Refusal::Address {
                retry_after: until.saturating_duration_since(now),
            });
        }
        if entry.failures.saturating_add(entry.in_progress) >= limits.max_failures {
            // Logins in progress could take this address past its limit.
            let retry_after = match entry.first_failure {
                Some(first) if entry.failures > 0 => {
                    (first + limits.lockout).saturating_duration_since(now)
                }
                _ => limits.failure_delay,
            };
            if entry.is_empty() {
                state.addresses.remove(&key);
            }
            return Err(Refusal::Address { retry_after });
        }
        entry.in_progress += 1;
        Ok(Attempt {
            throttle: self.clone(),
            key,
            ended: false,
        })
    }

    /// An attempt failed: one more failure, one fewer in progress, under one lock so
    /// that the address's count never dips in between.
    fn failed(&self, key: IpAddr, now: Instant) {
        let limits = &self.limits;
        let mut state = self.lock();
        state.roll_second(now);
        state.failures_this_second = state.failures_this_second.saturating_add(1);
        let entry = state.addresses.entry(key).or_default();
        entry.expire(now, limits.lockout);
        entry.in_progress = entry.in_progress.saturating_sub(1);
        entry.failures = entry.failures.saturating_add(1);
        if entry.first_failure.is_none() {
            entry.first_failure = Some(now);
        }
        if entry.failures >= limits.max_failures {
            entry.locked_until = Some(now + limits.lockout);
        }
    }

    fn end(&self, key: IpAddr) {
        let mut state = self.lock();
        if let Some(entry) = state.addresses.get_mut(&key) {
            entry.in_progress = entry.in_progress.saturating_sub(1);
            if entry.is_empty() {
                state.addresses.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().addresses.len()
    }
}

impl State {
    fn roll_second(&mut self, now: Instant) {
        let current = self
            .second
            .is_some_and(|start| now.saturating_duration_since(start) < Duration::from_secs(1));
        if !current {
            self.second = Some(now);
            self.failures_this_second = 0;
        }
    }
}

/// A login in progress; ends (no longer counts as in progress) when it fails or is
/// dropped.
#[derive(Debug)]
pub(crate) struct Attempt {
    throttle: Arc<Throttle>,
    key: IpAddr,
    ended: bool,
}

impl Attempt {
    /// The password was wrong, or the name unknown. The failure counts at once, before
    /// the connection has closed, so the client's next try already sees it.
    pub(crate) fn fail(mut self, now: Instant) {
        self.ended = true;
        self.throttle.failed(self.key, now);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.ended {
            self.throttle.end(self.key);
        }
    }
}

/// The one message for a wrong password and for a name that is not the user, as
/// PostgreSQL words it, with the name the client sent.
fn login_failed(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "28P01".into(),
        format!("password authentication failed for user {user:?}"),
    )))
}

/// A failed password exchange as the client sees it: every wrong password or name
/// reads the same; malformed exchanges keep their protocol error.
fn client_error(e: PgWireError, user: &str) -> PgWireError {
    match e {
        PgWireError::InvalidPassword(_) => login_failed(user),
        PgWireError::UserError(info) if info.code == "28P01" => login_failed(user),
        other => other,
    }
}

/// The SASL startup of one connection behind the throttle: refused at its startup
/// message while its address is locked out; a failed password is counted, delayed
/// and reported with [`login_failed`].
pub(crate) struct Guarded<S> {
    inner: S,
    throttle: Arc<Throttle>,
    peer: IpAddr,
    attempt: Mutex<Option<Attempt>>,
}

impl<S> Guarded<S> {
    pub(crate) fn new(inner: S, throttle: Arc<Throttle>, peer: IpAddr) -> Guarded<S> {
        Guarded {
            inner,
            throttle,
            peer,
            attempt: Mutex::new(None),
        }
    }

    fn attempt(&self) -> MutexGuard<'_, Option<Attempt>> {
        self.attempt.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_failure(&self) {
        let attempt = self.attempt().take();
        if let Some(attempt) = attempt {
            attempt.fail(Instant::now());
        }
    }
}

#[async_trait]
impl<S: StartupHandler> StartupHandler for Guarded<S> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let password = matches!(message, PgWireFrontendMessage::PasswordMessageFamily(_));
        if matches!(message, PgWireFrontendMessage::Startup(_)) {
            let attempt = self
                .throttle
                .begin(self.peer, Instant::now())
                .map_err(|refusal| {
                    tracing::info!(peer = %self.peer, ?refusal, "serve-sql: login refused");
                    refusal.into_error()
                })?;
            *self.attempt() = Some(attempt);
        }
        match self.inner.on_startup(client, message).await {
            Err(e) if password => {
                self.note_failure();
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                tracing::warn!(peer = %self.peer, user = ?user, error = %e, "serve-sql: login failed");
                // Slows guessing down. The failure is already counted, so the
                // address's other connections see it meanwhile.
                tokio::time::sleep(self.throttle.failure_delay()).await;
                Err(client_error(e, &user))
            }
            Ok(()) if matches!(client.state(), PgWireConnectionState::ReadyForQuery) => {
                // Logged in: no longer an attempt in progress.
                self.attempt().take();
                Ok(())
            }
            other => other,
        }
    }
}

const SCRAM_SALT_BYTES: usize = 16;

/// The user's salted password, computed once; and for every other name a decoy:
/// a salt derived from the name (the same on every try, like a real one) and a salted
/// password nothing matches, so the exchange runs to the end and fails like a wrong
/// password, in the same time.
pub(crate) struct Secret {
    user_digest: [u8; 32],
    salt: Vec<u8>,
    salted: Vec<u8>,
    decoy_key: [u8; 32],
    decoy_salted: Vec<u8>,
}

impl Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

/// Equal in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Secret {
    pub(crate) fn new(user: &str, password: &str, iterations: usize) -> Secret {
        let salt: [u8; SCRAM_SALT_BYTES] = rand::random();
        let decoy_salted: [u8; 32] = rand::random();
        Secret {
            user_digest: digest(user.as_bytes()),
            salted: gen_salted_password(password, &salt, iterations),
            salt: salt.to_vec(),
            decoy_key: rand::random(),
            decoy_salted: decoy_salted.to_vec(),
        }
    }

    fn password_for(&self, name: &str) -> Password {
        // Both computed for every name: the work does not depend on which it is.
        let is_user = same(&digest(name.as_bytes()), &self.user_digest);
        let mut h = Sha256::new();
        h.update(self.decoy_key);
        h.update(name.as_bytes());
        let decoy_salt = h.finalize()[..SCRAM_SALT_BYTES].to_vec();
        if is_user {
            Password::new(Some(self.salt.clone()), self.salted.clone())
        } else {
            Password::new(Some(decoy_salt), self.decoy_salted.clone())
        }
    }
}

#[async_trait]
impl AuthSource for Secret {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Ok(self.password_for(login.user().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            max_failures: 3,
            lockout: Duration::from_secs(60),
            failure_delay: Duration::from_millis(1),
            max_failures_per_second: 100,
            max_tracked_addresses: 4,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn fail(t: &Arc<Throttle>, from: IpAddr, now: Instant) {
        t.begin(from, now).expect("not throttled yet").fail(now);
    }

    #[test]
    fn issue_19_an_address_is_locked_out_after_max_failures_and_let_in_after_lockout() {
        let t = Arc::new(Throttle::new(limits()));
        let now = Instant::now();
        for _ in 0..3 {
            fail(&t, ip(1), now);
        }
        match t.begin(ip(1), now + Duration::from_secs(1)) {
            Err(Refusal::Address { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(59));
            }
            other => panic!("expected a lockout, got {other:?}"),
        }
        // Other addresses are not affected.
        drop(t.begin(ip(2), now).expect("another address"));
        // After the lockout the address starts afresh.
        let later = now + Duration::from_secs(60);
        drop(t.begin(ip(1), later).expect("lockout over"));
        fail(&t, ip(1), later);
        fail(&t, ip(1), later);
        drop(t.begin(ip(1), later).expect("two failures of three"));
    }

    #[test]
    fn issue_19_failures_older_than_the_window_are_forgotten() {
        let t = Arc::new(Throttle::new(limits()));
        let now = Instant::now();
        fail(&t, ip(1), now);
        fail(&t, ip(1), now);
        let later = now + Duration::from_secs(61);
        fail(&t, ip(1), later);
        fail(&t, ip(1), later);
        drop(t.begin(ip(1), later).expect("the first two were forgotten"));
    }

    #[test]
    fn issue_19_logins_in_progress_count_against_the_address() {
        let t = Arc::new(Throttle::new(limits()));
        let now = Instant::now();
        let held: Vec<Attempt> = (0..3)
            .map(|_| t.begin(ip(1), now).expect("three at once"))
            .collect();
        assert!(matches!(t.begin(ip(1), now), Err(Refusal::Address { .. })));
        drop(held);
        drop(
            t.begin(ip(1), now)
                .expect("the others ended without failing"),
        );
        assert_eq!(
            t.tracked(),
            0,
            "nothing kept for an address without failures"
        );
    }

    #[test]
    fn issue_19_a_failed_attempt_counts_once() {
        let t = Arc::new(Throttle::new(limits()));
        let now = Instant::now();
        let first = t.begin(ip(1), now).expect("first");
        let second = t.begin(ip(1), now).expect("second");
        first.fail(now);
        // One failure and one in progress: one more may start.
        let third = t.begin(ip(1), now).expect("third");
        assert!(t.begin(ip(1), now).is_err(), "three counted");
        drop(second);
        drop(third);
        drop(t.begin(ip(1), now).expect("only the failure is left"));
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn issue_19_server_wide_failures_per_second_are_capped() {
        let t = Arc::new(Throttle::new(LoginLimits {
            max_failures_per_second: 2,
            ..limits()
        }));
        let now = Instant::now();
        fail(&t, ip(1), now);
        fail(&t, ip(2), now);
        assert_eq!(t.begin(ip(3), now).err(), Some(Refusal::Busy));
        drop(
            t.begin(ip(3), now + Duration::from_secs(1))
                .expect("next second"),
        );
    }

    #[test]
    fn issue_19_tracked_addresses_are_bounded() {
        let t = Arc::new(Throttle::new(limits()));
        let now = Instant::now();
        for last in 1..=4 {
            fail(&t, ip(last), now);
        }
        assert_eq!(t.tracked(), 4);
        assert_eq!(t.begin(ip(5), now).err(), Some(Refusal::Busy));
        assert_eq!(t.tracked(), 4);
        // Expired entries make room.
        let later = now + Duration::from_secs(61);
        drop(t.begin(ip(5), later).expect("room again"));
        assert!(t.tracked() <= 4);
    }

    #[test]
    fn issue_19_ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(address_key(mapped), ip(1));
    }

    /// pgwire words a failed SCRAM proof with the SCRAM name (empty from libpq), the
    /// old unknown-name path its own way: both now read as PostgreSQL's message with
    /// the name from the startup packet.
    #[test]
    fn issue_19_wrong_name_and_wrong_password_read_the_same() {
        let text = |e: PgWireError| {
            let info: ErrorInfo = e.into();
            (info.severity, info.code, info.message)
        };
        let from_proof = text(client_error(
            PgWireError::InvalidPassword(String::new()),
            "intruder",
        ));
        let from_lookup = text(client_error(
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                "no such user".into(),
            ))),
            "intruder",
        ));
        assert_eq!(from_proof, from_lookup);
        assert_eq!(
            from_proof,
            (
                "FATAL".to_string(),
                "28P01".to_string(),
                "password authentication failed for user \"intruder\"".to_string()
            )
        );
        // A malformed exchange keeps its protocol error.
        let malformed = text(client_error(
            PgWireError::InvalidScramMessage("bad".into()),
            "intruder",
        ));
        assert_eq!(malformed.1, "08P01");
    }

    #[test]
    fn issue_19_an_unknown_name_gets_a_stable_decoy_salt() {
        let secret = Secret::new("toolgate", "s3cret", 4096);
        let user = secret.password_for("toolgate");
        let decoy = secret.password_for("intruder");
        assert_eq!(user.salt().map(<[u8]>::len), Some(SCRAM_SALT_BYTES));
        assert_eq!(decoy.salt().map(<[u8]>::len), Some(SCRAM_SALT_BYTES));
        assert_eq!(decoy.password().len(), user.password().len());
        assert_ne!(decoy.salt(), user.salt());
        assert_ne!(decoy.password(), user.password());
        // The same name gets the same salt each time, as a real user would.
        assert_eq!(secret.password_for("intruder").salt(), decoy.salt());
        assert_ne!(secret.password_for("intruder2").salt(), decoy.salt());
        assert_eq!(
            user.password(),
            gen_salted_password("s3cret", user.salt().expect("salt"), 4096)
        );
    }
}
