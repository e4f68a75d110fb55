//! How a connection's bytes reach a session, whatever the listener: plain TCP, TLS,
//! WebSocket or WebSocket over TLS all end as one reader and one writer of MQTT bytes, so
//! the session code is written once and every limit applies on every transport.
//!
//! WebSocket follows RFC 6455 and the MQTT spec: the upgrade must offer the subprotocol
//! `mqtt` (answered, or browsers close the socket), only binary frames carry MQTT, packets
//! may span frames or share one, pings are answered. A browser's `Origin` must be allowed.
//! Uses tokio-rustls and async-tungstenite; knows nothing of sessions or actix. Wipes what
//! the TLS layer would keep of a connection's plaintext (`WipedReads`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use ws_stream_tungstenite::WsStream;

use crate::config;
use crate::metrics;
use crate::tls::Certificate;

/// The session's side of a connection.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Which listener a connection came through; the `transport` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }
}

/// Why a connection never reached MQTT; counted by label, logged at debug.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket upgrade refused or failed: {0}")]
    WebSocket(#[from] async_tungstenite::tungstenite::Error),
}

impl OpenError {
    pub fn label(&self) -> &'static str {
        match self {
            OpenError::Tls(_) => "tls_handshake_failed",
            OpenError::WebSocket(_) => "ws_upgrade_failed",
        }
    }
}

/// What the WebSocket upgrade checks.
#[derive(Debug, Clone)]
struct WsPolicy {
    kind: Kind,
    path: String,
    allowed_origins: Vec<String>,
    /// The names the same-host Origin rule trusts: those of the certificate being served.
    certificate: Arc<Certificate>,
    /// Largest WebSocket message accepted: an MQTT packet never needs more.
    max_message: usize,
}

/// A listener's way of turning an accepted socket into MQTT bytes.
pub struct Front {
    pub kind: Kind,
    tls: Option<TlsAcceptor>,
    ws: Option<WsPolicy>,
}

fn refuse(kind: Kind, status: StatusCode, why: &'static str) -> ErrorResponse {
    metrics::connection(kind.label(), why);
    let mut response = ErrorResponse::new(Some(why.replace('_', " ")));
    *response.status_mut() = status;
    response
}

impl WsPolicy {
    /// The upgrade checks: path, the `mqtt` subprotocol, a browser's Origin. The answer
    /// names `mqtt` as the chosen subprotocol.
    // The Result's shape is tungstenite's handshake `Callback`; the error response is built
    // once per refused upgrade, so its size does not matter.
    #[allow(clippy::result_large_err)]
    fn check(&self, req: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        if req.uri().path() != self.path {
            return Err(refuse(self.kind, StatusCode::NOT_FOUND, "ws_wrong_path"));
        }
        let offers_mqtt = req
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
        if !offers_mqtt {
            return Err(refuse(
                self.kind,
                StatusCode::BAD_REQUEST,
                "ws_no_mqtt_subprotocol",
            ));
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !self.origin_allowed(origin, req.headers().get(header::HOST)) {
                return Err(refuse(
                    self.kind,
                    StatusCode::FORBIDDEN,
                    "ws_origin_refused",
                ));
            }
        }
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("mqtt"),
        );
        Ok(response)
    }

    /// Allowed: a configured origin, or one on the host the client connected to, any port
    /// (the broker's own console on its HTTPS port), when that host is a name the broker's
    /// certificate covers. A page of a rebinding domain (one the attacker points at this
    /// broker's address) has an Origin on the same host as its request's `Host`, but the
    /// certificate does not cover that domain.
    fn origin_allowed(&self, origin: &str, host: Option<&HeaderValue>) -> bool {
        let origin = origin.trim_end_matches('/');
        if self
            .allowed_origins
            .iter()
            .any(|o| o.trim_end_matches('/') == origin)
        {
            return true;
        }
        let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
        host.and_then(|h| h.to_str().ok()).is_some_and(|host| {
            !authority.is_empty()
                && host_of(authority).eq_ignore_ascii_case(host_of(host))
                && self.certificate.vouches_for(host_of(host))
        })
    }

    #[allow(clippy::result_large_err)] // the callback below is `check`
    async fn upgrade<S>(&self, stream: S) -> Result<(Reader, Writer), OpenError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // tungstenite unmasks each frame in place in its read buffer and hands it out as a
        // slice of that buffer; a buffer sized to the frames it holds (none to start with) is
        // reclaimed, and zero-filled, by the read after the frame, so a CONNECT's login
        // secret does not stay there for the session's life (tests/memory.rs).
        let config = WebSocketConfig::default()
            .read_buffer_size(0)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message));
        let policy = self.clone();
        let ws = async_tungstenite::tokio::accept_hdr_async_with_config(
            stream,
            move |req: &Request, response: Response| policy.check(req, response),
            Some(config),
        )
        .await?;
        Ok(split(WsStream::new(ws)))
    }
}

