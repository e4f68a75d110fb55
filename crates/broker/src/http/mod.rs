//! The JSON API, split by resource (users, me, instances; body checks beside them),
//! `/healthz`, `/metrics`, and the web console's files (HTTPS only). Request and response
//! bodies are sealrelay-wire's `api` types, the same ones the SDK uses. Every error is a 4xx/5xx with a body `{"error": code,
//! "message": …}`; no request body, secret or key is ever logged. `docs/http-api.md` is
//! the reference.

mod checks;
pub(crate) use checks::{id_param, since_param};
pub(crate) use me::{report, REPORT_LIMIT};
pub(crate) use users::INVITE_PREFIX;
mod connections;
mod console;
mod instances;
mod listener;
mod me;
mod users;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Service, ServiceRequest};
use actix_web::http::{header, ConnectionType, StatusCode};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::accounting::log::SessionLog;
use crate::auth::{AuthError, Authenticator};
use crate::config::Config;
use crate::directory::{Credentials, Directory, DirectoryError};
use crate::metrics;
use crate::mqtt::proxy::TrustedProxies;
use crate::rate::Limiter;
use crate::router::Router;
pub(crate) use connections::ConnectionCaps;
use listener::{Connection, Listener};
use sealrelay_wire::{b64, PrincipalKind};
use zeroize::Zeroizing;

