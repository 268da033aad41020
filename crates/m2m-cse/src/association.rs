//! Security associations on the CSE (TS-0003 clause 8.2): who is at the other end of a connection, as
//! the (D)TLS handshake authenticated it, and the facts every request on that connection carries.
//! The association types themselves are m2m-security's ([`Association`], [`Proof`]).

use crate::context::Context;
use m2m_core::EntityId;
pub use m2m_security::association::{Association, Proof, SaeMode};
use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::config::PlainTrust;

/// Where a request came from.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The socket's source address; `None` for requests the CSE makes itself.
    pub addr: Option<SocketAddr>,
    /// The security association of the connection, if it has one.
    pub association: Option<Arc<Association>>,
    /// On a listener without association: how its From is taken.
    pub plain: PlainTrust,
    /// Set per request by the impersonation check: the parsed From (`None` for a registration
    /// that has no AE-ID yet) and how far it is proven.
    pub originator: Option<EntityId>,
    pub proof: Proof,
    /// A request an `<action>` makes: it does not run actions itself (no action loops).
    pub by_action: bool,
    /// A request an MQTT server delivered: `addr` is the server's, not the originator's, so
    /// no rule on the originator's IP address can match it.
    pub via_mqtt_server: bool,
    /// How many group fan-outs (`fopt`, `sfop`) this request is inside: a group that lists
    /// itself, or groups listing each other, would otherwise fan out without end.
    pub fan_out_depth: u8,
    /// The member requests the fan-out tree this request is inside may still make, shared by
    /// all its levels (`None` outside a fan-out): depth alone lets K groups listing each other
    /// make K to the power of the depth requests.
    pub fan_out_budget: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Default for Peer {
    fn default() -> Self {
        Self {
            addr: None,
            association: None,
            plain: PlainTrust::Anonymous,
            originator: None,
            proof: Proof::Authenticated,
            by_action: false,
            via_mqtt_server: false,
            fan_out_depth: 0,
            fan_out_budget: None,
        }
    }
}

impl Peer {
    /// The CSE itself (group fan-out, notification relay, expiry).
    pub fn internal() -> Self {
        Self::default()
    }

    /// The peer of a connection (TCP) or session (UDP) of any binding: its association, or the
    /// plain listener's trust. While the guard lives, a group member connected over its
    /// association is inner-authenticated (group authentication, entity B).
    pub(crate) fn of_transport(
        cse: &Context,
        addr: SocketAddr,
        association: Option<&Arc<Association>>,
        plain: PlainTrust,
    ) -> (Self, Option<crate::group_authentication::InnerGuard>) {
        match association {
            Some(a) => {
                let inner = if cse.config().group_agent.members.is_empty() {
                    None
                } else {
                    cse.group_agent.enter(a)
                };
                (Self::associated(addr, Arc::clone(a)), inner)
            }
            None => (Self::plain(addr, plain), None),
        }
    }

    /// A connection over a security association.
    pub fn associated(addr: SocketAddr, association: Arc<Association>) -> Self {
        Self {
            addr: Some(addr),
            association: Some(association),
            ..Self::default()
        }
    }

    /// A fan-out datagram that the group key opened and the group hosting CSE `sender` signed
    /// (`crate::multicast`): its requests are that CSE's relays, as over its association.
    pub(crate) fn multicast(addr: SocketAddr, sender: EntityId, kid: &str) -> Self {
        use m2m_security::credentials::CredentialId;
        let credential = CredentialId::new(CredentialId::TYPE_MULTICAST_GROUP_KEY_ID, kid)
            .or_else(|_| CredentialId::new(CredentialId::TYPE_MULTICAST_GROUP_KEY_ID, "unnamed"))
            .expect("a valid Credential-ID");
        Self::associated(
            addr,
            Arc::new(Association {
                mode: SaeMode::MulticastGroupKey,
                credential,
                entity: Some(sender),
            }),
        )
    }

    /// A connection on a listener without security association.
    pub fn plain(addr: SocketAddr, trust: PlainTrust) -> Self {
        Self {
            addr: Some(addr),
            plain: trust,
            ..Self::default()
        }
    }

    /// The CSE itself. A request an `<action>` makes is not: it is its creator's, run later.
    pub fn is_internal(&self) -> bool {
        self.addr.is_none() && !self.by_action
    }

    /// The originator's IP address, when the transport tells it.
    pub fn originator_ip(&self) -> Option<std::net::IpAddr> {
        if self.via_mqtt_server {
            return None;
        }
        self.addr.map(|a| a.ip())
    }

    /// The entity the association is bound to.
    pub fn bound_entity(&self) -> Option<&EntityId> {
        self.association.as_ref()?.entity.as_ref()
    }

    /// Whether this request's originator is the admin, with a credential that proves it: inside
    /// the CSE, over an association bound to the admin, or on a listener the operator declared
    /// trusted. A claim on an anonymous listener, or an entity relayed by a CSE, never is.
    pub fn is_admin(&self, cse: &Context) -> bool {
        let Some(originator) = &self.originator else {
            return false;
        };
        if *originator != cse.id.admin {
            return false;
        }
        match (self.proof, &self.association) {
            (Proof::Authenticated, _) => {
                self.is_internal() || self.bound_entity() == Some(originator)
            }
            (Proof::Vouched, None) => !self.is_internal() && self.plain == PlainTrust::Trusted,
            _ => false,
        }
    }

    /// The same peer, with this request's originator and proof.
    pub fn with_originator(mut self, originator: Option<EntityId>, proof: Proof) -> Self {
        self.originator = originator;
        self.proof = proof;
        self
    }
}
