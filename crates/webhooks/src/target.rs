//! Where webhooks may be sent: validated URLs and the address guard.
//!
//! A webhook URL is chosen by a user, so by default the server must not be
//! usable to reach its own loopback interface, the private network it runs in
//! or a cloud metadata service. The rules are checked twice:
//!
//! - when an endpoint is saved ([`check_destination`]), to give a clear error
//!   early;
//! - at every connection (`safe_connector`), against the very addresses the
//!   socket connects to. This is the check that matters: a DNS answer can
//!   change between saving and sending, and one name can resolve to a public
//!   and a private address at once, so the guard resolves the name itself,
//!   refuses if *any* answer is forbidden and connects only to the answers it
//!   checked.
//!
//! Forbidden ranges are written as tables of CIDR blocks in the order of
//! precedence, so that each line can be compared with the IANA registries.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;
use url::{Host, Position, Url};

/// Whether webhooks may go to non-public addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Only public unicast addresses: the default for a server on a network.
    PublicOnly,
    /// Anything, including loopback and private ranges: for development and
    /// tests (`--allow-private-targets`).
    AllowPrivate,
}

const LOOPBACK: &str = "a loopback address";
const PRIVATE: &str = "a private address";
const LINK_LOCAL: &str = "a link-local address";
const UNIQUE_LOCAL: &str = "a unique-local address";
const SITE_LOCAL: &str = "a site-local address";
const MULTICAST: &str = "a multicast address";
const BROADCAST: &str = "a broadcast address";
const UNSPECIFIED: &str = "an unspecified address";
const SHARED: &str = "a shared (CGNAT) address";
const RESERVED: &str = "a reserved address";
const DOCUMENTATION: &str = "a documentation address";
const BENCHMARKING: &str = "a benchmarking address";

/// IPv4 blocks that are not public unicast, most specific first.
const FORBIDDEN_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 32, UNSPECIFIED),
    (Ipv4Addr::new(0, 0, 0, 0), 8, RESERVED), // "this network"; Linux routes it to the host itself
    (Ipv4Addr::new(10, 0, 0, 0), 8, PRIVATE),
    (Ipv4Addr::new(100, 64, 0, 0), 10, SHARED),
    (Ipv4Addr::new(127, 0, 0, 0), 8, LOOPBACK),
    (Ipv4Addr::new(169, 254, 0, 0), 16, LINK_LOCAL), // includes cloud metadata, 169.254.169.254
    (Ipv4Addr::new(172, 16, 0, 0), 12, PRIVATE),
    (Ipv4Addr::new(192, 0, 0, 0), 24, RESERVED), // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24, DOCUMENTATION),
    (Ipv4Addr::new(192, 88, 99, 0), 24, RESERVED), // deprecated 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16, PRIVATE),
    (Ipv4Addr::new(198, 18, 0, 0), 15, BENCHMARKING),
    (Ipv4Addr::new(198, 51, 100, 0), 24, DOCUMENTATION),
    (Ipv4Addr::new(203, 0, 113, 0), 24, DOCUMENTATION),
    (Ipv4Addr::new(224, 0, 0, 0), 4, MULTICAST),
    (Ipv4Addr::new(255, 255, 255, 255), 32, BROADCAST),
    (Ipv4Addr::new(240, 0, 0, 0), 4, RESERVED),
];

/// IPv6 blocks that are not public unicast, most specific first. Forms that
/// embed an IPv4 address are judged by that address before this table.
const FORBIDDEN_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, UNSPECIFIED),
    (Ipv6Addr::LOCALHOST, 128, LOOPBACK),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, RESERVED), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, RESERVED),     // discard-only
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, DOCUMENTATION),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, RESERVED), // IETF protocol assignments, Teredo
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, DOCUMENTATION),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, UNIQUE_LOCAL),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, LINK_LOCAL),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, SITE_LOCAL),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, MULTICAST),
];

