//! The one error type of PromQL, in Prometheus's terms: what its HTTP API
//! answers (`errorType` and status) and what SQL shows (a SQLSTATE, mapped
//! by the front end that calls PromQL from SQL).

/// Prometheus's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request or the expression is wrong (400).
    BadData,
    /// The expression could not be evaluated (422).
    Execution,
    /// The query ran out of time (503).
    Timeout,
    /// The query was cancelled (503).
    Canceled,
    /// The server failed (500).
    Internal,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PromError {
    pub kind: ErrorKind,
    pub message: String,
}

impl PromError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::BadData,
            message: message.into(),
        }
    }

    pub fn execution(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Execution,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }

    /// The query was cancelled; `timeout` when its time limit did it.
    pub fn canceled(timeout: bool) -> Self {
        if timeout {
            Self {
                kind: ErrorKind::Timeout,
                message: "query timed out in expression evaluation".into(),
            }
        } else {
            Self {
                kind: ErrorKind::Canceled,
                message: "query was canceled in expression evaluation".into(),
            }
        }
    }

    /// `errorType` of the HTTP API.
    pub fn error_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::BadData => 400,
            ErrorKind::Execution => 422,
            ErrorKind::Timeout | ErrorKind::Canceled => 503,
            ErrorKind::Internal => 500,
        }
    }
}
