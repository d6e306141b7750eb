//! Credentials for CVP: a service-account token (inline, from a file, or from
//! `CVP_TOKEN`), or a username/password exchanged for a session token through
//! CVP's REST login. Session tokens last about 24 hours, so we log in again
//! well before that and whenever CVP says the token is no longer good.

use super::config::CvpConfig;
use crate::secret::Secret;
use anyhow::{anyhow, bail, Result};
use std::time::{Duration, Instant};

/// Log in again after this long, before CVP's ~24 h session expiry.
const SESSION_REFRESH: Duration = Duration::from_secs(20 * 3600);

pub enum Credentials {
    Token(Secret),
    Login {
        username: String,
        password: Secret,
        session: Option<(Secret, Instant)>,
    },
    /// No credentials (the simulator without a token, or a plaintext lab).
    None,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Login { username, .. } => write!(f, "Login({username}, <redacted>)"),
            Credentials::None => f.write_str("None"),
        }
    }
}

impl Credentials {
    pub fn from_config(cfg: &CvpConfig) -> Result<Credentials> {
        if let Some(t) = &cfg.token {
            return Ok(Credentials::Token(trimmed(t.expose())?));
        }
        if let Some(path) = &cfg.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("source.cvp.token_file {}: {e}", path.display()))?;
            return Ok(Credentials::Token(trimmed(&text).map_err(|_| {
                anyhow!("source.cvp.token_file {} is empty", path.display())
            })?));
        }
        if let (Some(username), Some(password)) = (&cfg.username, &cfg.password) {
            return Ok(Credentials::Login {
                username: username.clone(),
                password: password.clone(),
                session: None,
            });
        }
        if let Ok(t) = std::env::var("CVP_TOKEN") {
            return Ok(Credentials::Token(trimmed(&t)?));
        }
        Ok(Credentials::None)
    }

    pub fn is_static_token(&self) -> bool {
        matches!(self, Credentials::Token(_))
    }

    /// The bearer token to send now, logging in first when needed.
    pub async fn bearer(&mut self, login: &LoginClient) -> Result<Option<Secret>> {
        match self {
            Credentials::Token(t) => Ok(Some(t.clone())),
            Credentials::None => Ok(None),
            Credentials::Login {
                username,
                password,
                session,
            } => {
                if let Some((token, at)) = session {
                    if at.elapsed() < SESSION_REFRESH {
                        return Ok(Some(token.clone()));
                    }
                }
                let token = login.login(username, password).await?;
                *session = Some((token.clone(), Instant::now()));
                Ok(Some(token))
            }
        }
    }

    /// The bearer token when no login is involved (a static token, or none).
    pub fn bearer_without_login(&self) -> Option<Secret> {
        match self {
            Credentials::Token(t) => Some(t.clone()),
            _ => None,
        }
    }

    /// CVP refused the token: forget a session so the next attempt logs in.
    pub fn invalidate(&mut self) {
        if let Credentials::Login { session, .. } = self {
            *session = None;
        }
    }
}

fn trimmed(s: &str) -> Result<Secret> {
    let t = s.trim();
    if t.is_empty() {
        bail!("the CVP token is empty");
    }
    Ok(Secret::new(t))
}

/// CVP's REST login: `POST /cvpservice/login/authenticate.do`.
pub struct LoginClient {
    http: reqwest::Client,
    url: String,
}

impl LoginClient {
    pub fn new(base_url: String, tls: Option<rustls::ClientConfig>) -> Result<LoginClient> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder
            .build()
            .map_err(|e| anyhow!("cannot set up the CVP login client: {e}"))?;
        Ok(LoginClient {
            http,
            url: format!("{base_url}/cvpservice/login/authenticate.do"),
        })
    }

    async fn login(&self, username: &str, password: &Secret) -> Result<Secret> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(rename = "sessionId")]
            session_id: Option<String>,
            #[serde(rename = "errorMessage")]
            error_message: Option<String>,
        }
        let body = serde_json::json!({ "userId": username, "password": password.expose() });
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| anyhow!("CVP login at {} failed: {}", self.url, error_chain(&e)))?;
        let status = resp.status();
        let reply: Option<Reply> = resp.json().await.ok();
        match reply {
            Some(Reply {
                session_id: Some(token),
                ..
            }) if status.is_success() && !token.is_empty() => {
                tracing::info!(username, "logged in to CVP");
                Ok(Secret::new(token))
            }
            Some(Reply {
                error_message: Some(msg),
                ..
            }) => {
                bail!("CVP login as {username} refused ({status}): {msg}; check username/password")
            }
            _ => bail!("CVP login as {username} refused ({status}); check username/password"),
        }
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}
