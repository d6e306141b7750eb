//! Why a session with CVP ended in failure: the source's typed edge. The
//! run loop decides from the kind whether to back off, log in again, or
//! tell the user to fix a token; the text is the one line users see.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to CVP at {authority}: {detail}")]
    Connect { authority: String, detail: String },
    /// The REST login (username/password) failed; the text says why.
    #[error("{0}")]
    Login(String),
    /// Connecting, logging in and CVP's answer to Subscribe took too long.
    #[error("CVP at {authority} did not answer Subscribe within {} (source.cvp.subscribe_timeout)", humantime::format_duration(*.after))]
    SubscribeTimeout {
        authority: String,
        after: std::time::Duration,
    },
    /// A message over gRPC's limit: it cannot be read, not even its key.
    #[error("CVP sent a message too large to read ({0}); raise source.cvp.max_message_size to read its key and dead-letter it")]
    MessageTooLarge(String),
    #[error("the CVP token has characters not allowed in a header")]
    TokenNotAHeader,
    /// CVP answered the call, or ended the stream, with a gRPC status.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(Status),
}

impl SessionError {
    /// CVP refused the credentials.
    pub fn refused(&self) -> bool {
        matches!(self, SessionError::Status(s) if s.code() == Code::Unauthenticated || s.code() == Code::PermissionDenied)
    }
}

impl From<Status> for SessionError {
    fn from(s: Status) -> Self {
        SessionError::Status(s)
    }
}