pub struct ApiState {
    pub config: Arc<Config>,
    pub directory: Arc<Directory>,
    /// Closed sessions' metadata, for the operator.
    pub log: SessionLog,
    pub authenticator: Arc<Authenticator>,
    pub router: Arc<Router>,
    pub metrics: PrometheusHandle,
    /// Keys the fake salts returned for unknown names.
    pub prelogin_key: crate::datadir::KeyBytes,
    /// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// The bound port of the wss listener, if on: where the web console's MQTT link goes.
    pub wss_port: Option<u16>,
    /// The certificate the TLS listeners serve: the hosts the console's MQTT link may name.
    pub certificate: Arc<crate::tls::Certificate>,
    /// Counts registrations, prelogins and reset completions per address
    /// (`auth.registrations_per_ip_per_hour`, `prelogins_per_ip_per_minute`,
    /// `resets_per_ip_per_hour`).
    pub limiter: Arc<Limiter>,
    /// This node's link to the other nodes, in a cluster: `/readyz` asks whether it is up.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials: send Authorization: Basic base64(login:auth-secret)")]
    Unauthorized,
    #[error("too many failed logins; retry later")]
    RateLimited,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the keyring changed since you read it (stored version {current}): re-read it, merge and retry")]
    KeyringConflict { current: i64 },
    #[error("missing or wrong operator token: send Authorization: Bearer <the token in admin.token_file>")]
    NotOperator,
    #[error("this endpoint does not take that method; see docs/http-api.md")]
    MethodNotAllowed,
    #[error("the directory is unavailable; retry later")]
    Unavailable,
    /// `/readyz`: what this node cannot reach now, so a load balancer sends clients elsewhere.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    #[error("the broker could not write to its database (its disk is full or refuses writes): nothing was changed; retry later")]
    StorageFull,
    #[error("the request body did not arrive within {0} s; send it whole and at once")]
    BodyTimeout(u64),
    /// A per-address rate limit: the message says which and when to retry.
    #[error("{0}")]
    TooMany(&'static str),
    #[error("request body exceeds {0} bytes, the most this endpoint takes")]
    TooLarge(usize),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::RateLimited => "rate_limited",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::KeyringConflict { .. } => "keyring_conflict",
            ApiError::NotOperator => "not_operator",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable | ApiError::NotReady(_) => "unavailable",
            ApiError::StorageFull => "storage_full",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::TooMany(_) => "rate_limited",
            ApiError::TooLarge(_) => "payload_too_large",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::KeyringConflict { .. } => StatusCode::CONFLICT,
            ApiError::NotOperator => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"sealrelay\""));
        }
        response.json(sealrelay_wire::api::ErrorBody {
            error: self.code().into(),
            message: self.to_string(),
        })
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            DirectoryError::KeyringVersion { current } => ApiError::KeyringConflict { current },
            DirectoryError::InviteRefused => ApiError::Forbidden(
                "that invite code is not valid (wrong, already used or expired): ask the operator for a new one",
            ),
            DirectoryError::Database(sqlx::Error::Database(e))
                // SQLITE_FULL, and SQLITE_IOERR_WRITE (what a file-size limit gives).
                if matches!(e.code().as_deref(), Some("13" | "778")) =>
            {
                tracing::error!(error = %e, "the directory database cannot be written");
                metrics::storage_full();
                ApiError::StorageFull
            }
            other => {
                tracing::error!(error = %other, "directory error in HTTP request");
                ApiError::Unavailable
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Denied => ApiError::Unauthorized,
            AuthError::RateLimited => ApiError::RateLimited,
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// An answered request: counted, and one access line (the route's fixed name, never its
/// path: an id in a path is a principal's).
fn served(route: &str, status: u16, started: Option<std::time::Instant>) {
    metrics::http_request(route, status);
    let seconds = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    metrics::http_seconds(route, seconds);
    let ms = seconds * 1000.0;
    tracing::info!(route, status, ms, "http request");
}

/// The client's address: the TCP peer, or, when that peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not itself a trusted proxy (HTTP load
/// balancers speak that rather than the PROXY protocol). Per-address login budgets count it.
pub(crate) fn client_ip(req: &HttpRequest, state: &ApiState) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    if !state.trusted_proxies.trusts(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !state.trusted_proxies.trusts(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// The credentials of an `Authorization: <scheme> <credentials>` header, as `detach_head`
/// kept them: a copy wiped when dropped.
pub(crate) fn authorization(req: &HttpRequest, scheme: &str) -> Option<Zeroizing<String>> {
    let extensions = req.extensions();
    let Presented(value) = extensions.get::<Presented>()?;
    let credentials = value.strip_prefix(scheme)?.strip_prefix(' ')?;
    Some(Zeroizing::new(credentials.to_owned()))
}

/// The `Authorization` header's value, taken out of the request's head by `detach_head`.
/// Kept in the request's extensions, which actix clears (dropping, so wiping, this) when the
/// request ends.
struct Presented(Zeroizing<String>);

/// Unties a request that may carry a secret from the buffer its connection read it into.
/// actix parses a request's headers and path as slices of that buffer, and keeps the head of
/// each worker's last request for reuse after the request ends: the raw bytes of the request
/// (a Basic or Bearer header, and a body that arrived with the head) would stay in memory
/// until that worker's next request. So the head gets copies of its headers and path, the
/// `Authorization` value moves to the request's extensions, and once the connection closes
/// (`may_carry_secret`) nothing holds the buffer: freed, it is wiped (`memory`).
fn detach_head(req: &mut ServiceRequest) {
    let head = req.head_mut();
    let mut presented = None;
    for (name, value) in std::mem::take(&mut head.headers) {
        if name == header::AUTHORIZATION {
            presented = value.to_str().ok().map(|v| Zeroizing::new(v.to_owned()));
        } else if let Ok(copy) = header::HeaderValue::from_bytes(value.as_bytes()) {
            head.headers.append(name, copy);
        }
    }
    let uri: actix_web::http::Uri = head.uri.to_string().parse().unwrap_or_default();
    head.uri = uri.clone();
    req.match_info_mut().get_mut().update(&uri);
    if let Some(value) = presented {
        req.extensions_mut().insert(Presented(value));
    }
}

/// Checks `Authorization: Basic base64(login:secret)` like an MQTT CONNECT.
async fn caller(req: &HttpRequest, state: &ApiState) -> Result<Credentials> {
    let value = authorization(req, "Basic").ok_or(ApiError::Unauthorized)?;
    let decoded = zeroize::Zeroizing::new(b64::decode(value.trim()).ok_or(ApiError::Unauthorized)?);
    let text = std::str::from_utf8(&decoded).map_err(|_| ApiError::Unauthorized)?;
    let (login, secret) = text.split_once(':').ok_or(ApiError::Unauthorized)?;
    Ok(state
        .authenticator
        .authenticate(&state.directory, client_ip(req, state), login, secret)?)
}

async fn caller_user(req: &HttpRequest, state: &ApiState) -> Result<Credentials> {
    let credentials = caller(req, state).await?;
    if credentials.kind != PrincipalKind::User {
        return Err(ApiError::Forbidden("only a user may do this"));
    }
    Ok(credentials)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Whether this node can serve clients now: its directory answers and, in a cluster, its
/// NATS link is up. Unlike `/healthz` (the process runs: restart it if not), a failure here
/// says "send clients elsewhere for now" and clears by itself.
async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse> {
    if !state.directory.answers(Duration::from_secs(2)).await {
        return Err(ApiError::NotReady(
            "the directory database did not answer within 2 s: check the SQLite file at directory.database, or the PostgreSQL server at directory.url",
        ));
    }
    let cluster = match &state.cluster {
        None => "off",
        Some(cluster) if cluster.linked() => "linked",
        Some(_) => {
            return Err(ApiError::NotReady(
                "the link to NATS (cluster.nats_url) is down, so envelopes to sessions on other nodes cannot pass; the node reconnects by itself",
            ))
        }
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "directory": "ok",
        "cluster": cluster,
    })))
}

async fn metrics_page(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::render(&state.metrics))
}

