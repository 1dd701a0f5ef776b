//! The history over the PostgreSQL wire protocol (`toolgate serve-sql`): psql, Grafana,
//! Metabase and pandas connect as to PostgreSQL. Built on `datafusion-postgres` (the
//! query handlers and a `pg_catalog` that clients introspect) with our own startup
//! (optional SCRAM-SHA-256 password) and a hook in front of every statement that
//! refuses anything but reads (SQLSTATE 25006, `read_only_sql_transaction`).

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
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
use datafusion_postgres::pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::{ClientInfo, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::tokio::process_socket;
use tokio::net::TcpListener;

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

/// Serves `ctx` on `listener` until the task is dropped. Every connection gets its own
/// task; a failed connection is logged to stderr and does not stop the server.
pub async fn serve(
    ctx: SessionContext,
    listener: TcpListener,
    access: Access,
) -> std::io::Result<()> {
    setup_pg_catalog(&ctx, "datafusion", Arc::new(AuthManager::default()))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnlyHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let service = Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), hooks));
    match &access.password {
        None => {
            let startup = Box::new(|| Arc::new(Open));
            accept(listener, Arc::new(Handlers { service, startup })).await
        }
        Some(password) => {
            let secret = Arc::new(Secret::new(&access.user, password));
            let mut params = DefaultServerParameterProvider::default();
            params.default_transaction_read_only = true;
            let params = Arc::new(params);
            // A SASL handler holds one exchange's state: a new one per connection.
            let startup = Box::new(move || {
                let mut scram = ScramAuth::new(secret.clone());
                scram.set_iterations(SCRAM_ITERATIONS);
                Arc::new(SASLAuthStartupHandler::new(params.clone()).with_scram(scram))
            });
            accept(listener, Arc::new(Handlers { service, startup })).await
        }
    }
}

async fn accept<S: StartupHandler + 'static>(
    listener: TcpListener,
    handlers: Arc<Handlers<S>>,
) -> std::io::Result<()> {
    loop {
        let (socket, peer) = listener.accept().await?;
        let handlers = handlers.clone();
        tokio::spawn(async move {
            if let Err(e) = process_socket(socket, None, handlers).await {
                log_connection_error(peer, &e);
            }
        });
    }
}

fn log_connection_error(peer: SocketAddr, e: &std::io::Error) {
    tracing::warn!(%peer, error = %e, "serve-sql: a connection failed");
}

struct Handlers<S> {
    service: Arc<DfSessionService>,
    startup: Box<dyn Fn() -> Arc<S> + Send + Sync>,
}

impl<S: StartupHandler + 'static> PgWireServerHandlers for Handlers<S> {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        (self.startup)()
    }
}

/// No password: every connection is accepted.
struct Open;

impl NoopStartupHandler for Open {}

const SCRAM_ITERATIONS: usize = 4096;

/// The one user's salted password, computed once.
#[derive(Debug)]
struct Secret {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl Secret {
    fn new(user: &str, password: &str) -> Secret {
        let salt: [u8; 16] = rand::random();
        Secret {
            user: user.to_string(),
            salted: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            salt: salt.to_vec(),
        }
    }
}

#[async_trait]
impl AuthSource for Secret {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() != Some(self.user.as_str()) {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!(
                    "password authentication failed for user {:?}",
                    login.user().unwrap_or("")
                ),
            ))));
        }
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// Refuses every statement that is not a read, before it is planned.
struct ReadOnlyHook;

fn refusal(statement: &Statement) -> Option<PgWireError> {
    readonly::allowed(statement).err().map(|message| {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "25006".into(),
            message,
        )))
    })
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
