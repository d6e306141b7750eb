//! CVP's REST login, `POST /cvpservice/login/authenticate.do`, served on the
//! gRPC port as real CVP does. Issues session tokens the gRPC auth accepts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::json;
use tracing::info;

use crate::auth::{constant_time_eq, Auth};
use crate::stats::Counters;

pub(crate) const LOGIN_PATH: &str = "/cvpservice/login/authenticate.do";

struct Login {
    credentials: Option<(String, String)>,
    auth: Arc<Auth>,
    counters: Arc<Counters>,
}

pub(crate) fn router(
    credentials: Option<(String, String)>,
    auth: Arc<Auth>,
    counters: Arc<Counters>,
) -> Router {
    let state = Arc::new(Login {
        credentials,
        auth,
        counters,
    });
    Router::new()
        .route(LOGIN_PATH, post(login))
        .with_state(state)
}

/// Username and password from HTTP Basic auth, else from a JSON body
/// `{"userId":..,"password":..}`.
fn presented(headers: &HeaderMap, body: &[u8]) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, b64) = v.trim().split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return None;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (u, p) = text.split_once(':')?;
            Some((u.to_string(), p.to_string()))
        });
    basic.or_else(|| {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let u = v.get("userId")?.as_str()?;
        let p = v.get("password")?.as_str()?;
        Some((u.to_string(), p.to_string()))
    })
}

async fn login(State(st): State<Arc<Login>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((user, pass)) = &st.credentials else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"errorMessage": "login is disabled on this simulator"})),
        )
            .into_response();
    };
    let ok = presented(&headers, &body).filter(|(u, p)| {
        // Evaluate both so a wrong user and a wrong password take equally long.
        let user_ok = constant_time_eq(u.as_bytes(), user.as_bytes());
        let pass_ok = constant_time_eq(p.as_bytes(), pass.as_bytes());
        user_ok & pass_ok
    });
    let Some((user, _)) = ok else {
        Counters::inc(&st.counters.login_failures);
        info!("REST login rejected");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errorCode": "112498", "errorMessage": "Unauthorized User"})),
        )
            .into_response();
    };
    let token: String = rand::random::<[u8; 24]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    st.auth.add_session(token.clone());
    Counters::inc(&st.counters.logins);
    info!(user = %user, "REST login succeeded");
    (
        StatusCode::OK,
        [(
            header::SET_COOKIE,
            format!("access_token={token}; Path=/; Secure; HttpOnly"),
        )],
        Json(json!({"sessionId": token, "userName": user})),
    )
        .into_response()
}
