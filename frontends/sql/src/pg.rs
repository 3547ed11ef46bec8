//! The PostgreSQL wire protocol (`--sql.listen-address`), with the pgwire crate: `psql`,
//! drivers and BI tools send SQL and receive rows. The simple query protocol, and the
//! extended one (parse, bind with `$n` parameters, describe, execute) that drivers use by
//! default; results in text or binary format as the client asks. Sessions take the TLS and
//! the users of `--web.config.file` ([`serve`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures_util::{stream, Sink, SinkExt};
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::{ParameterStatus, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use postgres_types::Kind;
use promflow_config::web::{Access, WebGuard};
use promflow_storage::Querier;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::binary;
use crate::bind::{self, Param};
use crate::compile::{ColumnKind, Source, Statement};
use crate::cursor::{self, Command, Cursor, CursorError};
use crate::exec::{ExecError, Settings};
use crate::rows::{Cell, Rows};
use crate::Error;

/// The most answers computed to describe a portal and kept for its execution; more are
/// dropped (their executions compute them again).
const DESCRIBED_MAX: usize = 64;

/// The most cursors one session holds open at once; PostgreSQL has no such limit, but every
/// cursor here holds its whole answer.
const CURSORS_PER_SESSION: usize = 64;

/// Answers SQL on the PostgreSQL wire protocol from one storage.
struct Handler {
    querier: Arc<dyn Querier>,
    settings: Settings,
    /// `--query.max-concurrency`'s slots, shared with the HTTP API.
    slots: Arc<Semaphore>,
    /// The runtime whose blocking threads evaluate statements (the server's query pool,
    /// below ingest's priority).
    pool: tokio::runtime::Handle,
    /// The sessions running a statement, by the key their cancel requests carry.
    running: Arc<ConnectionManager>,
    /// Answers computed to describe a portal (drivers describe, then execute, in one round
    /// trip), by client and portal, taken by the execution so the query runs once.
    described: Mutex<HashMap<Bound, Rows>>,
    /// The open cursors (`DECLARE … CURSOR`) of each session, by name.
    cursors: Mutex<HashMap<SocketAddr, HashMap<String, Cursor>>>,
}

#[async_trait]
impl NoopStartupHandler for Handler {
    /// pgwire's start-up announces its own `server_version`; the last announcement is the one
    /// clients keep, so promflow's follows it (the password start-up is given it directly).
    async fn post_startup<C>(&self, client: &mut C, _message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let status = ParameterStatus::new("server_version".into(), crate::catalog::server_version());
        client.send(PgWireBackendMessage::ParameterStatus(status)).await?;
        Ok(())
    }
}

/// The parameters a session starts with: pgwire's, with promflow's `server_version`.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = crate::catalog::server_version();
    parameters
}

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
        ColumnKind::Integer => Type::INT8,
        ColumnKind::Boolean => Type::BOOL,
        ColumnKind::Int4 => Type::INT4,
        ColumnKind::Numeric => Type::NUMERIC,
        ColumnKind::Date => Type::DATE,
        ColumnKind::Interval => Type::INTERVAL,
        ColumnKind::LocalTimestamp => Type::TIMESTAMP,
        ColumnKind::TextArray => Type::TEXT_ARRAY,
        ColumnKind::IntegerArray => Type::INT8_ARRAY,
        ColumnKind::DoubleArray => Type::FLOAT8_ARRAY,
        ColumnKind::Json => Type::JSONB,
    }
}

/// A cell of a column of type `kind` as PostgreSQL's text format writes it.
fn text(cell: &Cell, kind: &Type) -> Option<String> {
    match cell {
        Cell::Null => None,
        Cell::Text(s) => Some(s.to_string()),
        Cell::Bool(b) => Some(if *b { "t" } else { "f" }.into()),
        Cell::Number(v) if *kind == Type::INT8 || *kind == Type::INT4 => Some(format!("{}", *v as i64)),
        Cell::Number(v) => Some(crate::rows::float8_text(*v)),
        Cell::Timestamp(s) if *kind == Type::TIMESTAMP => {
            date_time(*s).map(|t| timestamptz_text(&t).trim_end_matches("+00").to_string())
        }
        Cell::Timestamp(s) => date_time(*s).map(|t| timestamptz_text(&t)),
    }
}

/// A `timestamptz` as PostgreSQL writes it in UTC: the fraction of a second only when there
/// is one, without trailing zeros (`2026-11-25 09:00:00+00`, `… 09:00:00.25+00`).
fn timestamptz_text(t: &chrono::DateTime<chrono::Utc>) -> String {
    let millis = t.timestamp_subsec_millis();
    let fraction =
        if millis == 0 { String::new() } else { format!(".{millis:03}").trim_end_matches('0').to_string() };
    format!("{}{fraction}+00", t.format("%Y-%m-%d %H:%M:%S"))
}