/// Why `ip` may not receive webhooks under [`AddressPolicy::PublicOnly`],
/// or `None` for a public unicast address.
///
/// IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4
/// `2002:aabb:ccdd::`) are judged by the IPv4 address, since that is where
/// the packets end up.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4_reason(v4),
        IpAddr::V6(v6) => forbidden_v6_reason(v6),
    }
}

fn forbidden_v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    FORBIDDEN_V4
        .iter()
        .find(|(net, len, _)| prefix_matches_v4(bits, u32::from(*net), *len))
        .map(|(_, _, reason)| *reason)
}

fn forbidden_v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    // `::` and `::1` look IPv4-compatible but are not, so they go first.
    if ip.is_unspecified() || ip.is_loopback() {
        return forbidden_in_v6_table(ip);
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return forbidden_v4_reason(v4);
    }
    if let Some(reason) = forbidden_in_v6_table(ip) {
        return Some(reason);
    }
    // Only 2000::/3 is allocated for global unicast; the rest is reserved.
    let global_unicast = prefix_matches_v6(u128::from(ip), 0x2000 << 112, 3);
    (!global_unicast).then_some(RESERVED)
}

fn forbidden_in_v6_table(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    FORBIDDEN_V6
        .iter()
        .find(|(net, len, _)| prefix_matches_v6(bits, u128::from(*net), *len))
        .map(|(_, _, reason)| *reason)
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms
/// that carry one.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    if prefix_matches_v6(bits, 0xffff << 32, 96) || prefix_matches_v6(bits, 0, 96) {
        // IPv4-mapped ::ffff:a.b.c.d and the deprecated IPv4-compatible ::a.b.c.d.
        Some(low32)
    } else if prefix_matches_v6(bits, 0x0064_ff9b << 96, 96) {
        // NAT64 well-known prefix (RFC 6052).
        Some(low32)
    } else if prefix_matches_v6(bits, 0x2002 << 112, 16) {
        // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 is the site behind a.b.c.d.
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

fn prefix_matches_v4(addr: u32, net: u32, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    addr & mask == net & mask
}

fn prefix_matches_v6(addr: u128, net: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    addr & mask == net & mask
}

/// Whether a host name means this machine without asking DNS: `localhost`
/// and, per RFC 6761, any name under `.localhost`, in any case, with or
/// without the trailing root dot.
fn is_localhost_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The longest URL accepted, in bytes.
const MAX_URL_BYTES: usize = 2048;

/// A webhook destination that passed [`TargetUrl::parse`]: an absolute
/// http(s) URL with a host, no credentials and at most 2048 bytes, in the
/// normalised form the `url` crate gives it (lowercase host, IPv4 written as
/// four decimal numbers, so `http://2130706433/` reads `http://127.0.0.1/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetUrl {
    url: Url,
    /// The request target, checked at parse time so sending cannot fail on it.
    uri: Uri,
}

/// Why a string is not an acceptable webhook URL. Messages complete the
/// sentence "The URL …".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Relative, or a scheme other than http and https.
    #[error("must be an absolute http:// or https:// URL")]
    NotHttp,
    /// Longer than 2048 bytes, before or after normalisation.
    #[error("must be at most {MAX_URL_BYTES} bytes")]
    TooLong,
    /// No host, as in `http:///`.
    #[error("must contain a host name or address")]
    NoHost,
    /// `user:password@` in the authority.
    #[error("must not contain a user name or password")]
    Credentials,
    /// Not a URL at all, with the reason from the parser.
    #[error("is not a valid URL ({0})")]
    Malformed(url::ParseError),
    /// Parsed as a URL but cannot be written as an HTTP request target.
    #[error("contains characters that cannot be sent in an HTTP request")]
    NotSendable,
}