/// A JSON request body of type `T`. actix reads it as JSON first (size limit, content type,
/// syntax: [`json_error`]); then it is mapped onto `T` tracking the path, so a refusal names
/// the field — and never the value sent, which may be a secret.
pub(crate) struct Body<T>(pub T);

impl<T> Body<T> {
    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Body<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future =
        futures_util::future::LocalBoxFuture<'static, std::result::Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        // actix times out slow headers, not slow bodies: a body trickling in (or never
        // sent after its Content-Length) would hold the connection and its descriptor for ever.
        let limit = req
            .app_data::<web::Data<ApiState>>()
            .map_or(10, |state| state.config.http.body_timeout_secs);
        Box::pin(async move {
            let value = tokio::time::timeout(std::time::Duration::from_secs(limit), json)
                .await
                .map_err(|_| ApiError::BodyTimeout(limit))??
                .into_inner();
            serde_path_to_error::deserialize(value)
                .map(Body)
                .map_err(|e| ApiError::BadRequest(field_error(&e)).into())
        })
    }
}

/// "field `kdf.salt` has the wrong type or format", "missing field `name`": the path and
/// the kind of problem, without serde's description of the value.
fn field_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner().to_string();
    let path = e.path().to_string();
    let detail = if inner.starts_with("missing field") {
        let field = inner.split('`').nth(1).unwrap_or("?");
        match path.as_str() {
            "." => format!("field `{field}` is missing"),
            at => format!("field `{at}.{field}` is missing"),
        }
    } else {
        format!("field `{path}` has the wrong type or format")
    };
    format!("request body does not match this endpoint: {detail}")
}

/// Names the problem, never the value sent (it may be a secret).
pub(crate) fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let message = match &err {
        J::Deserialize(e) => format!(
            "request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
        J::ContentType => "send Content-Type: application/json".to_owned(),
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => {
            return ApiError::TooLarge(*limit).into();
        }
        _ => "request body could not be read".to_owned(),
    };
    ApiError::BadRequest(message).into()
}

pub(crate) async fn method_not_allowed() -> Result<HttpResponse> {
    Err(ApiError::MethodNotAllowed)
}

pub(crate) async fn not_found() -> Result<HttpResponse> {
    Err(ApiError::NotFound("no such endpoint; see docs/http-api.md"))
}

/// The largest JSON body of each kind of endpoint: a name and a secret or two; a password
/// wrap or a token (a wrapped key is at most 1 KiB); an enrolment or a keyring (128 KiB,
/// 171 KiB as base64). A flood of oversized bodies is refused (413) at the smallest bound
/// that fits the endpoint.
const SMALL_BODY: usize = 4 * 1024;
const WRAP_BODY: usize = 16 * 1024;
const KEYRING_BODY: usize = 256 * 1024;