/// A statement that only concerns the session, which drivers send on their own (psycopg
/// opens a transaction before its first query, and a savepoint for a nested one): promflow's
/// data is read-only to SQL and its settings are fixed, so these succeed and change no data;
/// a transaction's end closes its cursors.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SessionCommand {
    Begin,
    Commit,
    Rollback,
    /// `ROLLBACK TO [SAVEPOINT] name`: the transaction goes on.
    RollbackTo,
    Savepoint,
    Release,
    Set,
    Discard,
    /// `DISCARD ALL`, which a connection pool sends between clients: it closes every cursor.
    DiscardAll,
}

impl SessionCommand {
    /// The command `query` is, if it only concerns the session.
    fn of(query: &str) -> Option<SessionCommand> {
        let mut words = query.split_whitespace().map(|w| w.trim_end_matches(';').to_ascii_uppercase());
        Some(match words.next()?.as_str() {
            "BEGIN" | "START" => SessionCommand::Begin,
            "COMMIT" | "END" => SessionCommand::Commit,
            "ROLLBACK" | "ABORT" => {
                // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
                let next = words.find(|w| w != "WORK" && w != "TRANSACTION");
                if next.as_deref() == Some("TO") {
                    SessionCommand::RollbackTo
                } else {
                    SessionCommand::Rollback
                }
            }
            "SAVEPOINT" => SessionCommand::Savepoint,
            "RELEASE" => SessionCommand::Release,
            "SET" | "RESET" => SessionCommand::Set,
            "DISCARD" if words.next().is_some_and(|w| w == "ALL") => SessionCommand::DiscardAll,
            "DISCARD" => SessionCommand::Discard,
            _ => return None,
        })
    }

    /// The answer, as the protocol reports it.
    fn response(self) -> Response {
        match self {
            SessionCommand::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            SessionCommand::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            SessionCommand::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            SessionCommand::RollbackTo => Response::Execution(Tag::new("ROLLBACK")),
            SessionCommand::Savepoint => Response::Execution(Tag::new("SAVEPOINT")),
            SessionCommand::Release => Response::Execution(Tag::new("RELEASE")),
            SessionCommand::Set => Response::Execution(Tag::new("SET")),
            SessionCommand::Discard => Response::Execution(Tag::new("DISCARD")),
            SessionCommand::DiscardAll => Response::Execution(Tag::new("DISCARD ALL")),
        }
    }
}

/// Column `i`'s format in `format` (text where the client named fewer formats than columns).
fn format_of(format: &Format, i: usize) -> FieldFormat {
    match format {
        Format::Individual(f) if i >= f.len() => FieldFormat::Text,
        f => f.format_for(i),
    }
}

/// The row description of `columns`, in the formats the client asked for.
fn fields(columns: &[crate::Column], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FieldInfo::new(c.name.clone(), None, None, pg_type(c.source.kind()), format_of(format, i))
        })
        .collect()
}

/// Seconds since the epoch as a point in time (to the millisecond, promflow's resolution).
fn date_time(seconds: f64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis((seconds * 1000.0).round() as i64)
}

/// Writes `cell`, of type `kind`, in its field's format: text as PostgreSQL writes it, or
/// binary.
fn encode(
    encoder: &mut DataRowEncoder,
    field: &FieldInfo,
    kind: ColumnKind,
    cell: &Cell,
) -> PgWireResult<()> {
    if field.format() == FieldFormat::Text {
        // written as text of type `text`: pgwire would quote an array's whole text as one
        // element
        let options = field.format_options();
        return encoder.encode_field_with_type_and_format(
            &text(cell, field.datatype()),
            &Type::TEXT,
            FieldFormat::Text,
            options.as_ref(),
        );
    }
    match cell {
        Cell::Null => encoder.encode_field(&None::<f64>),
        // the types held as their text have a binary form of their own
        Cell::Text(s) => match binary::encode(kind, s) {
            Some(bytes) => {
                let bytes = bytes.map_err(|e| match e {
                    binary::BinaryError::Dimensions => error("0A000", e.to_string()),
                    binary::BinaryError::NotOfType { .. } => error("22P02", e.to_string()),
                })?;
                encoder.encode_field_with_type_and_format(
                    &bytes,
                    field.datatype(),
                    FieldFormat::Binary,
                    field.format_options().as_ref(),
                )
            }
            None => encoder.encode_field(&s.as_ref()),
        },
        Cell::Number(v) if *field.datatype() == Type::INT8 => encoder.encode_field(&(*v as i64)),
        Cell::Number(v) if *field.datatype() == Type::INT4 => encoder.encode_field(&(*v as i32)),
        Cell::Timestamp(s) if *field.datatype() == Type::TIMESTAMP => {
            encoder.encode_field(&date_time(*s).map(|t| t.naive_utc()))
        }
        Cell::Number(v) => encoder.encode_field(v),
        Cell::Bool(b) => encoder.encode_field(b),
        Cell::Timestamp(s) => encoder.encode_field(&date_time(*s)),
    }
}

