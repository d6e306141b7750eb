//! Bearer-token checking for gRPC calls, like CVP's: a static service-account
//! token, or any session token issued by the REST login.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use tonic::{Request, Status};
use tracing::info;

use crate::stats::Counters;

pub(crate) struct Auth {
    token: Option<String>,
    /// Whether calls must authenticate at all: when a token or login
    /// credentials are configured (a real CVP always requires it).
    required: bool,
    sessions: RwLock<HashSet<String>>,
    counters: Arc<Counters>,
}

impl Auth {
    pub fn new(token: Option<String>, login_enabled: bool, counters: Arc<Counters>) -> Self {
        Auth {
            required: token.is_some() || login_enabled,
            token,
            sessions: RwLock::default(),
            counters,
        }
    }

    pub fn add_session(&self, token: String) {
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token);
    }

    fn valid(&self, presented: &str) -> bool {
        if self
            .token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()))
        {
            return true;
        }
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(presented)
    }

    /// The tonic interceptor.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            return Ok(req);
        }
        let md = req.metadata();
        let bearer = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        // Browsers and some clients send the login cookie instead.
        let cookie = || {
            md.get_all("cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| c.trim().strip_prefix("access_token="))
        };
        match bearer.or_else(cookie) {
            Some(t) if self.valid(t) => Ok(req),
            _ => {
                Counters::inc(&self.counters.unauthenticated);
                info!(
                    peer = ?req.remote_addr(),
                    "rejected gRPC call: invalid or missing bearer token"
                );
                Err(Status::unauthenticated("invalid or missing bearer token"))
            }
        }
    }
}

/// Compares secrets without an early exit, so timing does not reveal how
/// much of a guessed token was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