impl TargetUrl {
    /// Validates `s` as a webhook destination.
    pub fn parse(s: &str) -> Result<TargetUrl, UrlError> {
        // Checked before parsing too, so an oversized input costs nothing.
        if s.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(s).map_err(|err| match err {
            url::ParseError::RelativeUrlWithoutBase => UrlError::NotHttp,
            url::ParseError::EmptyHost => UrlError::NoHost,
            other => UrlError::Malformed(other),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::NotHttp);
        }
        if url.host().is_none() {
            return Err(UrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        // Normalisation percent-encodes, which can lengthen the URL.
        if url.as_str().len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        // A fragment is never sent, so it is left out of the request target.
        let uri = url[..Position::AfterQuery].parse::<Uri>().map_err(|_| UrlError::NotSendable)?;
        Ok(TargetUrl { url, uri })
    }

    /// The normalised URL.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// Whether this is an unencrypted `http://` URL, which is accepted with a
    /// warning.
    pub fn is_plain_http(&self) -> bool {
        self.url.scheme() == "http"
    }

    /// The request target for hyper.
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    fn host(&self) -> Host<&str> {
        // `parse` refused URLs without a host.
        self.url.host().unwrap_or(Host::Domain(""))
    }

    fn port(&self) -> u16 {
        // http and https always have a known default port.
        self.url.port_or_known_default().unwrap_or(80)
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination refused by [`AddressPolicy::PublicOnly`]. It displays as
/// `blocked: 10.0.0.5 is a private address`, words that go to the user as
/// they are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("blocked: {subject} is {reason}")]
pub struct BlockedError {
    subject: String,
    reason: &'static str,
}

impl BlockedError {
    /// The address, or the name, that was refused.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Why, as in "a private address".
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

fn check_ip(ip: IpAddr) -> Result<(), BlockedError> {
    match forbidden_reason(ip) {
        Some(reason) => Err(BlockedError { subject: ip.to_string(), reason }),
        None => Ok(()),
    }
}

fn check_name(name: &str) -> Result<(), BlockedError> {
    if is_localhost_name(name) {
        return Err(BlockedError { subject: name.strip_suffix('.').unwrap_or(name).to_owned(), reason: LOOPBACK });
    }
    Ok(())
}

/// How long saving an endpoint waits for DNS before giving the name the
/// benefit of the doubt.
const SAVE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a destination when an endpoint is saved.
///
/// Under [`AddressPolicy::PublicOnly`] an address is checked as it is, the
/// name `localhost` is refused without asking DNS, and any other name is
/// resolved and refused if any of its addresses is forbidden.
///
/// A name that does not resolve (or not within 5 seconds) is *not* an error
/// here: the receiver may not be in DNS yet, and every attempt checks the
/// addresses again when it connects, so nothing is lost by accepting it.
pub async fn check_destination(url: &TargetUrl, policy: AddressPolicy) -> Result<(), BlockedError> {
    if policy == AddressPolicy::AllowPrivate {
        return Ok(());
    }
    match url.host() {
        Host::Ipv4(ip) => check_ip(ip.into()),
        Host::Ipv6(ip) => check_ip(ip.into()),
        Host::Domain(name) => {
            check_name(name)?;
            let lookup = tokio::net::lookup_host((name, url.port()));
            let resolved = match tokio::time::timeout(SAVE_RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => addrs.map(|addr| addr.ip()).collect(),
                Ok(Err(_)) | Err(_) => Vec::new(),
            };
            check_all(resolved)
        }
    }
}

fn check_all(addresses: impl IntoIterator<Item = IpAddr>) -> Result<(), BlockedError> {
    addresses.into_iter().try_for_each(check_ip)
}

/// Why the guarded connector did not open a TCP connection. Its messages are
/// the words the delivery log shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConnectFailure {
    #[error(transparent)]
    Blocked(#[from] BlockedError),
    #[error("could not resolve host {0}")]
    Unresolvable(String),
    #[error("connection refused")]
    Refused,
    #[error("connection reset")]
    Reset,
    #[error("connect timed out")]
    TimedOut,
    #[error("network unreachable")]
    NetworkUnreachable,
    #[error("host unreachable")]
    HostUnreachable,
    #[error("could not connect: {0}")]
    Other(String),
}

impl ConnectFailure {
    /// Makes sense of an error from hyper-util's `HttpConnector`, whose own
    /// type is private: what we want is either our resolver's verdict or the
    /// operating system's error, somewhere down its `source()` chain.
    fn from_connector_error(err: &(dyn StdError + 'static)) -> ConnectFailure {
        if let Some(ours) = error_chain(err).find_map(|e| e.downcast_ref::<ConnectFailure>()) {
            return ours.clone();
        }
        // The innermost I/O error has the most specific kind.
        let io_err = error_chain(err).filter_map(|e| e.downcast_ref::<io::Error>()).last();
        match io_err {
            Some(io_err) => ConnectFailure::from_io(io_err),
            None => ConnectFailure::Other(innermost_error(err).to_string()),
        }
    }

    fn from_io(err: &io::Error) -> ConnectFailure {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::ConnectionReset => ConnectFailure::Reset,
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            io::ErrorKind::NetworkUnreachable => ConnectFailure::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => ConnectFailure::HostUnreachable,
            _ => ConnectFailure::Other(err.to_string()),
        }
    }
}

/// `err` followed by its causes, outermost first.
///
/// An `io::Error` wrapping another error reports that error's *source* as its
/// own, skipping the wrapped error itself; libraries wrap errors in
/// `io::Error` often (hyper-rustls does, twice, around rustls's), so the walk
/// steps into the wrapped error instead, to keep every link downcastable.
pub(crate) fn error_chain<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&err| cause_of(err))
}

fn cause_of<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match err.downcast_ref::<io::Error>() {
        Some(io_err) => io_err.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => err.source(),
    }
}

/// The last cause of `err`, usually the one with the most precise message.
pub(crate) fn innermost_error<'a>(err: &'a (dyn StdError + 'static)) -> &'a (dyn StdError + 'static) {
    error_chain(err).last().unwrap_or(err)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The resolver given to hyper-util's `HttpConnector`: it resolves names
/// itself so that the addresses it vets are exactly the ones connected to.
#[derive(Clone, Debug)]
struct SafeResolver {
    policy: AddressPolicy,
}

impl Service<Name> for SafeResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ConnectFailure;
    type Future = BoxFuture<Result<Self::Response, ConnectFailure>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectFailure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str();
            if policy == AddressPolicy::PublicOnly {
                check_name(host)?;
            }
            // Port 0: HttpConnector puts the URL's port in afterwards.
            let resolved = tokio::net::lookup_host((host, 0)).await.map(Iterator::collect).unwrap_or_default();
            vet_resolved(host, resolved, policy).map(Vec::into_iter)
        })
    }
}

