//! Where the server may send HTTP: the one place every outbound call goes through.
//!
//! A Web Push endpoint is chosen by a user, so it is hostile until shown otherwise: a
//! user who registers `https://127.0.0.1:15000/` or a name that resolves to a pod's
//! sidecar would have the server POST inside its own network. Push calls therefore
//! go only to `https` URLs that name a host (no IP literals), and every address that
//! host resolves to must be public. The check runs at registration, for a clear error,
//! and again when the call connects, inside the HTTP client's own resolver, so a name
//! that changes its answer after registration (DNS rebinding) cannot slip past.
//!
//! The webhook URL is the operator's own setting, so calls to it are exempt; they still
//! go out from here, by their own client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

/// No answer in this long is a failed call, retried later (PROTOCOL.md §8).
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long registration waits for DNS before leaving the verdict to connect time.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Registration lookups under way at once. Each holds a thread of the blocking pool
/// (getaddrinfo) for as long as the resolver takes, past our timeout: users registering
/// names with slow nameservers must not take the threads database reads run on. A
/// registration that finds none free is not checked then (it is when called).
static LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Which destinations a user-chosen URL may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `push.allow_local_endpoints`: any http(s) URL, for tests and local development.
    pub allow_local: bool,
}

/// Why a user-chosen URL is not called. The text names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the endpoint is not a URL")]
    NotUrl,
    #[error("the endpoint must be an https:// URL")]
    NotHttps,
    #[error("the endpoint must name a host, not an IP address")]
    IpLiteral,
    #[error(
        "the endpoint's host {0} resolves to a loopback, private, link-local, unique-local or multicast address"
    )]
    PrivateAddress(String),
}

/// Whether `ip` is an address on the public internet: not loopback, private,
/// link-local, unique-local, multicast, or any other range that never routes there.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (b & 0xc0) == 64) // shared address space (carrier NAT), RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, RFC 2544
        || a >= 240; // reserved
    !special
}

fn public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7] = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they carry;
    // local-use NAT64 (64:ff9b:1::/48, RFC 8215) is a network's own.
    if s0 == 0x64 && s1 == 0xff9b && [s2, s3, s4, s5] == [0; 4] {
        return public_v4(embedded(s6, s7));
    }
    if s0 == 0x64 && s1 == 0xff9b && s2 == 1 {
        return false;
    }
    if s0 == 0x2002 {
        return public_v4(embedded(s1, s2));
    }
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (s0 & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside sites)
        || (s0 == 0x2001 && s1 == 0x0db8) // documentation
        || (s0 == 0x0100 && [s1, s2, s3] == [0; 3]) // discard-only
        || [s0, s1, s2, s3, s4, s5] == [0; 6]; // IPv4-compatible (deprecated)
    !special
}

/// The rules a URL's text must meet, before any lookup.
fn check_url(url: &str, policy: Policy) -> Result<Url, Refusal> {
    // The URL standard drops tabs and newlines silently: what is stored must be what is called.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Refusal::NotUrl);
    }
    let url: Url = url.parse().map_err(|_| Refusal::NotUrl)?;
    if policy.allow_local {
        return match url.scheme() {
            "https" | "http" if url.host().is_some() => Ok(url),
            _ => Err(Refusal::NotHttps),
        };
    }
    if url.scheme() != "https" {
        return Err(Refusal::NotHttps);
    }
    match url.host() {
        Some(Host::Domain(_)) => Ok(url),
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => Err(Refusal::IpLiteral),
        None => Err(Refusal::NotUrl),
    }
}

/// `check_url`, then every address the host resolves to must be public. A name that
/// does not resolve now is let through: it is looked up again when called, and the
/// call is refused then if it has turned private.
pub async fn check_destination(url: &str, policy: Policy) -> Result<(), Refusal> {
    let url = check_url(url, policy)?;
    if policy.allow_local {
        return Ok(());
    }
    let Some(Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    // Every permit taken: lookups stuck on slow nameservers are under way, and this one
    // leaves its verdict to connect time rather than wait behind them.
    let Ok(permit) = LOOKUPS.try_acquire() else {
        return Ok(());
    };
    // The permit goes with the lookup, not with our wait: getaddrinfo holds its thread
    // until the resolver answers, past our timeout.
    let host = name.to_owned();
    let lookup = tokio::spawn(async move {
        let _permit = permit;
        tokio::net::lookup_host((host, port)).await
    });
    if let Ok(Ok(Ok(addresses))) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        refuse_private(name, addresses)?;
    }
    Ok(())
}

