//! An MCP-style server and a client that starts from nothing but its URL.
//!
//! The server: a JSON-RPC endpoint, `POST /mcp` (`tools/list`, `tools/call`),
//! behind a bearer-guard that publishes its protected-resource metadata
//! (RFC 9728), as the MCP authorization specification asks of servers.
//!
//! The client, knowing only `http://127.0.0.1:PORT/mcp`:
//! 1. calls it and gets 401 with `WWW-Authenticate: Bearer resource_metadata="…"`;
//! 2. fetches that metadata: the resource identifier, its authorization server,
//!    the scopes;
//! 3. fetches the authorization server's metadata (RFC 8414) for its token endpoint;
//! 4. gets a token with the client-credentials grant, for this resource
//!    (`resource=`, RFC 8707) and the advertised scope;
//! 5. calls `tools/list` again, with the token, and succeeds.
//!
//! Run it with `cargo run --example mcp`. It exits by itself.

use axum::routing::post;
use axum::{Json, Router};
use bearer_guard::authz_server::{AuthorizationServer, ClientConfig};
use bearer_guard::{Guard, RequireScope, ResourceMetadata, VerifiedToken};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let resource = format!("http://{}/mcp", listener.local_addr()?);

    // The authorization server knows the MCP server as an audience, and one
    // machine client allowed to use its tools.
    let idp = AuthorizationServer::builder()
        .client(ClientConfig::confidential("agent", "agent-secret").scopes(["tools:read"]))
        .audience(resource.as_str())
        .start()
        .await?;

    let guard = Guard::builder()
        .issuer(idp.issuer())
        .audience(resource.as_str())
        .resource_metadata(
            ResourceMetadata::new(resource.as_str())
                .scopes_supported(["tools:read"])
                .resource_name("Example MCP server"),
        )
        .build()?;
    let app = Router::new()
        .route(
            "/mcp",
            post(rpc).route_layer(RequireScope::all(["tools:read"])),
        )
        // Also answers GET /.well-known/oauth-protected-resource/mcp, tokenless.
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let result = discover_and_call(&resource, "agent", "agent-secret").await?;
    println!("tools/list -> {result}");
    Ok(())
}

/// The MCP server's one endpoint: a JSON-RPC 2.0 request, a JSON-RPC answer.
async fn rpc(token: VerifiedToken, Json(request): Json<Value>) -> Json<Value> {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let answer = match request.get("method").and_then(Value::as_str) {
        Some("tools/list") => json!({"tools": [{
            "name": "whoami",
            "description": "Says which client is calling",
            "inputSchema": {"type": "object"},
        }]}),
        Some("tools/call") => json!({"content": [{
            "type": "text",
            "text": format!("you are {}", token.client_id().unwrap_or("?")),
        }]}),
        _ => {
            return Json(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "method not found"}}));
        }
    };
    Json(json!({"jsonrpc": "2.0", "id": id, "result": answer}))
}

/// The client: from the resource URL to a successful `tools/list`.
async fn discover_and_call(
    resource: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    let http = reqwest::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});

    // 1. Unauthenticated: the challenge names the metadata.
    let first = http.post(resource).json(&list).send().await?;
    assert_eq!(first.status(), 401);
    let challenge = first
        .headers()
        .get("www-authenticate")
        .ok_or("no challenge")?
        .to_str()?;
    let metadata_url = challenge_param(challenge, "resource_metadata")
        .ok_or("the challenge has no resource_metadata")?;
    println!("401, metadata at {metadata_url}");

    // 2. The protected-resource metadata; its resource must be ours (RFC 9728 §3.3).
    let metadata: Value = http
        .get(&metadata_url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if metadata["resource"] != resource {
        return Err("the metadata is for another resource".into());
    }
    let issuer = metadata["authorization_servers"][0]
        .as_str()
        .ok_or("no authorization server")?;
    let scope = metadata["scopes_supported"][0].as_str().ok_or("no scope")?;

    // 3. The authorization server's metadata (RFC 8414); its issuer must match.
    let as_metadata: Value = http
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if as_metadata["issuer"] != issuer {
        return Err("the authorization server metadata names another issuer".into());
    }
    let token_endpoint = as_metadata["token_endpoint"]
        .as_str()
        .ok_or("no token endpoint")?;

    // 4. A token for this resource.
    let token: Value = http
        .post(token_endpoint)
        .basic_auth(client_id, Some(client_secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("resource", resource),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let access_token = token["access_token"].as_str().ok_or("no access token")?;

    // 5. The call, authorized.
    let answer: Value = http
        .post(resource)
        .bearer_auth(access_token)
        .json(&list)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(answer["result"].clone())
}

/// A quoted parameter of a `WWW-Authenticate` challenge. The values bearer-guard
/// writes hold no escaped quotes, so a plain scan suffices here.
fn challenge_param(challenge: &str, name: &str) -> Option<String> {
    let start = challenge.find(&format!("{name}=\""))? + name.len() + 2;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}