/// Passes on what a name resolved to, unless it is nothing or, under
/// [`AddressPolicy::PublicOnly`], any one address is forbidden: a name that
/// resolves to both a public and a private address is refused.
fn vet_resolved(
    host: &str,
    resolved: Vec<SocketAddr>,
    policy: AddressPolicy,
) -> Result<Vec<SocketAddr>, ConnectFailure> {
    if resolved.is_empty() {
        return Err(ConnectFailure::Unresolvable(host.to_owned()));
    }
    if policy == AddressPolicy::PublicOnly {
        check_all(resolved.iter().map(SocketAddr::ip))?;
    }
    Ok(resolved)
}

/// hyper-util's `HttpConnector` with [`SafeResolver`], plus the check the
/// resolver never sees: `HttpConnector` connects to IP-literal hosts without
/// calling its resolver, so those are vetted here first.
#[derive(Clone, Debug)]
pub(crate) struct GuardedConnector {
    tcp: HttpConnector<SafeResolver>,
    policy: AddressPolicy,
}

impl GuardedConnector {
    fn new(policy: AddressPolicy) -> GuardedConnector {
        let mut tcp = HttpConnector::new_with_resolver(SafeResolver { policy });
        // The TLS layer above hands https:// URLs down to us.
        tcp.enforce_http(false);
        // Webhooks are one small request each; don't let Nagle delay them.
        tcp.set_nodelay(true);
        GuardedConnector { tcp, policy }
    }

