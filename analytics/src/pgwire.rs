//! The history over the PostgreSQL wire protocol (`toolgate serve-sql`): psql, Grafana,
//! Metabase and pandas connect as to PostgreSQL. Built on `datafusion-postgres` (the
//! query handlers and a `pg_catalog` that clients introspect) with our own startup
//! (optional SCRAM-SHA-256 password, with failed logins throttled) and a hook in front of every
//! statement that refuses anything but reads (SQLSTATE 25006,
//! `read_only_sql_transaction`).
//!
//! Every connection gets a session of its own over the shared tables, with a memory
//! pool capped at the per-query limit inside the server's, and its work is
//! dropped as soon as the client closes the connection.

mod login;
mod memory;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::ScramAuth;
use datafusion_postgres::pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::tokio::process_socket;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

pub use login::LoginLimits;

use crate::sql::readonly;

/// Who may connect.
#[derive(Clone)]
pub struct Access {
    /// The user name clients must give; any name when no password is set.
    pub user: String,
    /// The password (SCRAM-SHA-256); `None` accepts every connection, which only makes
    /// sense on loopback.
    pub password: Option<String>,
}

impl Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// What the server lets clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes all queries together may reserve in DataFusion's memory pool.
    pub memory: usize,
    /// Bytes one query may reserve (one connection's statements; at most `memory`).
    pub query_memory: usize,
    /// Failed-login throttling, when a password is set.
    pub login: LoginLimits,
}

/// The memory all queries together may use by default (1 GiB); one query may use a
/// quarter of it.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY_LIMIT,
            query_memory: DEFAULT_MEMORY_LIMIT / 4,
            login: LoginLimits::default(),
        }
    }
}

/// Serves `ctx` on `listener` until the task is dropped. Every connection gets its own
/// task; a failed connection is logged to stderr and does not stop the server.
pub async fn serve(
    ctx: SessionContext,
    listener: TcpListener,
    access: Access,
    limits: Limits,
) -> std::io::Result<()> {
    setup_pg_catalog(&ctx, "datafusion", Arc::new(AuthManager::default()))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    ctx.register_udf(version_udf());
    ctx.register_udf(
        to_regtype_udf(&ctx)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(SavepointHook),
        Arc::new(ReadOnlyHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let sessions = Arc::new(Sessions {
        base: ctx,
        hooks,
        memory: memory::ServerMemory::new(limits.memory, limits.query_memory),
    });
    match &access.password {
        None => accept(listener, sessions, |_| Arc::new(Open)).await,
        Some(password) => {
            let secret = Arc::new(login::Secret::new(&access.user, password, SCRAM_ITERATIONS));
            let throttle = Arc::new(login::Throttle::new(limits.login.clone()));
            let mut params = DefaultServerParameterProvider::default();
            params.default_transaction_read_only = true;
            let params = Arc::new(params);
            // A SASL handler holds one exchange's state: a new one per connection.
            let startup = move |peer: SocketAddr| {
                let mut scram = ScramAuth::new(secret.clone());
                scram.set_iterations(SCRAM_ITERATIONS);
                Arc::new(login::Guarded::new(
                    SASLAuthStartupHandler::new(params.clone()).with_scram(scram),
                    throttle.clone(),
                    peer.ip(),
                ))
            };
            accept(listener, sessions, startup).await
        }
    }
}

/// What `version()` answers: PostgreSQL's form first, since clients parse it
/// (SQLAlchemy's PostgreSQL dialects refuse to connect to "Apache DataFusion 55...").
/// The major version matches the `server_version` sent at startup.
pub const SERVER_VERSION: &str = concat!(
    "PostgreSQL 16.6 on toolgate serve-sql ",
    env!("CARGO_PKG_VERSION"),
    " (Apache DataFusion; read-only)"
);

fn version_udf() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::scalar::ScalarValue;
    create_udf(
        "version",
        Vec::new(),
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                SERVER_VERSION.to_string(),
            ))))
        }),
    )
}