/// The host of an `authority` (`host`, `host:port`, `[v6]:port`), without the port.
fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(authority, |(v6, _)| v6),
        None => authority
            .split_once(':')
            .map_or(authority, |(host, _)| host),
    }
}

/// A socket that zeroes the space it is asked to read into before each read. rustls reads
/// records into a buffer it keeps for the connection's life and decrypts them in place, so
/// the plaintext of a CONNECT (its login secret) would stay behind the next, shorter records
/// for as long as the session lasts; rustls hands that buffer's free part to each read, and
/// this wipes it there. (tungstenite zeroes its own read space; the MQTT codec wipes its
/// CONNECT.)
struct WipedReads<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for WipedReads<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        buf.initialize_unfilled().fill(0);
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WipedReads<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn split<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (Reader, Writer) {
    let (read, write) = tokio::io::split(stream);
    (Box::new(read), Box::new(write))
}

impl Front {
    pub fn tcp() -> Front {
        Front {
            kind: Kind::Tcp,
            tls: None,
            ws: None,
        }
    }

    pub fn tls(config: Arc<rustls::ServerConfig>) -> Front {
        Front {
            kind: Kind::Tls,
            tls: Some(TlsAcceptor::from(config)),
            ws: None,
        }
    }

    /// A WebSocket listener, over TLS when `tls` is given; `certificate` names the hosts of
    /// the Origins it allows without configuration.
    pub fn ws(
        ws: &config::Ws,
        max_packet: u32,
        tls: Option<Arc<rustls::ServerConfig>>,
        certificate: Arc<Certificate>,
    ) -> Front {
        let kind = if tls.is_some() { Kind::Wss } else { Kind::Ws };
        Front {
            kind,
            tls: tls.map(TlsAcceptor::from),
            ws: Some(WsPolicy {
                kind,
                path: ws.path.clone(),
                allowed_origins: ws.allowed_origins.clone(),
                certificate,
                max_message: max_packet as usize + 1024,
            }),
        }
    }

    /// Runs the TLS handshake and the WebSocket upgrade this listener needs. The caller
    /// bounds it with `mqtt.connect_timeout_secs`.
    pub async fn open(&self, tcp: TcpStream) -> Result<(Reader, Writer), OpenError> {
        match (&self.tls, &self.ws) {
            (None, None) => {
                let (read, write) = tcp.into_split();
                Ok((Box::new(read), Box::new(write)))
            }
            (Some(tls), None) => Ok(split(
                tls.accept(WipedReads(tcp)).await.map_err(OpenError::Tls)?,
            )),
            (None, Some(ws)) => ws.upgrade(tcp).await,
            (Some(tls), Some(ws)) => {
                ws.upgrade(tls.accept(WipedReads(tcp)).await.map_err(OpenError::Tls)?)
                    .await
            }
        }
    }
}
