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
        StoreError::internal("database error", err)
    }
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
        StoreError::internal("reaching the database", err)
    }
}
