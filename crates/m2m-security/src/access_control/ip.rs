//! IP address blocks for accessControlIpAddresses (TS-0003 clause 7.1.3; data types m2m:ipv4 and m2m:ipv6,
//! TS-0004 table 6.3.2-1): an address with an optional CIDR suffix (RFC 4632, RFC 5952).
//!
//! Decisions where the spec is silent:
//! - An address without a suffix is a single host (/32 or /128).
//! - Host bits set below the prefix (`192.168.1.5/24`) are ignored, as most tools do.
//! - An IPv4-mapped IPv6 request address (`::ffff:a.b.c.d`) is compared as the IPv4 address it carries, so it
//!   is matched by the ipv4 list only.
//! - Zone identifiers (`fe80::1%eth0`), leading zeros in IPv4 octets and signs in the prefix are rejected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block `network/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    V4 { net: u32, prefix: u8 },
    V6 { net: u128, prefix: u8 },
}

impl Cidr {
    /// Parse an m2m:ipv4 value (`10.0.0.0/8`, `10.0.0.1`).
    pub fn parse_v4(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = split(s, 32)?;
        let a: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IPv4 address"))?;
        Ok(Cidr::V4 {
            net: u32::from(a) & mask32(prefix),
            prefix,
        })
    }

    /// Parse an m2m:ipv6 value (`2001:db8::/32`, `::1`).
    pub fn parse_v6(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = split(s, 128)?;
        let a: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IPv6 address"))?;
        Ok(Cidr::V6 {
            net: u128::from(a) & mask128(prefix),
            prefix,
        })
    }

    /// Whether `ip` lies in the block. A mapped IPv6 address is compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (Cidr::V4 { net, prefix }, IpAddr::V4(a)) => u32::from(a) & mask32(*prefix) == *net,
            (Cidr::V6 { net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask128(*prefix) == *net,
            _ => false,
        }
    }
}

/// The address as it is compared: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

fn split(s: &str, max: u8) -> Result<(&str, u8), String> {
    match s.split_once('/') {
        None => Ok((s, max)),
        Some((addr, p)) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("'{s}' has a bad prefix length"));
            }
            let n: u8 = p
                .parse()
                .map_err(|_| format!("'{s}' has a bad prefix length"))?;
            if n > max {
                return Err(format!("'{s}' has a prefix longer than {max}"));
            }
            Ok((addr, n))
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_table() {
        let cases = [
            ("192.168.1.0/24", "192.168.1.0", true),
            ("192.168.1.0/24", "192.168.1.255", true),
            ("192.168.1.0/24", "192.168.2.0", false),
            ("192.168.1.0/24", "192.168.0.255", false),
            ("192.168.1.5/24", "192.168.1.77", true), // host bits ignored
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("10.0.0.1/32", "10.0.0.1", true),
            ("10.0.0.1/32", "10.0.0.0", false),
            ("0.0.0.0/0", "255.255.255.255", true),
            ("0.0.0.0/0", "1.2.3.4", true),
            ("0.0.0.0/0", "::1", false),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "10.255.255.255", true),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            // IPv4-mapped IPv6 request addresses are compared as IPv4.
            ("192.168.1.0/24", "::ffff:192.168.1.9", true),
            ("192.168.1.0/24", "::ffff:192.168.2.9", false),
            ("0.0.0.0/0", "::ffff:8.8.8.8", true),
            // IPv4-compatible (deprecated, not mapped) stays IPv6.
            ("192.168.1.0/24", "::192.168.1.9", false),
        ];
        for (net, addr, want) in cases {
            let c = Cidr::parse_v4(net).unwrap();
            assert_eq!(c.contains(ip(addr)), want, "{net} contains {addr}");
        }
    }

    #[test]
    fn v6_table() {
        let cases = [
            ("2001:db8::/32", "2001:db8::1", true),
            (
                "2001:db8::/32",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                true,
            ),
            ("2001:db8::/32", "2001:db9::", false),
            ("2001:db8::/32", "2001:db7:ffff::", false),
            ("::/0", "::1", true),
            ("::/0", "fe80::1", true),
            ("::/0", "10.0.0.1", false),
            ("::/0", "::ffff:10.0.0.1", false), // mapped: compared as IPv4
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::1", "::1", true),
            (
                "abcd:ffff:abb0:aaaa::/64",
                "abcd:ffff:abb0:aaaa:1:2:3:4",
                true,
            ),
            ("abcd:ffff:abb0:aaaa::/64", "abcd:ffff:abb0:aaab::", false),
            ("Fadf:ddd0::/32", "fadf:ddd0::5", true),
            ("2001:db8::/127", "2001:db8::1", true),
            ("2001:db8::/127", "2001:db8::2", false),
        ];
        for (net, addr, want) in cases {
            let c = Cidr::parse_v6(net).unwrap();
            assert_eq!(c.contains(ip(addr)), want, "{net} contains {addr}");
        }
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "/24",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/ 8",
            "10.0.0",
            "10.0.0.256",
            "010.0.0.1",
            "2001:db8::/32",
            "10.0.0.0/0008",
            "any",
        ] {
            assert!(Cidr::parse_v4(s).is_err(), "v4 {s:?}");
        }
        for s in [
            "",
            "::/129",
            "::/1000",
            "fe80::1%eth0",
            "10.0.0.1",
            "2001:db8:::/32",
            "gggg::",
            "::/",
        ] {
            assert!(Cidr::parse_v6(s).is_err(), "v6 {s:?}");
        }
    }
}