/// The resource at `path`, named `name`: the name is its `route` label in the metrics and
/// the access log, given where the route is registered so no route goes unlabelled or
/// mislabelled (and never a path, which could hold an id). Each path is one resource, so a
/// wrong method gets our JSON 405, not an empty one.
pub(crate) fn resource(path: &str, name: &str) -> actix_web::Resource {
    web::resource(path.to_owned())
        .name(name)
        .default_service(web::to(method_not_allowed))
}

/// Headers on every answer, of the API, the operator API and the console alike: no cache or
/// proxy keeps an answer (wrapped keys, ids, sessions) unless its handler said how (the
/// console's files), no content sniffing, and over TLS a year of HSTS.
fn guard(headers: &mut actix_web::http::header::HeaderMap, secure: bool) {
    use actix_web::http::header::{self, HeaderValue};
    let mut set = |name, value| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CACHE_CONTROL, "no-store");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if secure {
        set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
}

/// The `route` label of a request: its resource's name, `unmatched` when none matched.
fn route_of(req: &HttpRequest) -> String {
    req.match_name().unwrap_or("unmatched").to_owned()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let limited = |path: &str, name: &str, limit: usize| {
        resource(path, name).app_data(
            web::JsonConfig::default()
                .limit(limit)
                .error_handler(json_error),
        )
    };
    cfg.service(resource("/healthz", "healthz").route(web::get().to(healthz)))
        .service(resource("/readyz", "readyz").route(web::get().to(readyz)))
        .service(resource("/metrics", "metrics").route(web::get().to(metrics_page)))
        .service(
            limited("/v1/prelogin", "prelogin", SMALL_BODY).route(web::post().to(users::prelogin)),
        )
        .service(limited("/v1/users", "users", WRAP_BODY).route(web::post().to(users::register)))
        .service(
            limited("/v1/users/reset", "reset", WRAP_BODY)
                .route(web::post().to(users::complete_reset)),
        )
        .service(
            limited("/v1/prelogin/previous", "prelogin_previous", SMALL_BODY)
                .route(web::post().to(users::prelogin_previous)),
        )
        .service(
            limited("/v1/users/previous", "previous", SMALL_BODY)
                .route(web::post().to(users::previous_wrap)),
        )
        .service(
            limited("/v1/users/rollback", "rollback", SMALL_BODY)
                .route(web::post().to(users::roll_back)),
        )
        .service(
            limited("/v1/me/key-proof", "key_proof", SMALL_BODY)
                .route(web::put().to(me::put_key_proof)),
        )
        .service(
            resource("/v1/me", "me")
                .route(web::get().to(me::me))
                .route(web::delete().to(me::delete_account)),
        )
        .service(
            limited("/v1/me/password", "password", WRAP_BODY)
                .route(web::post().to(me::change_password)),
        )
        .service(
            limited("/v1/me/keyring", "keyring", KEYRING_BODY)
                .route(web::put().to(me::put_keyring)),
        )
        .service(resource("/v1/me/activity", "activity").route(web::get().to(me::activity)))
        .service(
            limited("/v1/instances", "instances", KEYRING_BODY)
                .route(web::post().to(instances::add_instance))
                .route(web::get().to(instances::list_instances)),
        )
        .service(
            resource("/v1/instances/{id}", "instance")
                .route(web::delete().to(instances::remove_instance)),
        )
        .service(
            limited("/v1/instances/{id}/token", "instance_token", WRAP_BODY)
                .route(web::post().to(instances::rotate_token)),
        )
        .service(
            limited(
                "/v1/instances/{id}/reenrol",
                "instance_reenrol",
                KEYRING_BODY,
            )
            .route(web::post().to(instances::reenrol_instance)),
        )
        .service(
            resource("/v1/principals/{id}/key", "principal_key")
                .route(web::get().to(instances::peer_key)),
        );
    for path in console::paths() {
        cfg.service(resource(path, "console").route(web::get().to(console::serve)));
    }
    cfg.default_service(web::to(not_found));
}