/// The answer of a query: every row of `rows`.
fn response(rows: &Rows, format: &Format) -> PgWireResult<Response> {
    Ok(Response::Query(some_rows(rows, 0..rows.len(), format)?))
}

/// Rows `indices` of `rows` (a cursor's `FETCH` answers some of its rows, in its order).
fn some_rows(
    rows: &Rows,
    indices: impl ExactSizeIterator<Item = usize>,
    format: &Format,
) -> PgWireResult<QueryResponse> {
    let schema = Arc::new(fields(&rows.columns, format));
    let kinds: Vec<ColumnKind> = rows.columns.iter().map(|c| c.source.kind()).collect();
    let mut encoded = Vec::with_capacity(indices.len());
    for index in indices {
        let mut encoder = DataRowEncoder::new(Arc::clone(&schema));
        for ((field, kind), cell) in schema.iter().zip(&kinds).zip(rows.row(index).cells()) {
            encode(&mut encoder, field, *kind, &cell)?;
        }
        encoded.push(Ok(encoder.take_row()));
    }
    Ok(QueryResponse::new(schema, stream::iter(encoded)))
}

fn compile(sql: &str) -> PgWireResult<Statement> {
    crate::prepare(sql, chrono::Utc::now().timestamp_millis()).map_err(refusal)
}

/// A statement promflow does not take, with PostgreSQL's SQLSTATE: a syntax error, a statement
/// too deep, or what is not supported (0A000).
fn refusal(e: Error) -> PgWireError {
    match e {
        Error::Parse(m) => error("42601", m),
        Error::TooComplex(m) => error("54001", m),
        e => error("0A000", e.to_string()),
    }
}

impl Handler {
    /// Compiles and runs `sql` off the async threads, in one of `--query.max-concurrency`'s
    /// slots (the wait counts toward the timeout, as for the HTTP API), until it ends or the
    /// session's cancel request (`session` is its process id and secret key) arrives.
    async fn rows(&self, session: (i32, SecretKey), sql: &str) -> PgWireResult<Rows> {
        let statement = compile(sql)?;
        let deadline = Instant::now() + self.settings.timeout;
        let slot = match tokio::time::timeout(self.settings.timeout, Arc::clone(&self.slots).acquire_owned()).await
        {
            Ok(Ok(slot)) => slot,
            _ => return Err(error("57014", "canceling statement due to statement timeout: no query slot became free (--query.max-concurrency)".into())),
        };
        let canceled = Arc::new(AtomicBool::new(false));
        let settings = Settings {
            timeout: deadline.saturating_duration_since(Instant::now()),
            canceled: Some(Arc::clone(&canceled)),
            ..self.settings.clone()
        };
        let (session, _registered) = self.running.register(session.0, session.1);
        let cancel_request = session.start_query().await;
        let querier = Arc::clone(&self.querier);
        let mut work = self.pool.spawn_blocking(move || {
            let _slot = slot;
            statement.execute(&querier, &settings)
        });
        let outcome = tokio::select! {
            done = &mut work => done,
            Ok(()) = cancel_request => {
                canceled.store(true, Ordering::Relaxed);
                work.await
            }
        };
        outcome.map_err(|e| error("XX000", format!("query panicked: {e}")))?.map_err(|e| match e {
            ExecError::NoTable(_) => error("42P01", e.to_string()),
            ExecError::Refused(refused) => refusal(refused),
            ExecError::Catalog(_) => error("0A000", e.to_string()),
            ExecError::Sql { state, message } => error(state, message),
            ExecError::Engine(promflow_plan::Error::Timeout(_)) => error("57014", e.to_string()),
            ExecError::Engine(promflow_plan::Error::Canceled) => {
                error("57014", "canceling statement due to user request".into())
            }
            e => error("XX000", e.to_string()),
        })
    }
}

