//! The PostgreSQL wire protocol (`--sql.listen-address`), with the pgwire crate: `psql`,
//! drivers and BI tools send SQL and receive rows. The simple query protocol; no
//! authentication and no TLS yet (listen on loopback, or behind a proxy that has them).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{stream, Sink};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use promflow_storage::Querier;
use tokio::net::TcpListener;

use crate::compile::ColumnKind;
use crate::exec::{ExecError, Settings};
use crate::rows::{Cell, Rows};
use crate::Error;

/// Answers SQL on the PostgreSQL wire protocol from one storage.
struct Handler {
    querier: Arc<dyn Querier>,
    settings: Settings,
}

impl NoopStartupHandler for Handler {}

/// An error as PostgreSQL reports it: severity, SQLSTATE and message.
fn error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// The PostgreSQL type of a column.
fn pg_type(kind: ColumnKind) -> Type {
    match kind {
        ColumnKind::Text => Type::TEXT,
        ColumnKind::Timestamp => Type::TIMESTAMPTZ,
        ColumnKind::Double => Type::FLOAT8,
    }
}

/// A cell as PostgreSQL's text format writes it.
fn text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Null => None,
        Cell::Text(s) => Some(s.clone()),
        Cell::Number(v) if v.is_nan() => Some("NaN".into()),
        Cell::Number(v) if v.is_infinite() => Some(if *v > 0.0 { "Infinity" } else { "-Infinity" }.into()),
        Cell::Number(v) => Some(v.to_string()),
        Cell::Timestamp(s) => {
            let ms = (s * 1000.0).round() as i64;
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string())
        }
    }
}

/// The command tag of a statement that only concerns the session, which drivers send on
/// their own (psycopg opens a transaction before its first query): promflow has no
/// transactions and no settings, so these succeed and change nothing.
fn session_command(query: &str) -> Option<&'static str> {
    let first = query.split_whitespace().next()?.trim_end_matches(';').to_ascii_uppercase();
    match first.as_str() {
        "BEGIN" | "START" => Some("BEGIN"),
        "COMMIT" | "END" => Some("COMMIT"),
        "ROLLBACK" | "ABORT" => Some("ROLLBACK"),
        "SET" | "RESET" => Some("SET"),
        "DISCARD" => Some("DISCARD"),
        _ => None,
    }
}

fn response(rows: Rows) -> PgWireResult<Response> {
    let fields: Vec<FieldInfo> = rows
        .columns
        .iter()
        .map(|c| FieldInfo::new(c.name.clone(), None, None, pg_type(c.source.kind()), FieldFormat::Text))
        .collect();
    let schema = Arc::new(fields);
    let mut encoded = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        let mut encoder = DataRowEncoder::new(Arc::clone(&schema));
        for cell in row {
            encoder.encode_field(&text(cell))?;
        }
        encoded.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(schema, stream::iter(encoded))))
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if query.trim().trim_end_matches(';').trim().is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        if let Some(tag) = session_command(query) {
            return Ok(vec![Response::Execution(Tag::new(tag))]);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let statement = crate::compile(query, now).map_err(|e| match e {
            Error::Parse(m) => error("42601", m),
            e => error("0A000", e.to_string()),
        })?;
        let (querier, settings) = (Arc::clone(&self.querier), self.settings.clone());
        let rows = tokio::task::spawn_blocking(move || statement.execute(querier.as_ref(), &settings))
            .await
            .map_err(|e| error("XX000", format!("query panicked: {e}")))?
            .map_err(|e| match e {
                ExecError::NoTable(_) => error("42P01", e.to_string()),
                ExecError::Engine(promflow_engine::Error::Timeout(_)) => error("57014", e.to_string()),
                e => error("XX000", e.to_string()),
            })?;
        Ok(vec![response(rows)?])
    }
}

struct Handlers(Arc<Handler>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.0)
    }
}

/// Serves the wire protocol on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, querier: Arc<dyn Querier>, settings: Settings) {
    let handlers = Arc::new(Handlers(Arc::new(Handler { querier, settings })));
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let handlers = Arc::clone(&handlers);
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                        tracing::debug!(%peer, error = %e, "SQL wire connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a SQL wire connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