    fn check_ip_literal(&self, dst: &Uri) -> Result<(), BlockedError> {
        if self.policy == AddressPolicy::AllowPrivate {
            return Ok(());
        }
        // The same test HttpConnector uses to skip its resolver.
        let host = dst.host().unwrap_or_default();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match host.parse::<IpAddr>() {
            Ok(ip) => check_ip(ip),
            Err(_) => Ok(()),
        }
    }
}

impl Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectFailure;
    type Future = BoxFuture<Result<Self::Response, ConnectFailure>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectFailure>> {
        self.tcp.poll_ready(cx).map_err(|err| ConnectFailure::from_connector_error(&err))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if let Err(blocked) = self.check_ip_literal(&dst) {
            return Box::pin(std::future::ready(Err(blocked.into())));
        }
        let connecting = self.tcp.call(dst);
        Box::pin(async move { connecting.await.map_err(|err| ConnectFailure::from_connector_error(&err)) })
    }
}

/// The connector every webhook goes through: TLS (webpki roots, HTTP/1.1
/// only) over [`GuardedConnector`]. Any error from below TLS is a
/// [`ConnectFailure`]; anything else it reports on an https:// URL happened
/// in the TLS handshake.
pub(crate) type SafeConnector = HttpsConnector<GuardedConnector>;

