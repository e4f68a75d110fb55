//! The web console's static files (`web/dist`, built by `npm run build --prefix web` and
//! compiled into the binary), served at `/` on the HTTPS listener only, each answer under a
//! content security policy that allows this origin's script and WebAssembly and nothing
//! inline or third-party; and `/console.json`, which tells the page where MQTT over WSS is.
//!
//! The page does all of its cryptography itself; this module only hands out files. It may use
//! actix-web and the config; it must never template anything secret into a page, and never
//! serve the console over plain HTTP, where the typed password would travel in the clear.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::listener::Connection;
use super::{ApiError, ApiState, Result};

/// A file of web/dist: the path it is served at, its media type and its bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        path: "/",
        media_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../../web/dist/index.html"),
    },
    Asset {
        path: "/console.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../../web/dist/console.js"),
    },
    Asset {
        path: "/console.css",
        media_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../../web/dist/console.css"),
    },
    Asset {
        path: "/favicon.svg",
        media_type: "image/svg+xml",
        body: include_bytes!("../../../../web/dist/favicon.svg"),
    },
];

/// The paths the console is served at, for routing.
pub(super) fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path).chain(["/console.json"])
}

/// `GET /console.json`: where the page opens its MQTT link.
#[derive(Serialize)]
struct Site {
    mqtt_url: Option<String>,
}

/// The host the browser asked for, without its port, if it is a plain host name or address
/// (it is echoed into a header and a URL, so anything else is refused).
fn request_host(req: &HttpRequest) -> Option<&str> {
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    let host = match authority.strip_prefix('[') {
        Some(rest) => &authority[..rest.find(']')? + 2],
        None => authority.split_once(':').map_or(authority, |(h, _)| h),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    (!host.is_empty() && host.len() <= 253 && host.chars().all(plain)).then_some(host)
}

/// The MQTT URL for a page loaded from `req`: the configured one, or this broker's wss
/// listener on the page's host if the certificate covers that host (a browser checked it
/// against the certificate to load the page; a forged `Host` names nothing the page may be
/// sent to, and the page then says the MQTT link is not configured).
fn mqtt_url(req: &HttpRequest, state: &ApiState) -> Option<String> {
    let configured = &state.config.https.console_mqtt_url;
    if !configured.is_empty() {
        return Some(configured.clone());
    }
    let port = state.wss_port?;
    let host = request_host(req).filter(|host| state.certificate.vouches_for(host))?;
    Some(format!("wss://{host}:{port}{}", state.config.wss.path))
}

/// The policy of every console answer: scripts and WebAssembly from this origin only (libsodium
/// compiles WebAssembly, hence 'wasm-unsafe-eval'; nothing may `eval`), fetches to this origin
/// and the MQTT URL, no plugins, frames, form posts or base rewrites.
fn content_security_policy(mqtt: Option<&str>) -> String {
    let connect = mqtt.map_or(String::new(), |url| {
        // The origin of the URL: scheme, host and port, without the path.
        let end = url[6..].find('/').map_or(url.len(), |i| i + 6);
        format!(" {}", &url[..end])
    });
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
         connect-src 'self'{connect}; img-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// One file of the console, or `/console.json`.
pub(super) async fn serve(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse> {
    if !state.config.https.console {
        return Err(ApiError::NotFound(
            "the web console is switched off (https.console = false)",
        ));
    }
    let secure = req.conn_data::<Connection>().is_some_and(|c| c.secure);
    if !secure {
        return Err(ApiError::NotFound(
            "the web console is served over HTTPS only: open the [https] listener's address",
        ));
    }
    let mqtt = mqtt_url(&req, &state);
    let mut answer = HttpResponse::Ok();
    answer
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            content_security_policy(mqtt.as_deref()),
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // Revalidated at each visit; nosniff and HSTS come with every answer (http::guard).
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if req.path() == "/console.json" {
        return Ok(answer.json(Site { mqtt_url: mqtt }));
    }
    let asset = ASSETS
        .iter()
        .find(|a| a.path == req.path())
        .ok_or(ApiError::NotFound("no such file of the web console"))?;
    Ok(answer.content_type(asset.media_type).body(asset.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_the_mqtt_origin_without_its_path() {
        let csp = content_security_policy(Some("wss://mqtt.example.com:8084/mqtt"));
        assert!(
            csp.contains("connect-src 'self' wss://mqtt.example.com:8084;"),
            "{csp}"
        );
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval';"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let none = content_security_policy(None);
        assert!(none.contains("connect-src 'self';"), "{none}");
    }

    #[test]
    fn hosts_are_plain_or_refused() {
        let host = |value: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((header::HOST, value))
                .to_http_request();
            request_host(&req).map(str::to_owned)
        };
        assert_eq!(host("127.0.0.1:8443").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            host("console.example.com").as_deref(),
            Some("console.example.com")
        );
        assert_eq!(host("[::1]:8443").as_deref(), Some("[::1]"));
        assert_eq!(host("evil.example;script-src *"), None);
        assert_eq!(host("a\"b"), None);
        assert_eq!(host(""), None);
    }
}
