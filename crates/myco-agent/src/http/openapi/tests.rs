//! The document against the router: every route `router()` declares, with
//! each of its methods, must be in `/openapi.json`. The routes are read
//! from the router's source, so a route added without documentation fails
//! here instead of being silently absent from the document.

use super::{document, generated, minify};

/// The binary serves the committed `openapi.json`; it must be what the
/// code generates. `MYCO_BLESS=1` rewrites it after an API change.
#[test]
fn the_served_document_is_the_generated_one() {
    let fresh = generated();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/openapi.json");
    if std::env::var_os("MYCO_BLESS").is_some() {
        std::fs::write(path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == fresh,
        "src/http/openapi.json is not what the code generates: run \
         `MYCO_BLESS=1 cargo test -p myco-agent openapi` and commit the file"
    );
    assert!(document().len() < fresh.len() && !document().contains("\n "));
    let served: serde_json::Value = serde_json::from_str(document()).unwrap();
    let generated: serde_json::Value = serde_json::from_str(&fresh).unwrap();
    assert_eq!(served, generated);
}

/// (path in OpenAPI form, method) of every `.route(...)` in `http/mod.rs`.
fn routes_in_router() -> Vec<(String, String)> {
    let src = include_str!("../mod.rs");
    let mut out = Vec::new();
    for chunk in src.split(".route(").skip(1) {
        // The call's text: up to its matching close parenthesis.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a .route( call closes");
        let call = &chunk[..end];
        let path = call.split('"').nth(1).expect("a route's path is a literal");
        // axum's `{*key}` is OpenAPI's `{key}`.
        let path = path.replace("{*", "{");
        for m in ["get", "post", "put", "delete"] {
            let called = call
                .match_indices(&format!("{m}("))
                .any(|(i, _)| i == 0 || !call.as_bytes()[i - 1].is_ascii_alphanumeric());
            if called {
                out.push((path.clone(), m.to_string()));
            }
        }
    }
    out
}

#[test]
fn minify_drops_whitespace_between_tokens_only() {
    assert_eq!(
        minify("{\n \"a b\": [1, \"x \\\" y\"],\n \"c\": {}\n}\n"),
        r#"{"a b":[1,"x \" y"],"c":{}}"#
    );
}

#[test]
fn every_route_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = routes_in_router();
    assert!(routes.len() > 40, "the router parse found {}", routes.len());
    let missing: Vec<_> = routes
        .iter()
        // GET and DELETE of /v1/jobs/plan are the job named `plan`:
        // `/v1/jobs/{name}` documents them.
        .filter(|(p, m)| !(p == "/v1/jobs/plan" && m != "post"))
        .filter(|(p, m)| doc["paths"][p.as_str()][m.as_str()].is_null())
        .collect();
    assert!(
        missing.is_empty(),
        "routes not in /openapi.json: {missing:?}"
    );
}

#[test]
fn document_has_no_route_the_router_lacks() {
    let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
    let routes = routes_in_router();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes.iter().any(|(p, m)| p == path && m == method),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[test]
fn schemas_come_from_the_api_types() {
    let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
    let node = &doc["components"]["schemas"]["NodeInfo"]["properties"];
    for field in ["id", "name", "state", "tags", "capacity", "version"] {
        assert!(!node[field].is_null(), "NodeInfo.{field} missing");
    }
    let scale = &doc["paths"]["/v1/jobs/{name}/scale"]["post"]["requestBody"];
    assert!(
        scale.to_string().contains("ScaleRequest"),
        "scale takes a ScaleRequest: {scale}"
    );
    assert!(!doc["components"]["securitySchemes"]["token"].is_null());
}
