//! The browser demo, when `demo.enabled`: its page and the JavaScript
//! client's modules served from the checkout (nothing outside their two
//! folders), and `POST /demo/token`, whose tokens the server accepts. Off
//! by default: then none of it exists.

use crate::support::*;

use serde_json::{json, Value};

fn demo_server(secret: &str) -> TestServer {
    server_with(|config| {
        config.demo.enabled = true;
        config.demo.root = env!("CARGO_MANIFEST_DIR").into();
        config.auth.jwt_secret = secret.into();
    })
}

#[tokio::test]
async fn the_page_and_the_client_are_served_and_nothing_else() {
    let server = demo_server("");
    let (status, page) = http_get(server.addr, "/demo/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Herald chat</title>") && page.contains("app.js"), "{page}");
    let (status, app) = http_get(server.addr, "/demo/app.js").await;
    assert_eq!(status, 200);
    assert!(app.contains("/demo/client/index.js"), "the page imports the client from where it is served");
    let (status, client) = http_get(server.addr, "/demo/client/index.js").await;
    assert_eq!(status, 200, "{client}");
    assert!(client.contains("HeraldClient"), "{client}");
    for outside in ["/demo/../Cargo.toml", "/demo/%2e%2e%2fCargo.toml", "/demo/.gitignore", "/demo/client/..%2f..%2fREADME.md", "/demo/nope.js"] {
        assert_eq!(http_get(server.addr, outside).await.0, 404, "{outside}");
    }
    let (status, _) = http_get(server.addr, "/demo").await;
    assert_eq!(status, 308, "/demo goes to /demo/");
}

#[tokio::test]
async fn a_demo_token_signs_in_the_name_picked() {
    // With no secret configured, the node makes one for itself.
    for secret in ["", "configured-secret"] {
        let server = demo_server(secret);
        let (status, body) = http_request(server.addr, "POST", "/demo/token", &[], r#"{"name":"alice"}"#).await;
        assert_eq!(status, 200, "{body}");
        let token: Value = serde_json::from_str(&body).unwrap();
        let mut client = ws_connect_token(&server, token["token"].as_str().unwrap()).await;
        assert_eq!(client.request(json!({"type": "ping", "id": 1})).await["type"], "pong");
        assert_eq!(client.join("lobby").await["users"], json!(["alice"]), "signed in as alice");
        for bad in [r#"{"name":""}"#, r#"{"name":"a b"}"#, r#"{"name":"anon:1"}"#, r#"{}"#, "nope"] {
            assert_eq!(http_request(server.addr, "POST", "/demo/token", &[], bad).await.0, 400, "{bad}");
        }
    }
}

#[tokio::test]
async fn without_demo_enabled_none_of_it_exists() {
    let server = start(config());
    assert_eq!(http_get(server.addr, "/demo/").await.0, 404);
    assert_eq!(http_request(server.addr, "POST", "/demo/token", &[], r#"{"name":"alice"}"#).await.0, 404);
}