/// Keeps the protocol's portals in step with the cursors: a declared cursor is a portal of
/// its name, as in PostgreSQL, which drivers describe to learn its columns (psycopg's named
/// cursors do); a closed one is not.
fn cursor_portals<S: PortalStore<Statement = Prepared>>(store: &S, command: &Command) {
    match command {
        Command::Declare { name, .. } => {
            let fetch = Prepared {
                sql: format!("FETCH ALL FROM \"{}\"", name.replace('"', "\"\"")),
                parameters: 0,
                inferred: Vec::new(),
            };
            let mut portal = Portal::default();
            portal.name = name.clone();
            portal.statement = Arc::new(StoredStatement::new(String::new(), fetch, Vec::new()));
            store.put_portal(Arc::new(portal));
        }
        Command::Close(Some(name)) => store.rm_portal(name),
        // the unnamed portal is the statement running now; the others are cursors'
        Command::Close(None) => {}
        Command::Fetch { .. } | Command::Move { .. } => {}
    }
}

/// A cursor statement's error as the protocol reports it.
fn cursor_error(e: CursorError) -> PgWireError {
    error(e.state, e.message)
}

fn no_cursor(name: &str) -> PgWireError {
    error("34000", format!("cursor \"{name}\" does not exist"))
}

impl Handler {
    /// Runs a cursor statement of the session at `client` (`session` is its cancel key), whose
    /// results go in `format`.
    async fn cursor(
        &self,
        session: (i32, SecretKey),
        client: SocketAddr,
        in_transaction: bool,
        command: Command,
        format: &Format,
    ) -> PgWireResult<Response> {
        let cursors = || self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        match command {
            Command::Declare { name, hold, no_scroll, query } => {
                // a cursor without HOLD ends with its transaction: outside one it would end at once
                if !hold && !in_transaction {
                    return Err(error(
                        "25P01",
                        "DECLARE CURSOR can only be used in transaction blocks".into(),
                    ));
                }
                let (open, taken) =
                    cursors().get(&client).map_or((0, false), |c| (c.len(), c.contains_key(&name)));
                if taken {
                    return Err(error("42P03", format!("cursor \"{name}\" already exists")));
                }
                if open >= CURSORS_PER_SESSION {
                    return Err(error(
                        "53000",
                        format!(
                            "a session holds at most {CURSORS_PER_SESSION} open cursors: close one first"
                        ),
                    ));
                }
                let rows = self.rows(session, &query).await?;
                let mut all = cursors();
                let session = all.entry(client).or_default();
                // every cursor holds its answer: a session's together stay within one query's
                // samples
                let held: usize = session.values().map(|c| c.rows.len()).sum();
                if held.saturating_add(rows.len()) > self.settings.max_samples {
                    return Err(error(
                        "53000",
                        format!(
                            "the session's open cursors would hold more than {} rows (--query.max-samples): close some first",
                            self.settings.max_samples
                        ),
                    ));
                }
                if session.contains_key(&name) {
                    return Err(error("42P03", format!("cursor \"{name}\" already exists")));
                }
                let mut cursor = Cursor::new(rows, hold, no_scroll);
                cursor.pending = in_transaction;
                session.insert(name, cursor);
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Command::Fetch { name, direction } => {
                let mut all = cursors();
                let cursor =
                    all.get_mut(&client).and_then(|c| c.get_mut(&name)).ok_or_else(|| no_cursor(&name))?;
                let indices = cursor.step(direction).map_err(cursor_error)?;
                let mut answer = some_rows(&cursor.rows, indices.into_iter(), format)?;
                answer.set_command_tag("FETCH");
                Ok(Response::Query(answer))
            }
            Command::Move { name, direction } => {
                let mut all = cursors();
                let cursor =
                    all.get_mut(&client).and_then(|c| c.get_mut(&name)).ok_or_else(|| no_cursor(&name))?;
                let moved = cursor.step(direction).map_err(cursor_error)?.len();
                Ok(Response::Execution(Tag::new("MOVE").with_rows(moved)))
            }
            Command::Close(name) => {
                let mut all = cursors();
                match name {
                    Some(name) => {
                        all.get_mut(&client).and_then(|c| c.remove(&name)).ok_or_else(|| no_cursor(&name))?;
                    }
                    None => {
                        all.remove(&client);
                    }
                }
                Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
            }
        }
    }

    /// The columns of `client`'s cursor `name`, in `format`.
    fn cursor_fields(&self, client: SocketAddr, name: &str, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
        let all = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        let cursor = all.get(&client).and_then(|c| c.get(name)).ok_or_else(|| no_cursor(name))?;
        Ok(fields(&cursor.rows.columns, format))
    }

    /// Closes the cursors of `client`'s transaction, which has ended: those `WITH HOLD` stay
    /// when it `committed`, as in PostgreSQL.
    fn end_transaction(&self, client: SocketAddr, committed: bool) {
        if let Some(open) = self.cursors.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&client) {
            open.retain(|_, c| c.hold && (committed || !c.pending));
            open.values_mut().for_each(|c| c.pending = false);
        }
    }

