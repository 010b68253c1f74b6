//! What a database call tells, whichever protocol carried it: the facts the PostgreSQL, MySQL
//! and Redis parsers produce and the database mapping turns into spans and metrics.

use std::sync::Arc;

use super::sql::Dialect;

/// The database product (`db.system.name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DbSystem {
    Postgresql,
    /// MySQL, or a MySQL-protocol server whose greeting was not seen.
    Mysql,
    Mariadb,
    Redis,
}

impl DbSystem {
    /// `db.system.name`.
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Postgresql => "postgresql",
            DbSystem::Mysql => "mysql",
            DbSystem::Mariadb => "mariadb",
            DbSystem::Redis => "redis",
        }
    }

    /// How its statements are tokenized; `None` for a system without SQL.
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            DbSystem::Postgresql => Some(Dialect::Postgres),
            DbSystem::Mysql | DbSystem::Mariadb => Some(Dialect::Mysql),
            DbSystem::Redis => None,
        }
    }
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbOutcome {
    Ok,
    /// The server answered with an error: its code (PostgreSQL SQLSTATE, MySQL error number,
    /// Redis error prefix such as `WRONGTYPE`), empty when the code was not captured.
    Error(String),
    /// The connection ended (or the capture lost track) before the answer.
    NoResponse,
}

/// One database call (a statement executed, a command run) and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbCall {
    pub system: DbSystem,
    /// The operation as the protocol itself names it: a Redis command, or a PostgreSQL command
    /// tag when the statement's text is unknown. SQL operations otherwise come from the text.
    pub operation: Option<String>,
    /// The SQL text as sent (shared with the statement it was prepared as), a prefix when
    /// `truncated`. Never bound parameters: those travel apart from the text.
    pub statement: Option<Arc<str>>,
    pub truncated: bool,
    /// Redis: how many arguments followed the command (shown as `?` in `db.query.text`).
    pub arguments: u32,
    /// `db.namespace`: the database (PostgreSQL, MySQL) or database index (Redis) in use.
    pub namespace: Option<Arc<str>>,
    pub outcome: DbOutcome,
}

impl DbCall {
    /// A call of `system` with nothing known yet but its outcome.
    pub fn new(system: DbSystem, outcome: DbOutcome) -> Self {
        Self {
            system,
            operation: None,
            statement: None,
            truncated: false,
            arguments: 0,
            namespace: None,
            outcome,
        }
    }
}

/// Text from protocol bytes: lossy UTF-8 (a capture may cut a character), at most `max` bytes.
pub(crate) fn text_of(bytes: &[u8], max: usize) -> (Arc<str>, bool) {
    let truncated = bytes.len() > max;
    let bytes = &bytes[..bytes.len().min(max)];
    (Arc::from(String::from_utf8_lossy(bytes)), truncated)
}

/// Test support shared by the database parsers' tests: replaying captures through the
/// connection layer and summarizing the calls that come out.
#[cfg(test)]
pub(crate) mod testing {
    use super::DbOutcome;
    use crate::capture::events::{Direction, Event, Role};
    use crate::connection::testing::{FD, PID, Sim, TID, db};
    use crate::transaction::Transaction;

    /// What a test checks of a call: statement text, protocol-named operation, outcome,
    /// namespace.
    pub(crate) type Call = (Option<String>, Option<String>, DbOutcome, Option<String>);

    pub(crate) fn calls(txs: &[Transaction]) -> Vec<Call> {
        txs.iter()
            .map(|tx| {
                let call = db(tx);
                (
                    call.statement.as_deref().map(str::to_owned),
                    call.operation.clone(),
                    call.outcome.clone(),
                    call.namespace.as_deref().map(str::to_owned),
                )
            })
            .collect()
    }

    /// A call with statement text `text` (or none), operation `op`, outcome and namespace.
    pub(crate) fn call(
        text: Option<&str>,
        op: Option<&str>,
        outcome: DbOutcome,
        namespace: Option<&str>,
    ) -> Call {
        (
            text.map(str::to_owned),
            op.map(str::to_owned),
            outcome,
            namespace.map(str::to_owned),
        )
    }

    /// Replays `records` (client or server side, bytes) on one connection of the instrumented
    /// `role`, seen from its start unless `role` is unknown; record `cut` (if any) has only its
    /// first `keep` bytes captured. Returns the transactions, the connection closed at the end.
    pub(crate) fn replay(
        records: &[(bool, Vec<u8>)],
        role: Role,
        cut: Option<(usize, usize)>,
    ) -> Vec<Transaction> {
        let mut sim = Sim::new();
        if role != Role::Unknown {
            sim.connect(FD, role);
        }
        for (i, (from_client, bytes)) in records.iter().enumerate() {
            let direction = match (role, from_client) {
                (Role::Server, true) | (Role::Client | Role::Unknown, false) => Direction::Ingress,
                _ => Direction::Egress,
            };
            let keep = match cut {
                Some((at, keep)) if at == i => keep,
                _ => crate::connection::testing::CAPTURE,
            };
            let meta = sim.meta(PID, TID, FD);
            let event = Event::Data {
                meta,
                direction,
                total_len: bytes.len() as u32,
                payload: &bytes[..bytes.len().min(keep)],
            };
            sim.conns.on_event(&event, &mut sim.out);
        }
        sim.close(FD);
        sim.take()
    }

    /// Every cut of every record: nothing panics, and every call that comes out is one of the
    /// whole capture's calls with at most less known (a statement text that is a prefix of the
    /// real one or none, no other namespace), never a different one.
    pub(crate) fn sweep(records: &[(bool, Vec<u8>)], role: Role) {
        let whole = calls(&replay(records, role, None));
        let texts: Vec<&str> = whole.iter().filter_map(|c| c.0.as_deref()).collect();
        for (at, (_, bytes)) in records.iter().enumerate() {
            for keep in 0..bytes.len().min(crate::connection::testing::CAPTURE) {
                for (text, _, _, namespace) in calls(&replay(records, role, Some((at, keep)))) {
                    if let Some(text) = text {
                        assert!(
                            texts.iter().any(|t| t.starts_with(&*text)),
                            "record {at} cut at {keep}: {text:?} is none of {texts:?}"
                        );
                    }
                    if let Some(namespace) = namespace {
                        assert!(
                            whole.iter().any(|c| c.3.as_deref() == Some(&*namespace)),
                            "record {at} cut at {keep}: namespace {namespace:?}"
                        );
                    }
                }
            }
        }
    }
}