/// Binds the API on `http.listen`, and on `https` (address and TLS configuration) if
/// given; the returned server runs until stopped through its handle.
pub fn bind(
    state: Arc<ApiState>,
    https: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr, Option<SocketAddr>)> {
    let http = &state.config.http;
    let capacity = Capacity {
        workers: http.workers,
        header_timeout: Duration::from_secs(http.header_timeout_secs),
        caps: ConnectionCaps::new(
            http.max_connections,
            http.max_connections_per_ip,
            state.config.server.address_block(),
            state.trusted_proxies.clone(),
        ),
    };
    let (server, addrs) = bind_app(http.listen, https, capacity, state, configure)?;
    Ok((server, addrs[0], addrs.get(1).copied()))
}

/// Whether a request may carry a secret: credentials, or a body (registration, a reset
/// code, a new wrap's login secret). Its connection is closed after the answer, because
/// actix keeps a connection's read buffer (and rustls its receive buffer) for the next
/// request, with this one's bytes still in it; closing frees both, and the allocator wipes
/// what it frees (`memory`). Costs a new connection per such request; reads keep theirs.
fn may_carry_secret(head: &actix_web::dev::RequestHead) -> bool {
    head.headers().contains_key(header::AUTHORIZATION)
        || !matches!(
            head.method,
            actix_web::http::Method::GET | actix_web::http::Method::HEAD
        )
}

/// What an HTTP server may hold, and for how long it waits on a request's headers.
pub(crate) struct Capacity {
    /// Threads; 0 means one per core.
    pub workers: usize,
    /// A request's headers must arrive within this of the connection (or of the previous
    /// response); past it actix answers 408 and closes.
    pub header_timeout: Duration,
    /// Who may hold the server's connections.
    pub caps: ConnectionCaps,
}

/// An HTTP server on `listen` (and over TLS on `https`) whose app is `configure` over
/// `state`, with per-route request metrics, holding what `capacity` allows. Shared by the
/// public API and the operator API. Returns the bound addresses, plain first.
pub(crate) fn bind_app<T: Send + Sync + 'static>(
    listen: SocketAddr,
    https: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    capacity: Capacity,
    state: Arc<T>,
    configure: fn(&mut web::ServiceConfig),
) -> std::io::Result<(actix_web::dev::Server, Vec<SocketAddr>)> {
    let Capacity {
        workers,
        header_timeout,
        caps,
    } = capacity;
    let mut listeners = vec![Listener::bind(listen, None)?];
    if let Some((addr, tls)) = https {
        listeners.push(Listener::bind(addr, Some(tls))?);
    }
    let addrs = listeners
        .iter()
        .map(|l| l.socket.local_addr())
        .collect::<std::io::Result<_>>()?;
    let serving = listener::Serving {
        workers: Config::worker_count(workers),
        header_timeout,
        caps: Arc::new(caps),
    };
    let data = web::Data::from(state);
    let app = move || {
        App::new()
            .app_data(data.clone())
            .wrap_fn(|mut req, srv| {
                let connection = req.conn_data::<Connection>();
                let Some(live) = connection.and_then(|c| c.live.clone()) else {
                    let refusal = ApiError::TooMany(
                        "this address holds its whole share of API connections (http.max_connections_per_ip): close some, then retry",
                    );
                    let mut response = refusal.error_response();
                    response.head_mut().set_connection_type(ConnectionType::Close);
                    let secure = connection.is_some_and(|c| c.secure);
                    guard(response.headers_mut(), secure);
                    served(&route_of(req.request()), 429, None);
                    return futures_util::future::ready(Ok(req.into_response(response))).boxed_local();
                };
                let secure = connection.is_some_and(|c| c.secure);
                let serving = live.serving();
                let started = std::time::Instant::now();
                let secret = may_carry_secret(req.head());
                if secret {
                    detach_head(&mut req);
                }
                srv.call(req).map(move |mut res| {
                    drop(serving);
                    // The route is known only after routing, so it is read off the response.
                    if let Ok(res) = &mut res {
                        let route = route_of(res.request());
                        served(&route, res.status().as_u16(), Some(started));
                        guard(res.headers_mut(), secure);
                        if secret {
                            res.response_mut()
                                .head_mut()
                                .set_connection_type(ConnectionType::Close);
                        }
                    }
                    res
                })
                .boxed_local()
            })
            .configure(configure)
    };
    Ok((listener::run(listeners, serving, app)?, addrs))
}