    /// Forgets what the session at `client` held: it has ended.
    fn end_session(&self, client: SocketAddr) {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
        self.described.lock().unwrap_or_else(|e| e.into_inner()).retain(|bound, _| bound.0 != client);
    }

    /// Answers a statement that only concerns the session; a transaction's end closes its
    /// cursors.
    fn session(&self, client: SocketAddr, command: SessionCommand) -> Response {
        match command {
            SessionCommand::Commit => self.end_transaction(client, true),
            SessionCommand::Rollback => self.end_transaction(client, false),
            SessionCommand::DiscardAll => {
                self.cursors.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
            }
            _ => {}
        }
        command.response()
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if query.trim().trim_end_matches(';').trim().is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        if let Some(command) = SessionCommand::of(query) {
            return Ok(vec![self.session(client.socket_addr(), command)]);
        }
        if let Some(command) = cursor::parse(query) {
            let in_transaction = matches!(client.transaction_status(), TransactionStatus::Transaction);
            let command = command.map_err(cursor_error)?;
            let session = client.pid_and_secret_key();
            return Ok(vec![
                self.cursor(session, client.socket_addr(), in_transaction, command, &Format::UnifiedText)
                    .await?,
            ]);
        }
        Ok(vec![response(&self.rows(client.pid_and_secret_key(), query).await?, &Format::UnifiedText)?])
    }
}

/// A statement of the extended protocol: its text, with `$n` parameters.
#[derive(Clone, Debug, Default)]
struct Prepared {
    sql: String,
    parameters: usize,
    /// The parameters' types the statement says ([`bind::inferred_types`]): what a
    /// description answers for those the client left unnamed, and how they are read when
    /// the client sends them in binary.
    inferred: Vec<Option<Type>>,
}

/// Checks a statement's syntax when the client parses it, as PostgreSQL does.
struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parameters = bind::count(sql).map_err(|e| error("42601", e.to_string()))?;
        // a cursor's query is checked as a query; its other statements have none
        let query = match cursor::parse(sql) {
            Some(command) => match command.map_err(cursor_error)? {
                Command::Declare { query, .. } => Some(query),
                _ => None,
            },
            None if SessionCommand::of(sql).is_none() => Some(sql.to_string()),
            None => None,
        };
        let mut inferred = vec![None; parameters];
        if let Some(query) = query {
            let nulls = vec![Param::Null; parameters];
            let bound = bind::substitute(&query, &nulls).map_err(|e| error("42601", e.to_string()))?;
            crate::compile::on_deep_stack(|| {
                crate::parse(&bound).map_err(|e| match e {
                    Error::TooComplex(m) => error("54001", m),
                    e => error("42601", e.to_string()),
                })?;
                // the text with its placeholders parses as the text with NULLs did
                if let Ok(statements) = crate::parse(&query) {
                    inferred = bind::inferred_types(&statements, parameters);
                }
                Ok::<_, PgWireError>(())
            })?;
        }
        Ok(Some(Prepared { sql: sql.to_string(), parameters, inferred }))
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(statement.inferred.iter().map(|t| t.clone().unwrap_or(Type::UNKNOWN)).collect())
    }

    fn get_result_schema(
        &self,
        _statement: &Prepared,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // the handler describes statements and portals itself (the columns of `*` depend on
        // the data)
        Ok(Vec::new())
    }
}

/// Whether parameters of type `t` are written as numbers.
fn numeric(t: &Type) -> bool {
    [Type::INT2, Type::INT4, Type::INT8, Type::FLOAT4, Type::FLOAT8, Type::NUMERIC, Type::OID].contains(t)
}

