//! What a datagram's source address tells the gateway before anything else: the prefix that
//! per-prefix limits count it under, and whether the operator vouches that addresses in it
//! cannot be forged (`--validated-prefixes`: loopback, or a radio network behind a border
//! router that drops spoofed sources, BCP 38). Everywhere else an address proves itself with
//! an Echo round trip (`echo.rs`) or a completed EDHOC/OSCORE exchange.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The prefix length per-prefix limits count IPv4 sources under: a /24, a small site.
const V4_PREFIX: u8 = 24;
/// The prefix length for IPv6 sources: a /48, what one site is usually given.
const V6_PREFIX: u8 = 48;

/// A source's prefix, the unit of the per-prefix limits.
pub type Prefix = IpNet;

/// The operator's source address policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    validated: Vec<IpNet>,
}

/// A `--validated-prefixes` value that is not a list of prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixError(pub String);

impl core::fmt::Display for PrefixError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:?} is not a prefix (write e.g. 127.0.0.0/8 or fd00::/8, or \"none\")",
            self.0
        )
    }
}

impl std::error::Error for PrefixError {}

impl Sources {
    /// Sources whose addresses in `validated` count as proven.
    pub fn new(validated: Vec<IpNet>) -> Self {
        Self { validated }
    }

    /// Reads a comma-separated list of prefixes (`none` or an empty string: no prefix).
    pub fn parse(list: &str) -> Result<Self, PrefixError> {
        if list.trim() == "none" {
            return Ok(Self::default());
        }
        let validated = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|_| PrefixError(p.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(Self { validated })
    }

    /// Whether the operator vouches for `addr`'s source address.
    pub fn is_validated(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.validated.iter().any(|net| net.contains(&ip))
    }
}

/// The prefix per-prefix limits count `addr` under.
pub fn prefix_of(addr: SocketAddr) -> Prefix {
    let ip = canonical(addr.ip());
    let len = if ip.is_ipv4() { V4_PREFIX } else { V6_PREFIX };
    IpNet::new(ip, len).map_or(IpNet::from(ip), |net| net.trunc())
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack socket shows IPv4
/// peers that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validated_prefixes_and_source_prefixes() {
        let sources = Sources::parse("127.0.0.0/8, fd00::/8").unwrap();
        assert!(sources.is_validated("127.3.4.5:1".parse().unwrap()));
        assert!(sources.is_validated("[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(sources.is_validated("[fd12::1]:1".parse().unwrap()));
        assert!(!sources.is_validated("192.0.2.1:1".parse().unwrap()));
        assert_eq!(Sources::parse("none").unwrap(), Sources::default());
        assert!(Sources::parse("127.0.0.1").is_err());
        assert_eq!(
            prefix_of("192.0.2.77:9".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            prefix_of("[2001:db8:1:2::3]:9".parse().unwrap()).to_string(),
            "2001:db8:1::/48"
        );
    }
}