/// All of `addresses`, or a refusal naming `host` if any of them is not public: a name
/// with one private answer is not a public service.
fn refuse_private(
    host: &str,
    addresses: impl Iterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, Refusal> {
    let addresses: Vec<SocketAddr> = addresses.collect();
    if addresses.iter().any(|a| !is_public(a.ip())) {
        return Err(Refusal::PrivateAddress(host.to_owned()));
    }
    Ok(addresses)
}

/// The push client's resolver: the system's answer, refused when any of it is private.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let answer = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let addresses = refuse_private(&host, answer)?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// What became of a call.
#[derive(Debug)]
pub enum Failure {
    /// The destination is not allowed: calling again will not change that.
    Refused(Refusal),
    /// No answer, or the connection failed: worth another try.
    Failed(String),
}

/// The outbound HTTP clients, built once at start-up.
pub struct Egress {
    /// For destinations users chose (Web Push): public addresses only, no redirects (a
    /// redirect to an IP literal would never meet the resolver), no proxy (a proxy
    /// resolves names itself).
    public: reqwest::Client,
    /// For the operator's own webhook URL, wherever it points.
    operator: reqwest::Client,
    policy: Policy,
}

impl Egress {
    pub fn new(policy: Policy) -> Result<Egress, String> {
        // The process's TLS crypto; a second install (tests start several services) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = || {
            reqwest::Client::builder()
                .user_agent(concat!("sidechat/", env!("CARGO_PKG_VERSION")))
                .timeout(TIMEOUT)
        };
        let public = if policy.allow_local {
            base()
        } else {
            base()
                .dns_resolver(std::sync::Arc::new(PublicOnly))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
        };
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        Ok(Egress {
            public: build(public)?,
            operator: build(base())?,
            policy,
        })
    }

    /// Sends `request` to a destination a user chose, if the rules allow it.
    pub async fn to_public(&self, request: reqwest::Request) -> Result<reqwest::Response, Failure> {
        check_url(request.url().as_str(), self.policy).map_err(Failure::Refused)?;
        self.public
            .execute(request)
            .await
            .map_err(|e| match refusal_in(&e) {
                Some(refusal) => Failure::Refused(refusal),
                None => Failure::Failed(describe(&e)),
            })
    }

    /// A POST to the operator's webhook URL, wherever it points: the public-destination
    /// rule is for URLs users chose.
    pub fn post_to_operator(&self, url: Url) -> reqwest::RequestBuilder {
        self.operator.post(url)
    }
}

/// The resolver's refusal, if that is why `e` happened.
fn refusal_in(e: &reqwest::Error) -> Option<Refusal> {
    let mut cause = std::error::Error::source(e);
    while let Some(error) = cause {
        if let Some(refusal) = error.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        cause = error.source();
    }
    None
}

/// A client error without the URL (it may carry credentials), with its cause.
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{what}: {cause}"),
        None => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    const STRICT: Policy = Policy { allow_local: false };
    const LOCAL: Policy = Policy { allow_local: true };

    #[test]
    fn only_addresses_on_the_public_internet_are_public() {
        let private = [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "198.18.0.1",
            "192.0.2.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::808:808",
            "2002:a00:1::",
            "2002:7f00:1::",
            "100::1",
        ];
        for ip in private {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ];
        for ip in public {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn urls_must_be_https_and_name_a_host() {
        let cases = [
            ("https://fcm.googleapis.com/fcm/send/x", Ok(())),
            ("http://push.example/1", Err(Refusal::NotHttps)),
            ("ftp://push.example/1", Err(Refusal::NotHttps)),
            ("https://10.0.0.1/x", Err(Refusal::IpLiteral)),
            ("https://[::1]/x", Err(Refusal::IpLiteral)),
            // The URL standard reads these as IPv4 too.
            ("https://2130706433/x", Err(Refusal::IpLiteral)),
            ("https://0x7f.1/x", Err(Refusal::IpLiteral)),
            ("not a url", Err(Refusal::NotUrl)),
            ("https://push.example/a\tb", Err(Refusal::NotUrl)),
            ("https://push.example/a b", Err(Refusal::NotUrl)),
            ("", Err(Refusal::NotUrl)),
        ];
        for (url, expected) in cases {
            assert_eq!(check_url(url, STRICT).map(|_| ()), expected, "{url}");
        }
    }

    #[test]
    fn allow_local_takes_any_http_or_https_url() {
        assert!(check_url("http://127.0.0.1:9/push", LOCAL).is_ok());
        assert!(check_url("https://[::1]/push", LOCAL).is_ok());
        assert_eq!(
            check_url("ftp://127.0.0.1/", LOCAL).map(|_| ()),
            Err(Refusal::NotHttps)
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let refused = check_destination("https://localhost/push", STRICT).await;
        assert_eq!(refused, Err(Refusal::PrivateAddress("localhost".into())));
        assert_eq!(
            check_destination("https://localhost/push", LOCAL).await,
            Ok(())
        );
    }

    #[test]
    fn one_private_answer_refuses_the_name() {
        let mixed = ["8.8.8.8:443", "10.0.0.1:443"].map(|a| a.parse::<SocketAddr>().unwrap());
        assert!(refuse_private("mixed.example", mixed.into_iter()).is_err());
        let public = ["8.8.8.8:443"].map(|a| a.parse::<SocketAddr>().unwrap());
        assert_eq!(
            refuse_private("good.example", public.into_iter()).unwrap(),
            public
        );
    }

    #[tokio::test]
    async fn the_push_client_refuses_a_private_name_when_it_connects() {
        // Registration checks already passed (or the name changed since): the resolver
        // inside the client refuses on its own, before any connection is made.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let egress = Egress::new(STRICT).unwrap();
        let url: Url = format!("https://localhost:{port}/push").parse().unwrap();
        let request = reqwest::Request::new(reqwest::Method::POST, url);
        match egress.to_public(request).await {
            Err(Failure::Refused(Refusal::PrivateAddress(host))) => assert_eq!(host, "localhost"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A connection made would be waiting in the backlog by now.
        assert!(
            listener.accept().now_or_never().is_none(),
            "no connection reached the listener"
        );
    }

    #[tokio::test]
    async fn an_ip_literal_is_refused_before_any_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let egress = Egress::new(STRICT).unwrap();
        let url: Url = format!("https://127.0.0.1:{port}/push").parse().unwrap();
        let request = reqwest::Request::new(reqwest::Method::POST, url);
        assert!(matches!(
            egress.to_public(request).await,
            Err(Failure::Refused(Refusal::IpLiteral))
        ));
        // A connection made would be waiting in the backlog by now.
        assert!(
            listener.accept().now_or_never().is_none(),
            "no connection reached the listener"
        );
    }
}