/// The portal's parameter values, decoded by their types and formats.
fn parameters(portal: &Portal<Prepared>) -> PgWireResult<Vec<Param>> {
    let types = &portal.statement.parameter_types;
    (0..portal.parameter_len())
        .map(|i| {
            if portal.parameters[i].is_none() {
                return Ok(Param::Null);
            }
            // a value of a type the client left unnamed is its text, unless it comes in
            // binary, in the type the statement's description gave it
            let t = types
                .get(i)
                .cloned()
                .flatten()
                .or_else(|| {
                    portal
                        .parameter_format
                        .is_binary(i)
                        .then(|| portal.statement.statement.inferred.get(i).cloned().flatten())
                        .flatten()
                })
                .unwrap_or(Type::UNKNOWN);
            let bad = |e: PgWireError| error("22P02", format!("parameter ${}: {e}", i + 1));
            let number = |v: Option<f64>| v.map_or(Param::Null, Param::Number);
            Ok(match t {
                Type::INT2 => number(portal.parameter::<i16>(i, &t).map_err(bad)?.map(f64::from)),
                Type::INT4 => number(portal.parameter::<i32>(i, &t).map_err(bad)?.map(f64::from)),
                Type::INT8 => number(portal.parameter::<i64>(i, &t).map_err(bad)?.map(|v| v as f64)),
                Type::FLOAT4 => number(portal.parameter::<f32>(i, &t).map_err(bad)?.map(f64::from)),
                Type::FLOAT8 => number(portal.parameter::<f64>(i, &t).map_err(bad)?),
                Type::BOOL => match portal.parameter::<bool>(i, &t).map_err(bad)? {
                    Some(b) => Param::Text(b.to_string()),
                    None => Param::Null,
                },
                Type::TIMESTAMPTZ => {
                    match portal.parameter::<chrono::DateTime<chrono::FixedOffset>>(i, &t).map_err(bad)? {
                        Some(at) => Param::Text(at.to_rfc3339()),
                        None => Param::Null,
                    }
                }
                Type::TIMESTAMP => match portal.parameter::<chrono::NaiveDateTime>(i, &t).map_err(bad)? {
                    Some(at) => Param::Text(at.and_utc().to_rfc3339()),
                    None => Param::Null,
                },
                t if matches!(t.kind(), Kind::Array(_)) => {
                    let Kind::Array(element) = t.kind() else { unreachable!("an array type") };
                    let bytes = portal.parameters[i].as_deref().unwrap_or_default();
                    if portal.parameter_format.is_binary(i) {
                        let items = binary::array_items(bytes).ok_or_else(|| {
                            error("22P02", format!("parameter ${}: malformed binary {}", i + 1, t.name()))
                        })?;
                        let items = items
                            .into_iter()
                            .map(|item| item.map_or(Ok(Param::Null), |b| binary_parameter(element, b, i)))
                            .collect::<PgWireResult<Vec<_>>>()?;
                        return Ok(Param::Array(items));
                    }
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| error("22021", format!("parameter ${} is not UTF-8", i + 1)))?;
                    let items = bind::array_elements(text)
                        .ok_or_else(|| error("22P02", format!("malformed array literal: \"{text}\"")))?;
                    let items = items
                        .into_iter()
                        .map(|item| match item {
                            None => Ok(Param::Null),
                            Some(v) if numeric(element) => {
                                v.trim().parse::<f64>().map(Param::Number).map_err(|_| {
                                    error("22P02", format!("parameter ${}: \"{v}\" is not a number", i + 1))
                                })
                            }
                            Some(v) => Ok(Param::Text(v)),
                        })
                        .collect::<PgWireResult<Vec<_>>>()?;
                    Param::Array(items)
                }
                t if portal.parameter_format.is_binary(i) => {
                    binary_parameter(&t, portal.parameters[i].as_deref().unwrap_or_default(), i)?
                }
                t => {
                    let bytes = portal.parameters[i].as_deref().unwrap_or_default();
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| error("22021", format!("parameter ${} is not UTF-8", i + 1)))?;
                    if numeric(&t) {
                        let v = text.trim().parse::<f64>().map_err(|_| {
                            error("22P02", format!("parameter ${}: \"{text}\" is not a number", i + 1))
                        })?;
                        Param::Number(v)
                    } else {
                        Param::Text(text.to_string())
                    }
                }
            })
        })
        .collect()
}

/// Parameter `i`, a value of type `t` in binary format: decoded to what its text would be,
/// or refused (0A000) for a type promflow does not read in binary.
fn binary_parameter(t: &Type, bytes: &[u8], i: usize) -> PgWireResult<Param> {
    let malformed = || error("22P02", format!("parameter ${}: malformed binary {}", i + 1, t.name()));
    // numbers and truth values in postgres-types' binary decoders
    fn read<'a, T: postgres_types::FromSql<'a>>(t: &Type, bytes: &'a [u8]) -> Option<T> {
        T::from_sql(t, bytes).ok()
    }
    let utf8 = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(|s| Param::Text(s.to_string()))
            .map_err(|_| error("22021", format!("parameter ${} is not UTF-8", i + 1)))
    };
    Ok(match *t {
        Type::INT2 => Param::Number(f64::from(read::<i16>(t, bytes).ok_or_else(malformed)?)),
        Type::INT4 => Param::Number(f64::from(read::<i32>(t, bytes).ok_or_else(malformed)?)),
        Type::OID => Param::Number(f64::from(read::<u32>(t, bytes).ok_or_else(malformed)?)),
        Type::INT8 => Param::Number(read::<i64>(t, bytes).ok_or_else(malformed)? as f64),
        Type::FLOAT4 => Param::Number(f64::from(read::<f32>(t, bytes).ok_or_else(malformed)?)),
        Type::FLOAT8 => Param::Number(read::<f64>(t, bytes).ok_or_else(malformed)?),
        Type::BOOL => Param::Text(read::<bool>(t, bytes).ok_or_else(malformed)?.to_string()),
        Type::NUMERIC => {
            let text = binary::numeric_text(bytes).ok_or_else(malformed)?;
            Param::Number(text.parse().map_err(|_| malformed())?)
        }
        Type::DATE => Param::Text(binary::date_text(bytes).ok_or_else(malformed)?),
        Type::INTERVAL => Param::Text(binary::interval_text(bytes).ok_or_else(malformed)?),
        // these types' binary form is their text
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => utf8(bytes)?,
        // jsonb's is its text after a version byte
        Type::JSONB => match bytes.split_first() {
            Some((1, text)) => utf8(text)?,
            _ => return Err(malformed()),
        },
        _ => {
            return Err(error(
                "0A000",
                format!("parameter ${}: binary {} is not supported: send it as text", i + 1, t.name()),
            ))
        }
    })
}