/// `to_regtype(name)`: the oid of the type named, or NULL, from the catalog's
/// `pg_type` (read once: it is static). psycopg looks types up with it (SQLAlchemy's
/// psycopg dialect asks for `hstore` on connect).
async fn to_regtype_udf(
    ctx: &SessionContext,
) -> Result<datafusion::logical_expr::ScalarUDF, DataFusionError> {
    use std::collections::HashMap;

    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::scalar::ScalarValue;

    let frame = ctx
        .sql("SELECT typname, CAST(oid AS BIGINT) AS oid FROM pg_catalog.pg_type")
        .await?;
    let mut oids: HashMap<String, i64> = HashMap::new();
    for batch in frame.collect().await? {
        let names = cast(batch.column(0), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let values = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if names.is_valid(i) && values.is_valid(i) {
                oids.insert(names.value(i).to_string(), values.value(i));
            }
        }
    }
    let lookup = move |name: &str| {
        let name = name.trim().trim_matches('"').to_ascii_lowercase();
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        oids.get(name).copied()
    };
    Ok(create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| match &args[0] {
            ColumnarValue::Scalar(ScalarValue::Utf8(name)) => Ok(ColumnarValue::Scalar(
                ScalarValue::Int64(name.as_deref().and_then(&lookup)),
            )),
            ColumnarValue::Scalar(_) => Ok(ColumnarValue::Scalar(ScalarValue::Int64(None))),
            ColumnarValue::Array(names) => {
                let names = cast(names, &DataType::Utf8)?;
                let oids: Int64Array = names
                    .as_string::<i32>()
                    .iter()
                    .map(|n| n.and_then(&lookup))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(oids)))
            }
        }),
    ))
}

/// The shared tables and functions, and what each connection's session is made from.
struct Sessions {
    base: SessionContext,
    hooks: Vec<Arc<dyn QueryHook>>,
    memory: memory::ServerMemory,
}

impl Sessions {
    /// A session for one connection: the same catalog, functions and settings as the
    /// base (its `SET`s stay its own), and a memory pool of its own in the server's.
    fn service(&self) -> Result<Arc<DfSessionService>, DataFusionError> {
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.base.runtime_env())
            .with_memory_pool(self.memory.query_pool())
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(self.base.state())
            .with_runtime_env(runtime)
            .build();
        Ok(Arc::new(DfSessionService::new_with_hooks(
            Arc::new(SessionContext::new_with_state(state)),
            self.hooks.clone(),
        )))
    }
}

/// How long to wait after `accept` fails (e.g. out of file descriptors) before trying
/// again, instead of ending the server.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

async fn accept<S, F>(
    listener: TcpListener,
    sessions: Arc<Sessions>,
    startup: F,
) -> std::io::Result<()>
where
    S: StartupHandler + 'static,
    F: Fn(SocketAddr) -> Arc<S>,
{
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(e) => {
                tracing::warn!(error = %e, "serve-sql: accepting a connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let startup = startup(peer);
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let result = match sessions.service() {
                Ok(service) => connection(socket, Handlers { service, startup }).await,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            if let Err(e) = result {
                log_connection_error(peer, &e);
            }
        });
    }
}

fn log_connection_error(peer: SocketAddr, e: &std::io::Error) {
    tracing::warn!(%peer, error = %e, "serve-sql: a connection failed");
}

/// Runs one connection until it ends or the client closes it.
///
/// pgwire reads the socket only between statements: while a statement runs nothing
/// notices the client has gone, and a query that sends no rows until it is done (a
/// cross join under `count(*)`) would run to the end. So a second handle on the same
/// socket watches for the close, and when it comes the connection's future is dropped:
/// with it the statement's stream, and DataFusion aborts the tasks behind it.
async fn connection<H: PgWireServerHandlers>(
    socket: TcpStream,
    handlers: H,
) -> std::io::Result<()> {
    let socket = socket.into_std()?;
    let watch = TcpStream::from_std(socket.try_clone()?)?;
    let socket = TcpStream::from_std(socket)?;
    tokio::select! {
        result = process_socket(socket, None, handlers) => result,
        () = client_gone(&watch) => {
            tracing::debug!("serve-sql: the client closed the connection; dropping its work");
            Ok(())
        }
    }
}

/// How often a socket with unread messages is looked at again for a close.
const CLOSE_CHECK: Duration = Duration::from_millis(200);

/// Returns once the client has closed the connection (or it failed).
///
/// This handle never reads, so once a message has arrived it stays readable; what
/// marks the close is "read closed" (the peer's FIN or a reset), which stays set once
/// seen. Until then, look again now and then rather than spin.
async fn client_gone(watch: &TcpStream) {
    loop {
        match watch.ready(Interest::READABLE).await {
            Ok(ready) if !ready.is_read_closed() => {}
            _ => return,
        }
        tokio::time::sleep(CLOSE_CHECK).await;
    }
}

/// One connection's handlers.
struct Handlers<S> {
    service: Arc<DfSessionService>,
    startup: Arc<S>,
}

impl<S: StartupHandler + 'static> PgWireServerHandlers for Handlers<S> {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Errors)
    }
}

