//! Security associations (TS-0003 clause 8.2.1): what a completed handshake proved (the credential,
//! its Credential-ID of clause 10.4, the entity bound to it) and, per request, how far the originator
//! is proven ([`Proof`], the rq_authn of clause 7.1.2 and what lies below it).

use crate::credentials::CredentialId;
use m2m_core::EntityId;
use std::fmt;

/// How a security association was established (the SAEFs of TS-0003 clause 8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaeMode {
    /// Provisioned symmetric key (TLS-PSK with Kpsa/KpsaID, clause 8.2.2.1).
    ProvisionedKey,
    /// Certificates (clause 8.2.2.2).
    Certificate,
    /// A key the MAF distributed (Kc/KcID, clause 8.2.2.3).
    MafKey,
    /// A GBA NAF key: Ks_NAF of the device's B-TID, fetched from the BSF (clause 8.3.2.3,
    /// 3GPP TS 33.222).
    GbaKey,
    /// The group key Ksx of Group Authentication Solution 1 (seeds/001 clause 8.2.1).
    GroupKey,
    /// No connection: a pairwiseESPrimKey authenticated an ESPrim inner request (clause 8.4).
    EndToEnd,
    /// No connection: a multicast fan-out opened with the group key and signed by the group
    /// hosting CSE (seeds/004 clause 6.1.2.2.3, [`crate::e2e::multicast`]).
    MulticastGroupKey,
    /// No connection of its own: a message an MQTT server delivered (TS-0010 clause 7.2). The
    /// server authenticated the client by its PSK and let it publish only on its own topics; the
    /// CSE trusts the server for that, as the server's configuration tells it to.
    MqttServer,
}

impl fmt::Display for SaeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaeMode::ProvisionedKey => "provisioned-key",
            SaeMode::Certificate => "certificate",
            SaeMode::MafKey => "maf-key",
            SaeMode::GbaKey => "gba-key",
            SaeMode::GroupKey => "group-key",
            SaeMode::EndToEnd => "end-to-end",
            SaeMode::MulticastGroupKey => "multicast-group-key",
            SaeMode::MqttServer => "mqtt-server",
        })
    }
}

/// An established association: decided once the handshake completed, never from a callback's
/// intermediate state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Association {
    pub mode: SaeMode,
    /// The Credential-ID (clause 10.4): `12-<KpsaID>`, `33-<AE-ID>`, `32-<CSE-ID>`, `11-<KmID>`, ...
    pub credential: CredentialId,
    /// The AE-ID or CSE-ID the credential is bound to; `None` for a credential bound to no entity yet
    /// (the registration rules decide, and the AE registered with it is bound to it from then on).
    pub entity: Option<EntityId>,
}

impl Association {
    /// Whether the credential is bound to a CSE-ID (an Mcc peer).
    pub fn is_cse(&self) -> bool {
        self.entity.as_ref().is_some_and(EntityId::is_cse)
    }
}

impl fmt::Display for Association {
    /// `mode credential -> entity`, for audit lines (no key material exists here to leak).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entity {
            Some(e) => write!(f, "{} {} -> {e}", self.mode, self.credential),
            None => write!(f, "{} {} -> (unbound)", self.mode, self.credential),
        }
    }
}

/// How far the originator of one request is proven. Every rule of the access decision takes it:
/// `acaf` needs [`Proof::Authenticated`]; creator rights need more than a claim; a claim matches
/// only `all`. A CSE forwards an originator only with what it proved, and the next CSE never
/// upgrades it (what it receives from a CSE for someone else is at most vouched for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proof {
    /// Nothing proves the From: a listener without security association. It matches only `all`
    /// in accessControlOriginators; it is never the creator, never the admin.
    Claimed,
    /// Someone trusted vouches for the ID, but no security association proved it: an
    /// authenticated CSE peer relaying for an entity behind it (TS-0003 clause 7.1.2: only ESPrim
    /// authenticates such originators), or a listener the operator declared trusted. It matches
    /// IDs; rq_authn is false.
    Vouched,
    /// rq_authn: the association (or ESPrim) proved this very originator, or it is the CSE itself.
    Authenticated,
}

impl Proof {
    /// rq_authn of TS-0003 clause 7.1.2.
    pub fn is_authenticated(self) -> bool {
        self == Proof::Authenticated
    }

    /// Whether the ID may be matched against IDs at all (anything but a bare claim).
    pub fn identifies(self) -> bool {
        self != Proof::Claimed
    }
}

impl fmt::Display for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proof::Claimed => "claimed",
            Proof::Vouched => "vouched for",
            Proof::Authenticated => "authenticated",
        })
    }
}