/// What a described answer is kept under: the client, the portal, its statement's text and
/// its parameters, so that a portal bound again with other values is never answered with
/// the old ones.
type Bound = (SocketAddr, String, String, Vec<Option<Vec<u8>>>);

fn bound(client: SocketAddr, portal: &Portal<Prepared>) -> Bound {
    let parameters = portal.parameters.iter().map(|p| p.as_deref().map(<[u8]>::to_vec)).collect();
    (client, portal.name.clone(), portal.statement.statement.sql.clone(), parameters)
}

impl Handler {
    /// Runs the portal's statement with its parameters.
    async fn run_portal(&self, session: (i32, SecretKey), portal: &Portal<Prepared>) -> PgWireResult<Rows> {
        let sql = bind::substitute(&portal.statement.statement.sql, &parameters(portal)?)
            .map_err(|e| error("08P01", e.to_string()))?;
        self.rows(session, &sql).await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser)
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &target.statement;
        let types = (0..prepared.parameters)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| prepared.inferred.get(i).cloned().flatten())
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect();
        if SessionCommand::of(&prepared.sql).is_some() {
            return Ok(DescribeStatementResponse::new(types, Vec::new()));
        }
        if let Some(command) = cursor::parse(&prepared.sql) {
            // a FETCH answers its cursor's columns, when the cursor is open already
            let columns = match command.map_err(cursor_error)? {
                Command::Fetch { name, .. } => {
                    self.cursor_fields(client.socket_addr(), &name, &Format::UnifiedText).ok()
                }
                _ => None,
            };
            return Ok(DescribeStatementResponse::new(types, columns.unwrap_or_default()));
        }
        // the columns before any value is bound: written ones are known; `*` and the catalog
        // answers are found by running the statement with its parameters NULL
        let nulls = bind::substitute(&prepared.sql, &vec![Param::Null; prepared.parameters])
            .map_err(|e| error("42601", e.to_string()))?;
        let columns = match compile(&nulls)? {
            Statement::Select(q) if !q.columns.iter().any(|c| c.source == Source::Star) => q.columns,
            _ => self.rows(client.pid_and_secret_key(), &nulls).await?.columns,
        };
        Ok(DescribeStatementResponse::new(types, fields(&columns, &Format::UnifiedText)))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if SessionCommand::of(&portal.statement.statement.sql).is_some() {
            return Ok(DescribePortalResponse::new(Vec::new()));
        }
        if let Some(command) = cursor::parse(&portal.statement.statement.sql) {
            // describing a FETCH (or a cursor's own portal) neither runs nor moves it
            return Ok(match command.map_err(cursor_error)? {
                Command::Fetch { name, .. } => DescribePortalResponse::new(self.cursor_fields(
                    client.socket_addr(),
                    &name,
                    &portal.result_column_format,
                )?),
                _ => DescribePortalResponse::new(Vec::new()),
            });
        }
        let rows = self.run_portal(client.pid_and_secret_key(), portal).await?;
        let described = fields(&rows.columns, &portal.result_column_format);
        let mut kept = self.described.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= DESCRIBED_MAX {
            kept.clear();
        }
        kept.insert(bound(client.socket_addr(), portal), rows);
        Ok(DescribePortalResponse::new(described))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(command) = SessionCommand::of(&portal.statement.statement.sql) {
            return Ok(self.session(client.socket_addr(), command));
        }
        if cursor::parse(&portal.statement.statement.sql).is_some() {
            let sql = bind::substitute(&portal.statement.statement.sql, &parameters(portal)?)
                .map_err(|e| error("08P01", e.to_string()))?;
            let Some(command) = cursor::parse(&sql) else {
                return Err(error("42601", "a cursor statement's parameters changed what it is".into()));
            };
            let command = command.map_err(cursor_error)?;
            let in_transaction = matches!(client.transaction_status(), TransactionStatus::Transaction);
            let session = client.pid_and_secret_key();
            let answer = self
                .cursor(
                    session,
                    client.socket_addr(),
                    in_transaction,
                    command.clone(),
                    &portal.result_column_format,
                )
                .await?;
            cursor_portals(client.portal_store(), &command);
            return Ok(answer);
        }
        let described = self
            .described
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&bound(client.socket_addr(), portal));
        let rows = match described {
            Some(rows) => rows,
            None => self.run_portal(client.pid_and_secret_key(), portal).await?,
        };
        response(&rows, &portal.result_column_format)
    }
}