/// A query refused memory reaches the client as PostgreSQL's `out_of_memory` (53200)
/// with DataFusion's "Resources exhausted" message, not as an internal error.
struct Errors;

impl ErrorHandler for Errors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        out_of_memory(error);
    }
}

fn out_of_memory(error: &mut PgWireError) {
    if let Some(message) = resources_exhausted(error) {
        *error = PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "53200".into(),
            message,
        )));
    }
}

fn resources_exhausted(error: &PgWireError) -> Option<String> {
    let PgWireError::ApiError(e) = error else {
        return None;
    };
    let root = e.downcast_ref::<DataFusionError>()?.find_root();
    match root {
        DataFusionError::ResourcesExhausted(_) => {
            Some(format!("Resources exhausted: {}", root.message()))
        }
        _ => None,
    }
}

/// No password: every connection is accepted.
struct Open;

impl NoopStartupHandler for Open {}

const SCRAM_ITERATIONS: usize = 4096;

/// Refuses every statement that is not a read, before it is planned.
/// Savepoints, accepted and kept as nothing: nothing here can be written, so there is
/// nothing to roll back to. psycopg (and SQLAlchemy's psycopg dialect on connect) wraps
/// work in `SAVEPOINT`; refusing it refused the connection. `ROLLBACK TO SAVEPOINT`
/// keeps the transaction open, as PostgreSQL does, where DataFusion-postgres's
/// transaction hook would end it.
struct SavepointHook;

fn savepoint_tag(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Savepoint { .. } => Some("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Some("RELEASE"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some("ROLLBACK"),
        _ => None,
    }
}

#[async_trait]
impl QueryHook for SavepointHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        savepoint_tag(statement).map(|tag| Ok(Response::Execution(Tag::new(tag))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        savepoint_tag(statement).map(|_| {
            Ok(LogicalPlan::EmptyRelation(
                datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: Arc::new(datafusion::common::DFSchema::empty()),
                },
            ))
        })
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        savepoint_tag(statement).map(|tag| Ok(Response::Execution(Tag::new(tag))))
    }
}

struct ReadOnlyHook;

fn refusal(statement: &Statement) -> Option<PgWireError> {
    if sets_runtime(statement) {
        return Some(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "42501".into(),
            "serve-sql fixes DataFusion's runtime settings (memory limit, spill files): \
             datafusion.runtime.* cannot be SET"
                .into(),
        ))));
    }
    readonly::allowed(statement).err().map(|message| {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "25006".into(),
            message,
        )))
    })
}

/// `SET datafusion.runtime.memory_limit` would give the session a new memory pool of
/// the client's choosing, outside the server's limits (and `temp_directory` would put
/// spill files anywhere). Quotes are dropped before looking, as DataFusion drops them.
fn sets_runtime(statement: &Statement) -> bool {
    if !matches!(statement, Statement::Set(_)) {
        return false;
    }
    let text: String = statement
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '"' | '`'))
        .collect();
    text.to_lowercase().contains("datafusion.runtime.")
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refusal(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        refusal(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refusal(statement).map(Err)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0)
    }

    fn code(sql: &str) -> Option<String> {
        refusal(&statement(sql)).map(|e| ErrorInfo::from(e).code)
    }

    /// The runtime settings would swap the session's memory pool for one without the
    /// server's limits.
    #[test]
    fn issue_19_runtime_settings_cannot_be_set() {
        for sql in [
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET \"datafusion.runtime.memory_limit\" = '100G'",
            "SET DataFusion.Runtime.temp_directory = '/tmp/x'",
        ] {
            assert_eq!(code(sql).as_deref(), Some("42501"), "{sql}");
        }
        for sql in [
            "SET datafusion.execution.time_zone = 'UTC'",
            "SET extra_float_digits = 3",
            "SELECT 'datafusion.runtime.memory_limit'",
        ] {
            assert_eq!(code(sql), None, "{sql}");
        }
    }

    #[test]
    fn issue_19_resources_exhausted_reaches_the_client_as_out_of_memory() {
        let inner = DataFusionError::ResourcesExhausted("too big".into());
        let wrapped = DataFusionError::Context("joining".into(), Box::new(inner));
        let mut error = PgWireError::ApiError(Box::new(wrapped));
        out_of_memory(&mut error);
        let info = ErrorInfo::from(error);
        assert_eq!(info.code, "53200");
        assert_eq!(info.message, "Resources exhausted: too big");
        let mut other = PgWireError::ApiError(Box::new(DataFusionError::Plan("no".into())));
        out_of_memory(&mut other);
        assert_eq!(ErrorInfo::from(other).code, "XX000");
    }
}
