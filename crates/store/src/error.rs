use std::fmt;

use estate_crm_domain::FieldErrors;

/// What went wrong, for the caller to map to its own answer (the server maps it to a status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such record, or one the actor may not see.
    NotFound,
    /// Field values were invalid.
    Invalid(FieldErrors),
    /// A unique value is taken (a contact's email).
    Conflict(FieldErrors),
    /// The database cannot be reached, or the connection to it broke: try again in a moment. Nothing
    /// of the operation was written, except in one case nobody can tell apart: the connection broke
    /// after `COMMIT` was sent and before its answer came, so the change may be committed. The
    /// caller was not told it was, which is all the API promises (only a 2xx is acknowledged).
    Unavailable,
    /// The database failed; nothing of the operation was written.
    Internal,
}

/// A storage error: its kind and, for internal errors, the cause.
#[derive(Debug)]
pub struct StoreError {
    kind: ErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        StoreError { kind: ErrorKind::NotFound, context: what.into(), source: None }
    }

    pub(crate) fn invalid(errors: FieldErrors) -> Self {
        StoreError { kind: ErrorKind::Invalid(errors), context: "invalid input".into(), source: None }
    }

    pub(crate) fn conflict(errors: FieldErrors) -> Self {
        StoreError { kind: ErrorKind::Conflict(errors), context: "conflict".into(), source: None }
    }

    pub(crate) fn internal(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError { kind: ErrorKind::Internal, context: context.into(), source: Some(source.into()) }
    }

    /// The database cannot be reached or the connection broke (see [`ErrorKind::Unavailable`]).
    pub(crate) fn unavailable(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError { kind: ErrorKind::Unavailable, context: context.into(), source: Some(source.into()) }
    }

    /// A PostgreSQL error while `context`: [`ErrorKind::Unavailable`] when the connection broke or
    /// the server is not accepting work, else internal.
    pub(crate) fn postgres(context: impl Into<String>, err: tokio_postgres::Error) -> Self {
        if is_connection_failure(&err) {
            // The server's own words ("terminating connection due to administrator command") are
            // what an operator reads in the log, and tokio-postgres says only "db error" above them.
            StoreError::unavailable(context, with_causes(&err))
        } else {
            StoreError::internal(context, err)
        }
    }

    /// Whether the database could not be reached (see [`ErrorKind::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }

    /// A refusal said in full, with no cause behind it (a file that is not an export, a database
    /// that is not empty).
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        StoreError { kind: ErrorKind::Internal, context: message.into(), source: None }
    }

    /// The same error again, for a group commit that failed for every request in it.
    pub(crate) fn shared(&self) -> Self {
        StoreError { kind: self.kind.clone(), context: format!("{self}"), source: None }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => write!(f, "{}: {errors}", self.context),
            _ => match &self.source {
                Some(source) => write!(f, "{}: {source}", self.context),
                None => f.write_str(&self.context),
            },
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::internal("database error", err)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        // PostgreSQL's text cannot hold a NUL; a client's text that has one is refused, not a 500
        // (the fields people type are checked before; this is the floor under any other).
        if err.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE) {
            return StoreError::invalid(FieldErrors::single("text", "may not contain the NUL character (\\u0000)"));
        }
        StoreError::postgres("database error", err)
    }
}

/// Whether a PostgreSQL error means "no database to talk to" rather than "this statement failed":
/// the connection closed or broke (an I/O error, refused, reset, timed out), or the server said it
/// is shutting down, starting up, out of connection slots, or that the connection failed (SQLSTATE
/// class 08). Such an error says nothing about the request, so the request may be sent again.
fn is_connection_failure(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        let code = code.code();
        // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, 53300 too many
        // connections; class 08 is connection exceptions.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    // Connecting and talking to the server fail with the socket's error as their source.
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

/// An error and its causes on one line, each cause said once.
pub(crate) fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !line.contains(&said) {
            line.push_str(": ");
            line.push_str(&said);
        }
        source = cause.source();
    }
    line
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        let context = "reaching the database";
        match err {
            // No connection could be made in time, or every connection stayed busy for the pool's
            // whole wait: either way the request may be sent again in a moment.
            PoolError::Timeout(_) => StoreError::unavailable(context, with_causes(&err)),
            PoolError::Backend(err) => StoreError::postgres(context, err),
            err => StoreError::internal(context, err),
        }
    }
}
