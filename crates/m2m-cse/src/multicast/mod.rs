//! Multicast group fan-out (TS-0001 clauses 9.6.44 and 10.2.7.13, TS-0004 clauses 7.4.14.2.6,
//! 7.4.55 and 7.5.3, TS-0008 Annex B), protected at the service layer (seeds/004 clause 6.1.2.2.3).
//!
//! - The group hosting CSE ([`host`]) keeps the Multicast Group Information of a `<group>` whose
//!   members live on at least two member hosting CSEs registered here with multicastCapability IP
//!   (`mtcc` 2): a multicast address, the fan-out target `/{its CSE-ID}/mcg-{group ri}` and a fresh
//!   group key. It creates a `<localMulticastGroup>` on each of those CSEs over the unicast
//!   association, carrying the group key sealed for that CSE alone (`gck`, as a group credential
//!   of [`m2m_security::e2e::group_message`]) and its own public key (`spk`). A fan-out to those
//!   members is then one NON CoAP POST to the multicast address whose payload is the request
//!   primitive signed by the group hosting CSE and encrypted under the group key
//!   ([`m2m_security::e2e::multicast`]): the datagram shows only the fan-out target.
//! - A member hosting CSE ([`member`]) joins the address when its `<localMulticastGroup>` is
//!   created, opens each datagram for a target it holds (group key, signature, replay window),
//!   applies the request to its local members as the original originator relayed by the group
//!   hosting CSE, and answers with a NOTIFY to the responseTarget over its unicast association
//!   (TS-0001 clause 10.2.7.13.2 steps 005-006), never over the multicast path.
//! - When the memberIDs change, the next fan-out first issues a new group key to the remaining
//!   member hosting CSEs and deletes the `<localMulticastGroup>` of those that left: a CSE that
//!   left holds only older keys and cannot read later fan-outs.

pub mod host;
pub mod member;

use crate::cse::Cse;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use m2m_core::{M2mError, M2mResult, ResourceType};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// The resourceName of a group's `<localMulticastGroup>` on every member hosting CSE, and the
/// `{fanout-segment}` of its multicastGroupFanoutTarget: one per `<group>`, so a group hosting CSE
/// that restarted finds (and updates) the resources it created before.
pub(crate) fn segment(group_ri: &str) -> String {
    format!("mcg-{group_ri}")
}

/// The multicastAddress (m2m:ipAddress) of an IPv4 group.
pub(crate) fn ip_address(a: Ipv4Addr) -> serde_json::Value {
    serde_json::json!({ "ip4": a.to_string() })
}

/// An IPv4 multicast address from an m2m:ipAddress value.
pub(crate) fn parse_ip_address(v: Option<&serde_json::Value>) -> M2mResult<Ipv4Addr> {
    let a: Ipv4Addr = v
        .and_then(|v| v.get("ip4"))
        .and_then(serde_json::Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            M2mError::bad_request("multicastAddress: an IPv4 address (ip4) is required")
        })?;
    if !a.is_multicast() {
        return Err(M2mError::bad_request(format!(
            "multicastAddress {a} is not a multicast address"
        )));
    }
    Ok(a)
}

/// The fan-out datagram (TS-0008 Annex B): a NON POST with a fresh token to the fan-out target;
/// the payload is the sealed primitive (a compact JWE, `application/jose`).
pub(crate) fn encode_datagram(target: &str, sealed: &str) -> M2mResult<Vec<u8>> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::NonConfirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = rand::random();
    p.set_token(rand::random::<[u8; 8]>().to_vec());
    for seg in m2m_core::coap_binding::segments_from_to(target) {
        p.add_option(CoapOption::UriPath, seg.into_bytes());
    }
    p.payload = sealed.as_bytes().to_vec();
    p.to_bytes()
        .map_err(|e| M2mError::internal(format!("fan-out datagram not encoded: {e}")))
}

/// The fan-out target and sealed payload of a datagram; `None` for anything that is not a NON
/// POST (a member never answers on the multicast path).
pub(crate) fn decode_datagram(bytes: &[u8]) -> Option<(String, String)> {
    let p = Packet::from_bytes(bytes).ok()?;
    if p.header.get_type() != MessageType::NonConfirmable
        || p.header.code != MessageClass::Request(RequestType::Post)
    {
        return None;
    }
    let segments: Vec<String> = p
        .get_option(CoapOption::UriPath)
        .into_iter()
        .flatten()
        .map(|s| String::from_utf8(s.clone()).ok())
        .collect::<Option<_>>()?;
    let target = m2m_core::coap_binding::to_from_segments(&segments).ok()?;
    let sealed = String::from_utf8(p.payload).ok()?;
    Some((target, sealed))
}

/// The group hosting side's socket: sends on `interface` with `ttl`, and loops its datagrams
/// back so that member hosting CSEs on the same host hear them.
pub(crate) fn sending_socket(
    interface: Ipv4Addr,
    ttl: u32,
) -> std::io::Result<tokio::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_multicast_if_v4(&interface)?;
    s.set_multicast_ttl_v4(ttl)?;
    s.set_multicast_loop_v4(true)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(interface, 0)))?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// A member's socket for one group address: bound to `group:port` (so it receives only that
/// group's datagrams) with SO_REUSEADDR (other CSEs on the host may join the same group), joined
/// on `interface`. Dropping it leaves the group.
pub(crate) fn joined_socket(
    group: Ipv4Addr,
    port: u16,
    interface: Ipv4Addr,
) -> std::io::Result<tokio::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(group, port)))?;
    s.join_multicast_v4(&group, &interface)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// After a `<localMulticastGroup>` was created or updated here: join (or re-key) it.
pub(crate) fn on_stored(cse: &Arc<Cse>, res: &crate::store::Resource) {
    if res.ty != ResourceType::LocalMulticastGroup {
        return;
    }
    if let Some(m) = &cse.multicast_member {
        if let Err(e) = m.install(cse, res) {
            tracing::warn!(target: "audit", lmg = res.ri(), reason = %e.dbg, "multicast group not joined");
        }
    }
}

/// After a `<localMulticastGroup>` was deleted here (by its group hosting CSE, or expired): leave.
pub(crate) fn on_deleted(cse: &Cse, res: &crate::store::Resource) {
    if res.ty != ResourceType::LocalMulticastGroup {
        return;
    }
    if let Some(m) = &cse.multicast_member {
        m.uninstall(res);
    }
}