struct Handlers {
    handler: Arc<Handler>,
    startup: Arc<Startup>,
}

/// The start of a session: TLS required when `--web.config.file` configures it, and a
/// password checked against its `basic_auth_users` when it has any (the same users as the
/// HTTP API). The password travels as PostgreSQL's cleartext password message, inside TLS
/// when TLS is configured: SCRAM would need secrets the bcrypt hashes cannot provide.
struct Startup {
    web: Arc<WebGuard>,
    password: CleartextPasswordAuthStartupHandler<WebUsers, DefaultServerParameterProvider>,
    open: Arc<Handler>,
}

/// `basic_auth_users` as pgwire's password source.
#[derive(Debug)]
struct WebUsers(Arc<WebGuard>);

#[async_trait]
impl AuthSource for WebUsers {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        // passwords are only verified (bcrypt), never recovered
        Err(PgWireError::ApiError("promflow verifies passwords; it cannot recover them".into()))
    }

    async fn verify_password(&self, login: &LoginInfo, presented: &[u8]) -> PgWireResult<Option<()>> {
        let user = login.user().unwrap_or_default().to_string();
        let password = String::from_utf8_lossy(presented).into_owned();
        let web = Arc::clone(&self.0);
        let checked = user.clone();
        let access = tokio::task::spawn_blocking(move || web.check(Some((&checked, &password))))
            .await
            .unwrap_or_else(|e| Access::Broken(e.to_string()));
        match access {
            Access::Granted => Ok(None),
            Access::Denied => Err(PgWireError::InvalidPassword(user)),
            Access::Broken(e) => {
                tracing::error!(error = %e, "refusing a SQL session: the web configuration is invalid");
                Err(fatal("XX000", "the server's web configuration is invalid".into()))
            }
        }
    }
}

/// A FATAL error: the session ends.
fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message)))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let settings = match self.web.current() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "refusing a SQL session: the web configuration is invalid");
                return Err(fatal("XX000", "the server's web configuration is invalid".into()));
            }
        };
        if matches!(message, PgWireFrontendMessage::Startup(_))
            && settings.tls.is_some()
            && !client.is_secure()
        {
            return Err(fatal(
                "28000",
                "promflow accepts SQL sessions over TLS only (sslmode=require)".into(),
            ));
        }
        if settings.config.basic_auth_users.is_empty() {
            self.open.on_startup(client, message).await
        } else {
            self.password.on_startup(client, message).await
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(Arc::clone(&self.handler.running)))
    }
}

/// Serves the wire protocol on `listener` until the task is dropped, with the users and the
/// TLS of `web`; statements run in `slots` (`--query.max-concurrency`'s, shared with the HTTP
/// API) on the blocking threads of `pool`, and stop at a cancel request (psql's Ctrl-C).
pub async fn serve(
    listener: TcpListener,
    querier: Arc<dyn Querier>,
    settings: Settings,
    slots: Arc<Semaphore>,
    pool: tokio::runtime::Handle,
    web: Arc<WebGuard>,
) {
    let running = Arc::new(ConnectionManager::new());
    let handler = Arc::new(Handler {
        querier,
        settings,
        slots,
        pool,
        running,
        described: Mutex::default(),
        cursors: Mutex::default(),
    });
    let startup = Arc::new(Startup {
        web: Arc::clone(&web),
        password: CleartextPasswordAuthStartupHandler::new(WebUsers(Arc::clone(&web)), server_parameters()),
        open: Arc::clone(&handler),
    });
    let handlers = Arc::new(Handlers { handler, startup });
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let handlers = Arc::clone(&handlers);
                let tls = match web.current() {
                    Ok(s) => s.tls.clone().map(pgwire::tokio::TlsAcceptor::from),
                    // the session is refused at its start, with a message
                    Err(_) => None,
                };
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, tls, Arc::clone(&handlers)).await {
                        tracing::debug!(%peer, error = %e, "SQL wire connection ended");
                    }
                    handlers.handler.end_session(peer);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a SQL wire connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
