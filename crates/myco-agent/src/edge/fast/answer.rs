//! The fast path's own error answers: whole JSON answers written into the
//! output buffer, as the hyper path's `proxy::error` and `finish` make them.

use std::io::Write as _;

use super::head::field;

/// Writes a whole JSON error answer (as the proxy's `error`), with the
/// request id and `Via` when given (as its `finish`).
pub fn write_error(
    out: &mut Vec<u8>,
    status: u16,
    msg: &str,
    job: Option<&str>,
    ids: Option<(&str, &str)>,
    close: bool,
) {
    let body = crate::edge::proxy::error_body(msg, job);
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some((id, via)) = ids {
        field(out, b"x-request-id", id.as_bytes());
        field(out, b"via", via.as_bytes());
    }
    if close {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_their_ids() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            503,
            "none",
            Some("j"),
            Some(("rid", "1.1 myco-me")),
            false,
        );
        let s = String::from_utf8(out).unwrap();
        let body = r#"{"error":"none","job":"j"}"#;
        assert_eq!(
            s,
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 x-request-id: rid\r\nvia: 1.1 myco-me\r\n\r\n{body}",
                body.len()
            )
        );
    }
}