/// Builds the connector that enforces `policy` on every connection.
pub(crate) fn safe_connector(policy: AddressPolicy) -> SafeConnector {
    HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(GuardedConnector::new(policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_reasons() {
        #[track_caller]
        fn check(ip: &str, expected: Option<&str>) {
            let ip: IpAddr = ip.parse().expect("test address parses");
            assert_eq!(forbidden_reason(ip), expected, "{ip}");
        }

        // Public unicast.
        check("8.8.8.8", None);
        check("1.1.1.1", None);
        check("93.184.216.34", None);
        check("172.15.255.255", None);
        check("172.32.0.0", None);
        check("100.63.255.255", None);
        check("100.128.0.0", None);
        check("169.253.255.255", None);
        check("198.17.255.255", None);
        check("198.20.0.0", None);
        check("223.255.255.255", None);
        check("2606:4700:4700::1111", None);
        check("2a00:1450:4001:80b::200e", None);

        // IPv4.
        check("0.0.0.0", Some(UNSPECIFIED));
        check("0.1.2.3", Some(RESERVED));
        check("127.0.0.1", Some(LOOPBACK));
        check("127.255.255.254", Some(LOOPBACK));
        check("10.0.0.5", Some(PRIVATE));
        check("172.16.0.1", Some(PRIVATE));
        check("172.31.255.255", Some(PRIVATE));
        check("192.168.1.1", Some(PRIVATE));
        check("169.254.169.254", Some(LINK_LOCAL));
        check("100.64.0.1", Some(SHARED));
        check("100.127.255.255", Some(SHARED));
        check("192.0.0.8", Some(RESERVED));
        check("192.0.2.1", Some(DOCUMENTATION));
        check("198.51.100.7", Some(DOCUMENTATION));
        check("203.0.113.200", Some(DOCUMENTATION));
        check("198.18.0.1", Some(BENCHMARKING));
        check("198.19.255.255", Some(BENCHMARKING));
        check("192.88.99.1", Some(RESERVED));
        check("224.0.0.1", Some(MULTICAST));
        check("239.255.255.250", Some(MULTICAST));
        check("240.0.0.1", Some(RESERVED));
        check("255.255.255.254", Some(RESERVED));
        check("255.255.255.255", Some(BROADCAST));

        // IPv6.
        check("::", Some(UNSPECIFIED));
        check("::1", Some(LOOPBACK));
        check("fc00::1", Some(UNIQUE_LOCAL));
        check("fd12:3456:789a::1", Some(UNIQUE_LOCAL));
        check("fe80::1", Some(LINK_LOCAL));
        check("febf::1", Some(LINK_LOCAL));
        check("fec0::1", Some(SITE_LOCAL));
        check("ff02::1", Some(MULTICAST));
        check("2001:db8::1", Some(DOCUMENTATION));
        check("3fff::1", Some(DOCUMENTATION));
        check("2001::1", Some(RESERVED));
        check("100::1", Some(RESERVED));
        check("64:ff9b:1::1", Some(RESERVED));
        check("1::1", Some(RESERVED));
        check("::ffff:0:7f00:1", Some(RESERVED));

        // IPv6 forms judged by the IPv4 address inside.
        check("::ffff:127.0.0.1", Some(LOOPBACK));
        check("::ffff:10.1.2.3", Some(PRIVATE));
        check("::ffff:169.254.169.254", Some(LINK_LOCAL));
        check("::ffff:8.8.8.8", None);
        check("::127.0.0.1", Some(LOOPBACK));
        check("::0.0.0.2", Some(RESERVED));
        check("::8.8.8.8", None);
        check("64:ff9b::127.0.0.1", Some(LOOPBACK));
        check("64:ff9b::192.168.0.1", Some(PRIVATE));
        check("64:ff9b::8.8.8.8", None);
        check("2002:7f00:1::", Some(LOOPBACK));
        check("2002:a9fe:a9fe::1", Some(LINK_LOCAL));
        check("2002:0808:0808::1", None);
    }

    #[test]
    fn parsing_target_urls() {
        #[track_caller]
        fn check(input: &str, expected: Result<&str, UrlError>) {
            let parsed = TargetUrl::parse(input);
            let parsed = parsed.as_ref().map(TargetUrl::as_str).map_err(Clone::clone);
            assert_eq!(parsed, expected, "{input}");
        }

        check("https://hooks.example.com/in", Ok("https://hooks.example.com/in"));
        check("HTTPS://Hooks.Example.COM/In?a=1", Ok("https://hooks.example.com/In?a=1"));
        check("http://example.com", Ok("http://example.com/"));
        check("http://example.com:8080/x#frag", Ok("http://example.com:8080/x#frag"));
        check("http://2130706433/", Ok("http://127.0.0.1/"));
        check("http://0x7f000001/", Ok("http://127.0.0.1/"));
        check("http://127.1/", Ok("http://127.0.0.1/"));
        check("http://[::ffff:127.0.0.1]/", Ok("http://[::ffff:7f00:1]/"));
        check("http://LOCALHOST./", Ok("http://localhost./"));
        check("http://b\u{fc}cher.example/", Ok("http://xn--bcher-kva.example/"));

        check("/relative/path", Err(UrlError::NotHttp));
        check("example.com/hook", Err(UrlError::NotHttp));
        check("ftp://example.com/", Err(UrlError::NotHttp));
        check("file:///etc/passwd", Err(UrlError::NotHttp));
        check("javascript:alert(1)", Err(UrlError::NotHttp));
        check("http://", Err(UrlError::NoHost));
        check("http://user@example.com/", Err(UrlError::Credentials));
        check("http://user:pw@example.com/", Err(UrlError::Credentials));
        check("http://:pw@example.com/", Err(UrlError::Credentials));
        check("http://example.com:99999/", Err(UrlError::Malformed(url::ParseError::InvalidPort)));
        check("http://exa mple.com/", Err(UrlError::Malformed(url::ParseError::IdnaError)));

        let longest = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES - 20));
        assert_eq!(longest.len(), MAX_URL_BYTES);
        check(&longest, Ok(&longest));
        check(&format!("{longest}a"), Err(UrlError::TooLong));
        // Short enough as typed, too long once spaces become %20.
        let spaces = format!("https://example.com/{}", "a b".repeat(500));
        check(&spaces, Err(UrlError::TooLong));
    }

    #[test]
    fn url_errors_read_as_advice() {
        assert_eq!(UrlError::NotHttp.to_string(), "must be an absolute http:// or https:// URL");
        assert_eq!(UrlError::Credentials.to_string(), "must not contain a user name or password");
        assert_eq!(UrlError::TooLong.to_string(), "must be at most 2048 bytes");
    }

    #[test]
    fn plain_http_is_told_apart() {
        let plain = TargetUrl::parse("http://example.com/").expect("valid");
        let tls = TargetUrl::parse("https://example.com/").expect("valid");
        assert!(plain.is_plain_http());
        assert!(!tls.is_plain_http());
    }

    #[tokio::test]
    async fn destinations_checked_when_saving() {
        async fn check(url: &str, policy: AddressPolicy, expected: Result<(), &str>) {
            let url = TargetUrl::parse(url).expect("test URL is valid");
            let verdict = check_destination(&url, policy).await;
            let verdict = verdict.map_err(|err| err.to_string());
            assert_eq!(verdict, expected.map_err(str::to_owned), "{url}");
        }
        use AddressPolicy::{AllowPrivate, PublicOnly};

        check("https://8.8.8.8/", PublicOnly, Ok(())).await;
        check("https://[2606:4700::1]/", PublicOnly, Ok(())).await;
        check("http://10.0.0.5/", PublicOnly, Err("blocked: 10.0.0.5 is a private address")).await;
        check(
            "http://169.254.169.254/latest/meta-data/",
            PublicOnly,
            Err("blocked: 169.254.169.254 is a link-local address"),
        )
        .await;
        check("http://2130706433/", PublicOnly, Err("blocked: 127.0.0.1 is a loopback address")).await;
        check("http://[::ffff:127.0.0.1]/", PublicOnly, Err("blocked: ::ffff:127.0.0.1 is a loopback address")).await;
        check("http://[fd00::1]:8080/", PublicOnly, Err("blocked: fd00::1 is a unique-local address")).await;
        check("http://LOCALHOST./", PublicOnly, Err("blocked: localhost is a loopback address")).await;
        check("http://api.localhost/", PublicOnly, Err("blocked: api.localhost is a loopback address")).await;
        check("http://127.0.0.1/", AllowPrivate, Ok(())).await;
        check("http://localhost/", AllowPrivate, Ok(())).await;
    }

    #[test]
    fn resolved_addresses_are_all_vetted() {
        #[track_caller]
        fn check(resolved: &[&str], policy: AddressPolicy, expected: Result<usize, &str>) {
            let resolved =
                resolved.iter().map(|ip| SocketAddr::new(ip.parse().expect("test address parses"), 0)).collect();
            let verdict =
                vet_resolved("hooks.example", resolved, policy).map(|addrs| addrs.len()).map_err(|err| err.to_string());
            assert_eq!(verdict, expected.map_err(str::to_owned));
        }
        use AddressPolicy::{AllowPrivate, PublicOnly};

        check(&["93.184.216.34"], PublicOnly, Ok(1));
        check(&["93.184.216.34", "2606:2800::1"], PublicOnly, Ok(2));
        check(&["93.184.216.34", "10.0.0.5"], PublicOnly, Err("blocked: 10.0.0.5 is a private address"));
        check(&["::1", "93.184.216.34"], PublicOnly, Err("blocked: ::1 is a loopback address"));
        check(&["93.184.216.34", "10.0.0.5"], AllowPrivate, Ok(2));
        check(&[], PublicOnly, Err("could not resolve host hooks.example"));
        check(&[], AllowPrivate, Err("could not resolve host hooks.example"));
    }

    #[test]
    fn localhost_names() {
        for name in ["localhost", "LOCALHOST", "localhost.", "a.b.localhost", "X.LocalHost."] {
            assert!(is_localhost_name(name), "{name}");
        }
        for name in ["localhost.example.com", "notlocalhost", "localhostx", "example.com"] {
            assert!(!is_localhost_name(name), "{name}");
        }
    }
}
