//! The generator of the OpenAPI document (tests and `--features openapi`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::super::{
    cache, dashboard, events, instances, jobs, kv, logs, metrics, msg, routes, spores, status,
};

/// The document. Paths are listed by resource, in the router's order.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Myco agent API",
        description = "Every node answers the same API. Reads are open when the API listens \
                       on loopback; everything else needs `Authorization: Bearer TOKEN`.",
        license(name = "Apache-2.0")
    ),
    paths(
        dashboard::dashboard, dashboard::login_form, dashboard::login,
        status::health, metrics::metrics, super::openapi_json,
        status::status, status::nodes, status::node, status::peers, status::peer_add,
        status::cluster_key, status::faults, status::mesh_status,
        kv::list, kv::get, kv::put, kv::delete,
        events::events,
        jobs::list, jobs::deploy, jobs::plan, jobs::show, jobs::stop, jobs::scale,
        jobs::revert, jobs::restart, jobs::versions,
        instances::list, instances::workloads, instances::workload_create,
        instances::workload_show, instances::workload_stop,
        spores::list, spores::push, spores::download, spores::gc,
        spores::trust_list, spores::trust_add, spores::trust_remove,
        logs::logs,
        cache::list, cache::show, cache::create, cache::get, cache::put, cache::incr, cache::delete,
        msg::publish, msg::subscribe, msg::request, msg::reply,
        routes::routes,
    ),
    components(schemas(myco_proto::api::ApiEvent, myco_proto::api::ApiError)),
    modifiers(&BearerToken, &Aliases)
)]
pub struct ApiDoc;

/// Paths whose GET is served by the GET handler of another path (alias,
/// documented path): the seed systems' names.
pub const ALIASES: &[(&str, &str)] = &[
    ("/api/nodes", "/v1/nodes"),
    ("/api/cluster/status", "/v1/status"),
    ("/mesh/peers", "/v1/peers"),
];

/// Declares the bearer token and that an operation may use it.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let comps = doc.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Either no token (reads on loopback) or the token.
        doc.security = Some(vec![
            utoipa::openapi::security::SecurityRequirement::default(),
            utoipa::openapi::security::SecurityRequirement::new("token", Vec::<String>::new()),
        ]);
    }
}

/// Copies each documented path's GET to its aliases.
struct Aliases;

impl Modify for Aliases {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (alias, of) in ALIASES {
            if let Some(mut item) = doc.paths.paths.get(*of).cloned() {
                (item.post, item.put, item.delete, item.patch) = (None, None, None, None);
                doc.paths.paths.insert((*alias).to_string(), item);
            }
        }
    }
}

/// The document generated from the code, in the committed copy's form:
/// JSON indented by one space.
pub fn generated() -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    ApiDoc::openapi()
        .serialize(&mut ser)
        .expect("the document serializes");
    out.push(b'\n');
    String::from_utf8(out).expect("JSON is UTF-8")
}
