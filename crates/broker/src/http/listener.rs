//! The HTTP and HTTPS listeners' accept path: each accepted socket is admitted or refused by
//! `connections` first, then (on HTTPS) goes through its TLS handshake under
//! `http.header_timeout_secs`, then is served as HTTP/1.1 by actix-http running the app. The
//! admission comes before the handshake so that sockets that never finish one are held to
//! their address's share like any other (actix-web's own TLS listener runs its connect hook
//! only after the handshake), and the listener, not actix's accept loop, decides who waits.
//!
//! Uses actix-server, actix-http and tokio-rustls; the app and its middleware see a
//! connection only through the [`Connection`] mark in its extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Request};
use actix_server::Server;
use actix_service::{
    fn_factory, fn_service, map_config, IntoServiceFactory, Service, ServiceFactory,
};
use actix_web::dev::{AppConfig, ServiceResponse};
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use super::connections::{Admission, ConnectionCaps, Live, Ticket};
use crate::metrics;

/// How long an idle keep-alive connection is held between requests (actix-web's default).
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What a request learns of its connection, from its extensions.
pub(crate) struct Connection {
    /// The admitted connection's state; `None` when it is over its share and answered 429.
    pub live: Option<Arc<Live>>,
    /// Whether it came through TLS (the console is served on HTTPS only).
    pub secure: bool,
}

/// What an admitted or over-share connection holds until its socket closes.
enum Hold {
    Admitted(Ticket),
    OverShare { _answer: OwnedSemaphorePermit },
}

/// An accepted socket, plain or TLS, with what the listener decided about it: dropped (and so
/// given back) with the connection.
struct Conn {
    io: Either<TcpStream, TlsStream<TcpStream>>,
    hold: Hold,
}

impl Conn {
    fn mark(&self) -> Connection {
        Connection {
            live: match &self.hold {
                Hold::Admitted(ticket) => Some(ticket.live.clone()),
                Hold::OverShare { .. } => None,
            },
            secure: matches!(self.io, Either::Right(_)),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One listening socket: plain, or TLS with this acceptor.
pub(crate) struct Listener {
    pub socket: std::net::TcpListener,
    pub tls: Option<TlsAcceptor>,
}

impl Listener {
    /// Binds `addr` as actix-web would (address reuse, a backlog of 1,024).
    pub fn bind(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Listener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(Listener {
            socket: socket.into(),
            tls: tls.map(TlsAcceptor::from),
        })
    }
}

/// What every listener of one server shares.
pub(crate) struct Serving {
    /// Threads; each runs every listener.
    pub workers: usize,
    /// A TLS handshake, and a request's headers, must arrive within this.
    pub header_timeout: Duration,
    pub caps: Arc<ConnectionCaps>,
}

/// Runs `listeners` (plain and TLS) on `serving.workers` threads, each serving the app that
/// `app` builds, until stopped through the returned server's handle.
pub(crate) fn run<F, I, S, B>(
    listeners: Vec<Listener>,
    serving: Serving,
    app: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Clone + Send + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    S::Future: 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let Serving {
        workers,
        header_timeout,
        caps,
    } = serving;
    // Every connection the listener holds or is answering, so that actix's own cap, per
    // worker, never binds before ours.
    let most = caps.most_open();
    let mut builder = Server::build()
        .workers(workers)
        .max_concurrent_connections(most)
        .disable_signals()
        .shutdown_timeout(5);
    let shutdown = builder.graceful_shutdown_signal();
    for listener in listeners {
        let addr = listener.socket.local_addr()?;
        let (app, caps, shutdown) = (app.clone(), caps.clone(), shutdown.clone());
        let tls = listener.tls;
        let transport = if tls.is_some() { "https" } else { "http" };
        builder = builder.listen(format!("{transport}-{addr}"), listener.socket, move || {
            let shutdown = shutdown.clone();
            let http = HttpService::<Conn, _, _>::build()
                .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                .client_request_timeout(header_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .on_connect_ext(|conn: &Conn, extensions| {
                    extensions.insert(conn.mark());
                })
                .h1(map_config(app().into_factory(), |()| AppConfig::default()));
            let (caps, tls) = (caps.clone(), tls.clone());
            fn_factory(move || {
                let handler = http.new_service(());
                let (caps, tls) = (caps.clone(), tls.clone());
                async move {
                    let handler = Rc::new(handler.await?);
                    Ok::<_, ()>(fn_service(move |tcp: TcpStream| {
                        let (handler, caps, tls) = (handler.clone(), caps.clone(), tls.clone());
                        async move {
                            let Ok(peer) = tcp.peer_addr() else {
                                return Ok::<_, ()>(());
                            };
                            let hold = match caps.admit(peer.ip(), transport) {
                                Admission::Admitted(ticket) => Hold::Admitted(ticket),
                                Admission::OverShare(permit) => Hold::OverShare { _answer: permit },
                                Admission::Refused => return Ok(()),
                            };
                            let io = match &tls {
                                None => Either::Left(tcp),
                                Some(tls) => {
                                    match tokio::time::timeout(header_timeout, tls.accept(tcp)).await {
                                        Ok(Ok(stream)) => Either::Right(stream),
                                        Ok(Err(_)) => {
                                            metrics::connection(transport, "tls_handshake_failed");
                                            return Ok(());
                                        }
                                        Err(_) => {
                                            metrics::connection(transport, "handshake_timeout");
                                            return Ok(());
                                        }
                                    }
                                }
                            };
                            let conn = Conn { io, hold };
                            let live = conn.mark().live;
                            let served = handler.call((conn, Some(peer)));
                            match live {
                                Some(live) => tokio::select! {
                                    _ = served => {}
                                    () = live.evicted() => metrics::connection(transport, "evicted_idle"),
                                },
                                None => {
                                    let _ = served.await;
                                }
                            }
                            Ok(())
                        }
                    }))
                }
            })
        })?;
    }
    Ok(builder.run())
}
