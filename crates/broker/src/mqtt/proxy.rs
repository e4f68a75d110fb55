//! The PROXY protocol (v1 text and v2 binary, as HAProxy and cloud load balancers send it),
//! on listeners with `proxy_protocol = true`, honoured only from `server.trusted_proxies`:
//! the header names the real client, so per-address limits, the failed-login budget,
//! accounting and logs see it rather than the proxy. Parsing is the `ppp` crate's; this
//! module reads exactly the header's bytes so the MQTT (or TLS) bytes behind it stay in the
//! socket.

use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature (12 bytes) and v1's start.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX_LEN: usize = 107;
/// v2 headers carry TLVs; anything beyond this is not a header we need.
const V2_MAX_PAYLOAD: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("a trusted proxy sent no valid PROXY protocol header")]
    Invalid,
}

/// Addresses whose PROXY headers are believed: single IPs or CIDR blocks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `["10.0.0.5", "192.168.0.0/16", "::1"]`; an entry that is neither is named.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|entry| {
                let (ip, bits) = entry.split_once('/').unwrap_or((entry, ""));
                let ip: IpAddr = ip
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{entry}` is not an IP address or CIDR block"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits =
                    match bits {
                        "" => max,
                        b => b.parse().ok().filter(|b| *b <= max).ok_or_else(|| {
                            format!("`{entry}`: the prefix length must be 0..={max}")
                        })?,
                    };
                Ok((ip, bits))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|(net, bits)| match (net, peer) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(peer) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(peer)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(peer) & mask
            }
            _ => false,
        })
    }
}

/// Reads one PROXY header from `stream` and returns the client address it names (`None`
/// for a proxy's own health check: v1 UNKNOWN, v2 LOCAL or a Unix socket).
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut header = vec![0u8; 5];
    stream.read_exact(&mut header).await?;
    if header[..] == V2_SIGNATURE[..5] {
        // Signature, version/command, family, then the payload length.
        header.resize(16, 0);
        stream.read_exact(&mut header[5..]).await?;
        if header[..12] != V2_SIGNATURE[..] {
            return Err(ProxyError::Invalid);
        }
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if len > V2_MAX_PAYLOAD {
            return Err(ProxyError::Invalid);
        }
        header.resize(16 + len, 0);
        stream.read_exact(&mut header[16..]).await?;
    } else if header == b"PROXY" {
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX_LEN {
                return Err(ProxyError::Invalid);
            }
            header.push(stream.read_u8().await?);
        }
    } else {
        return Err(ProxyError::Invalid);
    }
    match ppp::HeaderResult::parse(&header) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Unknown => None,
        }),
        // A LOCAL header is the proxy speaking for itself (a health check): whatever
        // addresses it carries name no client (PROXY protocol spec §2.2), so the connection's
        // own address stands.
        ppp::HeaderResult::V2(Ok(h)) if h.command == ppp::v2::Command::Local => Ok(None),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match h.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v2::Addresses::IPv6(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            _ => None,
        }),
        _ => Err(ProxyError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_match_addresses_and_blocks() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into(), "::1".into()])
            .unwrap();
        assert!(t.trusts("10.1.2.3".parse().unwrap()));
        assert!(t.trusts("192.0.2.7".parse().unwrap()));
        assert!(!t.trusts("192.0.2.8".parse().unwrap()));
        assert!(t.trusts("::1".parse().unwrap()));
        assert!(!t.trusts("11.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
        assert!(TrustedProxies::parse(&["0.0.0.0/0".into()])
            .unwrap()
            .trusts("8.8.8.8".parse().unwrap()));
    }
}
