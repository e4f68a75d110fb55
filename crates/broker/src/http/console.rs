//! The web console's static files (`web/dist`, built by `npm run build --prefix web` and
//! compiled into the binary), served at `/` on the HTTPS listener only, each answer under a
//! content security policy that allows this origin's script and WebAssembly and nothing
//! inline or third-party; and `/console.json`, which tells the page where MQTT over WSS is.
//!
//! The page does all of its cryptography itself; this module only hands out files. It may use
//! actix-web and the config; it must never template anything secret into a page, and never
//! serve the console over plain HTTP, where the typed password would travel in the clear.

use std::sync::LazyLock;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::listener::Connection;
use super::{ApiError, ApiState, Result};

/// A file of web/dist in the three encodings the build writes: as is, gzip and brotli.
struct File {
    name: &'static str,
    identity: &'static [u8],
    gzip: &'static [u8],
    brotli: &'static [u8],
}

/// The file `web/dist/<name>` and its `.gz` and `.br` forms, compiled in.
macro_rules! dist {
    ($name:literal) => {
        File {
            name: $name,
            identity: include_bytes!(concat!("../../../../web/dist/", $name)),
            gzip: include_bytes!(concat!("../../../../web/dist/", $name, ".gz")),
            brotli: include_bytes!(concat!("../../../../web/dist/", $name, ".br")),
        }
    };
}

const FILES: [File; 4] = [
    dist!("index.html"),
    dist!("console.js"),
    dist!("console.css"),
    dist!("favicon.svg"),
];

/// `web/dist/assets.json`: which path serves which file (every file but the page at a path
/// naming its content's hash, so it can be cached for good), and the page's ETag.
#[derive(Deserialize)]
struct Manifest {
    page_etag: String,
    assets: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    path: String,
    file: String,
    media_type: String,
    immutable: bool,
}

/// One path of the console: its file, media type and caching.
struct Asset {
    path: String,
    file: &'static File,
    media_type: String,
    immutable: bool,
}

struct Served {
    /// Weak: one validator for the page in every encoding.
    page_etag: String,
    assets: Vec<Asset>,
}

/// The console's paths, read once from the manifest the build wrote beside the files (a
/// unit test checks that it parses and names only files compiled in).
static SERVED: LazyLock<Served> = LazyLock::new(|| {
    let manifest: Manifest = serde_json::from_str(include_str!("../../../../web/dist/assets.json"))
        .expect("web/dist/assets.json is what web/build.mjs writes");
    Served {
        page_etag: format!("W/{}", manifest.page_etag),
        assets: manifest
            .assets
            .into_iter()
            .map(|e| Asset {
                file: FILES
                    .iter()
                    .find(|f| f.name == e.file)
                    .expect("web/dist/assets.json names only files compiled in"),
                path: e.path,
                media_type: e.media_type,
                immutable: e.immutable,
            })
            .collect(),
    }
});

/// The paths the console is served at, for routing.
pub(super) fn paths() -> impl Iterator<Item = &'static str> {
    SERVED
        .assets
        .iter()
        .map(|a| a.path.as_str())
        .chain(["/console.json"])
}

/// The encoding to answer with: brotli, else gzip, if `Accept-Encoding` takes it (a `q=0`
/// refuses), else none.
fn encoding(req: &HttpRequest) -> Option<&'static str> {
    let accepted: Vec<(String, bool)> = req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding, !refused)
        })
        .collect();
    ["br", "gzip"]
        .into_iter()
        .find(|coding| accepted.iter().any(|(c, ok)| c == coding && *ok))
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
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    // nosniff and HSTS come with every answer (http::guard).
    if req.path() == "/console.json" {
        return Ok(answer
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .json(Site { mqtt_url: mqtt }));
    }
    let asset = SERVED
        .assets
        .iter()
        .find(|a| a.path == req.path())
        .ok_or(ApiError::NotFound("no such file of the web console"))?;
    answer.insert_header((header::VARY, "Accept-Encoding"));
    if asset.immutable {
        // Its path names its content: a new build is a new path.
        answer.insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"));
    } else {
        // The page names the current build's paths: revalidated at each visit.
        answer
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::ETAG, SERVED.page_etag.as_str()));
        let unchanged = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',').any(|t| {
                    let t = t.trim();
                    t == "*"
                        || t.trim_start_matches("W/") == SERVED.page_etag.trim_start_matches("W/")
                })
            });
        if unchanged {
            return Ok(answer.status(StatusCode::NOT_MODIFIED).finish());
        }
    }
    let body = match encoding(&req) {
        Some("br") => {
            answer.insert_header((header::CONTENT_ENCODING, "br"));
            asset.file.brotli
        }
        Some(_) => {
            answer.insert_header((header::CONTENT_ENCODING, "gzip"));
            asset.file.gzip
        }
        None => asset.file.identity,
    };
    Ok(answer.content_type(asset.media_type.as_str()).body(body))
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
    fn the_manifest_serves_every_file_once_and_the_page_names_each_by_its_hash() {
        let page = std::str::from_utf8(FILES[0].identity).unwrap();
        for file in &FILES {
            let serving: Vec<&Asset> = SERVED
                .assets
                .iter()
                .filter(|a| a.file.name == file.name)
                .collect();
            assert_eq!(serving.len(), 1, "{}", file.name);
            let asset = serving[0];
            assert!(file.gzip.len() < file.identity.len(), "{}", file.name);
            assert!(file.brotli.len() <= file.gzip.len(), "{}", file.name);
            if file.name == "index.html" {
                assert_eq!((asset.path.as_str(), asset.immutable), ("/", false));
            } else {
                assert!(asset.immutable, "{}", file.name);
                assert!(
                    page.contains(&format!("=\"{}\"", asset.path)),
                    "{}",
                    asset.path
                );
            }
        }
        assert!(SERVED.page_etag.starts_with("W/\""), "{}", SERVED.page_etag);
    }

    #[test]
    fn the_encoding_is_the_best_one_the_browser_takes() {
        let pick = |value: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((header::ACCEPT_ENCODING, value))
                .to_http_request();
            encoding(&req)
        };
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("br"));
        assert_eq!(pick("gzip"), Some("gzip"));
        assert_eq!(pick("BR;q=0.5"), Some("br"));
        assert_eq!(pick("br;q=0, gzip;q=0.8"), Some("gzip"));
        assert_eq!(pick("br; q=0.0, gzip;q=0"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(pick(""), None);
        let none = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(encoding(&none), None);
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
