//! `GET /`: the dashboard, one self-contained page (no CDN, no build step)
//! that reads the JSON API and follows `/v1/events` to stay live: nodes,
//! jobs, instances with a live log tail, events, a scale action; and
//! `/login`, where a browser trades the token once for a session cookie
//! when the API listens off loopback (reads need the token there, and a
//! browser cannot send an `Authorization` header from a page it loads).

use std::time::Instant;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::ApiState;
use super::auth::token_matches;
use super::front::{SESSION_COOKIE, SESSION_TTL};

/// The page.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/", tag = "dashboard", responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String))))]
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

const LOGIN_PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>myco: log in</title></head>
<body><h1>myco</h1><p>This API listens off loopback: paste the node's API token
(<code>myco token</code> or <code>DATA_DIR/api-token</code>) to open the dashboard.</p>
<form method="post" action="/login"><input type="password" name="token" autocomplete="current-password" size="48" autofocus>
<button type="submit">Log in</button></form>__ERROR__</body></html>"#;

/// `GET /login`: the form.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/login", tag = "dashboard", responses((status = 200, description = "The login form", content_type = "text/html", body = String))))]
pub async fn login_form() -> Html<String> {
    Html(LOGIN_PAGE.replace("__ERROR__", ""))
}

/// The form's body.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: a right token sets an `HttpOnly; SameSite=Strict`
/// session cookie and sends the browser to the dashboard; a wrong one
/// shows the form again with 401.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/login", tag = "dashboard", request_body(content = Object, content_type = "application/x-www-form-urlencoded", description = "`token=...`"), responses((status = 303, description = "Logged in: a session cookie, back to `/`"), (status = 401, description = "Wrong token", content_type = "text/html", body = String), (status = 415, description = "Not a form"), (status = 422, description = "No token field"))))]
pub async fn login(State(s): State<ApiState>, Form(form): Form<LoginForm>) -> Response {
    let mut headers = axum::http::HeaderMap::new();
    let bearer = format!("Bearer {}", form.token.trim());
    if let Ok(v) = HeaderValue::from_str(&bearer) {
        headers.insert(header::AUTHORIZATION, v);
    }
    if !token_matches(&headers, &s.token) {
        let page = LOGIN_PAGE.replace(
            "__ERROR__",
            "<p><strong>That is not this node's API token.</strong></p>",
        );
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    let id = s.front.sessions.create(Instant::now());
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut resp = (StatusCode::SEE_OTHER, "").into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex ids are valid header text"),
    );
    resp
}
