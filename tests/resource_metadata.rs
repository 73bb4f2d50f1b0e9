//! RFC 9728 protected-resource metadata: the document, its well-known URL, the
//! `resource_metadata` parameter of every challenge, and a client that starts
//! from nothing but the resource URL (the MCP authorization flow), through the
//! layer, the gateway and the ext-authz checks, all over loopback with the
//! bundled authorization server.

mod common;

use axum::Router;
use axum::routing::post;
use bearer_guard::authz_server::{AuthorizationServer, AuthorizationServerHandle, ClientConfig};
use bearer_guard::sender::{Dpop, DpopMode};
use bearer_guard::{BuildError, Guard, Issuer, RequireScope, ResourceMetadata, VerifiedToken};
use common::{http, spawn_app};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A quoted parameter of one challenge (values bearer-guard writes hold no
/// escaped quotes).
fn param(challenge: &str, name: &str) -> Option<String> {
    let start = challenge
        .split([' ', ','])
        .find_map(|part| part.strip_prefix(&format!("{name}=\"")))?;
    Some(start.trim_end_matches('"').to_owned())
}

async fn idp(resource: &str) -> AuthorizationServerHandle {
    AuthorizationServer::builder()
        .client(ClientConfig::confidential("agent", "agent-secret").scopes(["tools:read", "other"]))
        .audience(resource)
        .start()
        .await
        .expect("authorization server")
}

/// An MCP-style server at `/mcp` behind `guard`'s layer.
fn mcp_app(guard: &Guard) -> Router {
    Router::new()
        .route(
            "/mcp",
            post(|t: VerifiedToken| async move {
                axum::Json(json!({"jsonrpc": "2.0", "id": 1, "result": {
                    "tools": [], "client": t.client_id(),
                }}))
            })
            .route_layer(RequireScope::all(["tools:read"])),
        )
        .layer(guard.layer())
}

/// The MCP client's discovery: 401 -> resource metadata -> RFC 8414 metadata ->
/// client credentials -> the call. Returns the final JSON-RPC answer.
async fn discover_and_call(resource: &str) -> Value {
    let http = http();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let first = http.post(resource).json(&list).send().await.expect("send");
    assert_eq!(first.status(), 401);
    let challenge = first.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let metadata_url = param(&challenge, "resource_metadata").expect("resource_metadata");
    assert_eq!(
        metadata_url,
        bearer_guard::resource_metadata::metadata_url(resource).unwrap()
    );

    let answer = http.get(&metadata_url).send().await.expect("metadata");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/json");
    assert!(
        answer.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public, max-age=")
    );
    let metadata: Value = answer.json().await.expect("json");
    assert_eq!(metadata["resource"], resource, "RFC 9728 §3.3");
    let issuer = metadata["authorization_servers"][0]
        .as_str()
        .expect("an AS");
    let scope = metadata["scopes_supported"][0].as_str().expect("a scope");

    let as_metadata: Value = http
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("AS metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(as_metadata["issuer"], issuer);
    let token: Value = http
        .post(
            as_metadata["token_endpoint"]
                .as_str()
                .expect("token endpoint"),
        )
        .basic_auth("agent", Some("agent-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("resource", resource),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let access = token["access_token"].as_str().expect("access token");
    let answer = http
        .post(resource)
        .bearer_auth(access)
        .json(&list)
        .send()
        .await
        .expect("call");
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("json")
}

#[tokio::test]
async fn a_client_finds_its_way_from_the_resource_url_to_a_successful_call() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resource = format!("http://{}/mcp", listener.local_addr().unwrap());
    let idp = idp(&resource).await;
    let guard = Guard::builder()
        .issuer(idp.issuer())
        .audience(resource.as_str())
        .resource_metadata(
            ResourceMetadata::new(resource.as_str())
                .scopes_supported(["tools:read"])
                .resource_name("MCP test server"),
        )
        .build()
        .unwrap();
    let app = mcp_app(&guard);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let answer = discover_and_call(&resource).await;
    assert_eq!(answer["result"]["client"], "agent");
}

#[tokio::test]
async fn the_document_has_the_guard_s_issuers_and_dpop_settings() {
    let resource = "https://api.example.com/mcp";
    let guard = Guard::builder()
        .issuer(Issuer::new("https://login.example.com").jwks_uri("https://login.example.com/jwks"))
        .issuer(
            Issuer::tenant_template("https://login.example.com/{tenant}/v2")
                .jwks_uri("https://login.example.com/jwks")
                .allow_any_tenant(),
        )
        .audience(resource)
        .dpop(Dpop::new("https://api.example.com").mode(DpopMode::Required))
        .resource_metadata(
            ResourceMetadata::new(resource)
                .resource_documentation("https://docs.example.com/mcp")
                .tls_client_certificate_bound_access_tokens(true),
        )
        .build()
        .unwrap();
    let published = guard.resource_metadata().unwrap();
    let doc: Value = serde_json::from_slice(published.document()).unwrap();
    // The template has no one URL: only the exact issuer is listed.
    assert_eq!(
        doc["authorization_servers"],
        json!(["https://login.example.com"])
    );
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(doc["dpop_bound_access_tokens_required"], true);
    assert!(
        doc["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
    assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        doc["resource_documentation"],
        "https://docs.example.com/mcp"
    );
    assert!(doc.get("scopes_supported").is_none());
}

#[tokio::test]
async fn every_challenge_names_the_metadata_bearer_dpop_403_and_grpc() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let resource = format!("{base}/mcp");
    let idp = idp(&resource).await;
    let guard = Guard::builder()
        .issuer(idp.issuer())
        .audience(resource.as_str())
        .realm("mcp")
        .dpop(Dpop::new(&base))
        .resource_metadata(ResourceMetadata::new(resource.as_str()))
        .build()
        .unwrap();
    let url = guard.resource_metadata().unwrap().url().to_owned();
    let app = mcp_app(&guard);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = http();
    let challenges = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };

    // No token: both schemes are challenged, each naming the metadata.
    let r = http.post(&resource).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let all = challenges(&r);
    assert_eq!(all.len(), 2, "{all:?}");
    for c in &all {
        assert_eq!(param(c, "resource_metadata").as_deref(), Some(&*url), "{c}");
        assert_eq!(param(c, "realm").as_deref(), Some("mcp"), "{c}");
    }

    // An invalid token: the error and the metadata on the same challenge.
    let r = http
        .post(&resource)
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let bearer = challenges(&r)
        .into_iter()
        .find(|c| c.starts_with("Bearer"))
        .unwrap();
    assert_eq!(param(&bearer, "error").as_deref(), Some("invalid_token"));
    assert_eq!(param(&bearer, "resource_metadata").as_deref(), Some(&*url));

    // A missing scope: 403 names the metadata too (where to get a better token).
    let token = idp
        .client_credentials_token("agent", &["other"])
        .await
        .unwrap();
    let r = http
        .post(&resource)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let bearer = challenges(&r)
        .into_iter()
        .find(|c| c.starts_with("Bearer"))
        .unwrap();
    assert_eq!(
        param(&bearer, "error").as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(param(&bearer, "resource_metadata").as_deref(), Some(&*url));

    // A gRPC request's trailers-only refusal keeps the challenge.
    let r = http
        .post(&resource)
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["grpc-status"], "16");
    assert!(challenges(&r).iter().all(|c| c.contains(&url)));
}

#[tokio::test]
async fn the_layer_answers_get_and_head_tokenless_and_405_otherwise() {
    let guard = Guard::builder()
        .issuer(Issuer::new("https://login.example.com").jwks_uri("https://login.example.com/jwks"))
        .audience("https://api.example.com")
        .resource_metadata(ResourceMetadata::new("https://api.example.com"))
        .build()
        .unwrap();
    let base = format!("http://{}", spawn_app(mcp_app(&guard)).await);
    let http = http();
    let path = "/.well-known/oauth-protected-resource";
    let r = http.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["resource"], "https://api.example.com");
    let r = http.head(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.post(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    // Other well-known paths are not the document: the token is required there.
    let r = http
        .get(format!("{base}{path}/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_axum_router_serves_it_beside_route_layered_guards() {
    let guard = Guard::builder()
        .issuer(Issuer::new("https://login.example.com").jwks_uri("https://login.example.com/jwks"))
        .audience("https://api.example.com/mcp")
        .resource_metadata(ResourceMetadata::new("https://api.example.com/mcp"))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/mcp", post(|| async { "ok" }).route_layer(guard.layer()))
        .merge(bearer_guard::axum::resource_metadata_router(&guard));
    let base = format!("http://{}", spawn_app(app).await);
    let r = http()
        .get(format!("{base}/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http().post(format!("{base}/mcp")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains(
        "resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/mcp\""
    ));
}

#[test]
fn bad_metadata_is_refused_at_build() {
    let build = |m: ResourceMetadata| {
        Guard::builder()
            .issuer(
                Issuer::new("https://login.example.com").jwks_uri("https://login.example.com/jwks"),
            )
            .audience("https://api.example.com")
            .resource_metadata(m)
            .build()
    };
    for bad in [
        ResourceMetadata::new("api.example.com"),
        ResourceMetadata::new("http://api.example.com/"),
        ResourceMetadata::new("https://api.example.com/#x"),
        ResourceMetadata::new("https://api.example.com/").scopes_supported(["a\"b"]),
        ResourceMetadata::new("https://api.example.com/").authorization_server("nope"),
    ] {
        match build(bad.clone()) {
            Err(BuildError::InvalidResourceMetadata(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[cfg(feature = "gateway")]
mod gateway {
    use super::*;
    use bearer_guard::gateway::{Gateway, GatewayConfig};

    #[tokio::test]
    async fn the_gateway_serves_the_metadata_and_names_it_in_challenges() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let resource = format!("http://{}/mcp", listener.local_addr().unwrap());
        let idp = idp(&resource).await;
        let upstream = spawn_app(Router::new().route(
            "/mcp",
            post(|| async {
                axum::Json(json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}))
            }),
        ))
        .await;
        let toml = format!(
            r#"
    listen = "127.0.0.1:0"
    upstream = "http://{upstream}"
    [[issuer]]
    issuer = "{issuer}"
    audiences = ["{resource}"]
    [[route]]
    path = "/mcp"
    scopes_all = ["tools:read"]
    [resource_metadata]
    resource = "{resource}"
    scopes_supported = ["tools:read"]
    resource_name = "MCP via the gateway"
    "#,
            issuer = idp.issuer(),
        );
        let gateway = Gateway::from_config(GatewayConfig::from_toml(&toml).unwrap()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            gateway
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        // No route covers the well-known path: the gateway answers it itself.
        discover_and_call(&resource).await;
        drop(stop);
    }

    #[tokio::test]
    async fn gateway_config_errors_name_the_resource_metadata_key() {
        let toml = r#"
    listen = "127.0.0.1:0"
    upstream = "http://127.0.0.1:9"
    [[issuer]]
    issuer = "https://login.example.com"
    audiences = ["https://api.example.com"]
    [[route]]
    path = "/"
    [resource_metadata]
    resource = "https://api.example.com/#fragment"
    "#;
        let e = Gateway::from_config(GatewayConfig::from_toml(toml).unwrap()).unwrap_err();
        assert_eq!(e.key(), Some("resource_metadata"), "{e}");
        let e = GatewayConfig::from_toml(&toml.replace("resource =", "resourc =")).unwrap_err();
        assert!(e.to_string().contains("resourc"), "{e}");
    }
}

#[cfg(feature = "ext-authz")]
mod ext_authz {
    use super::*;
    use common::checks::{Issuer as StaticIssuer, send, start_checks_with};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

    const TABLE: &str = r#"
[resource_metadata]
resource = "https://api.example.com"
scopes_supported = ["orders:read"]
"#;
    const URL: &str = "https://api.example.com/.well-known/oauth-protected-resource";

    #[tokio::test]
    async fn the_http_check_answers_the_document_directly_and_for_nginx() {
        let issuer = StaticIssuer::start().await;
        let checks = start_checks_with(&issuer.url, "", TABLE).await;
        let base = format!("http://{}", checks.http);

        // A proxy routing the well-known path to the check service directly.
        let (status, headers, body) = send(
            http::Method::GET,
            &format!("{base}/.well-known/oauth-protected-resource"),
            &[],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["authorization_servers"], json!([issuer.url]));

        // nginx auth_request: a 401 carrying the true status and the document.
        let nginx = |uri: &str| {
            vec![
                ("x-original-uri".to_owned(), uri.to_owned()),
                ("x-original-method".to_owned(), "GET".to_owned()),
            ]
        };
        let (status, headers, body) = send(
            http::Method::GET,
            &format!("{base}/check"),
            &nginx("/.well-known/oauth-protected-resource"),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(headers["x-auth-status"], "200");
        let doc: Value = serde_json::from_slice(headers["x-auth-body"].as_bytes()).unwrap();
        assert_eq!(doc, serde_json::from_slice::<Value>(&body).unwrap());
        assert_eq!(doc["resource"], "https://api.example.com");

        // A refusal's challenge names the metadata.
        let (status, headers, _) = send(
            http::Method::GET,
            &format!("{base}/check"),
            &nginx("/orders"),
        )
        .await;
        assert_eq!(status, 401);
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains(&format!("resource_metadata=\"{URL}\"")),
            "{challenge}"
        );
    }

    #[tokio::test]
    async fn the_grpc_check_answers_the_document_as_a_200_denial() {
        let issuer = StaticIssuer::start().await;
        let checks = start_checks_with(&issuer.url, "", TABLE).await;
        let request = |path: &str| CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".to_owned(),
                        path: path.to_owned(),
                        ..HttpRequest::default()
                    }),
                    ..Request::default()
                }),
                ..AttributeContext::default()
            }),
        };
        let mut client = AuthorizationClient::connect(format!("http://{}", checks.grpc))
            .await
            .unwrap();
        let answer = client
            .check(request("/.well-known/oauth-protected-resource"))
            .await
            .unwrap()
            .into_inner();
        match answer.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                assert_eq!(d.status.map(|s| s.code), Some(200));
                let doc: Value = serde_json::from_str(&d.body).unwrap();
                assert_eq!(doc["resource"], "https://api.example.com");
            }
            other => panic!("{other:?}"),
        }
        let answer = client.check(request("/orders")).await.unwrap().into_inner();
        match answer.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                assert_eq!(d.status.map(|s| s.code), Some(401));
                let www = d
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .find(|h| h.key.eq_ignore_ascii_case("www-authenticate"))
                    .unwrap();
                assert!(www.value.contains(URL), "{}", www.value);
            }
            other => panic!("{other:?}"),
        }
    }
}
