//! `GET /`: the dashboard, one static page that polls the JSON API.

use axum::response::Html;

/// The page.
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
