//! Security associations (TS-0003 clause 8.2): who is at the other end of a connection, as the
//! (D)TLS handshake authenticated it, and the peer facts every request on that connection carries.

use crate::cse::Cse;
use crate::impersonation::same_entity;
use m2m_security::tls::Authenticated;
use std::net::SocketAddr;
use std::sync::Arc;

/// How a security association was established (SAEF of TS-0003 clause 8.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaeMode {
    /// Provisioned symmetric key (TLS-PSK with Kpsa/KpsaID).
    ProvisionedKey,
    /// Certificates (mutual TLS).
    Certificate,
    /// No connection: a pairwiseESPrimKey authenticated an ESPrim inner request (TS-0003 clause 8.4).
    EndToEnd,
}

/// An established association: the credential and the identity bound to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Association {
    pub mode: SaeMode,
    /// The Credential-ID (TS-0003 clause 10.4), e.g. `12-AE123456789012-Lock@in.provider.com`.
    pub credential_id: String,
    /// The AE-ID or CSE-ID the credential is bound to, when the configuration or the certificate
    /// names one; `None` for a PSK row without an entity (registration rules decide, then the
    /// registered AE-ID is bound to the credential).
    pub entity: Option<String>,
}

impl Association {
    /// The association a handshake produced; `identity_of_certificate` reads a certificate's
    /// oneM2M identity (AE-ID or CSE-ID) and Credential-ID.
    pub fn from_handshake(
        auth: Authenticated,
        identity_of_certificate: impl Fn(&[u8]) -> Option<(String, String)>,
    ) -> Option<Self> {
        match auth {
            Authenticated::Psk {
                psk_identity,
                entity,
            } => Some(Self {
                mode: SaeMode::ProvisionedKey,
                credential_id: format!("12-{psk_identity}"),
                entity,
            }),
            Authenticated::Certificate { leaf_der } => {
                let (entity, credential_id) = identity_of_certificate(&leaf_der)?;
                Some(Self {
                    mode: SaeMode::Certificate,
                    credential_id,
                    entity: Some(entity),
                })
            }
        }
    }
}

/// Where a request came from.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The socket's source address; `None` for requests the CSE makes itself.
    pub addr: Option<SocketAddr>,
    /// The security association of the connection, if it has one.
    pub association: Option<Arc<Association>>,
    /// The plain-HTTP development listener on loopback: no association, but the admin
    /// originator is honoured there.
    pub development: bool,
    /// Set per request by the impersonation check: the originator is the identity the
    /// association authenticated (rq_authn of TS-0003 clause 7.1.2).
    pub authenticated: bool,
}

impl Peer {
    /// The CSE itself (group fan-out, notification relay, expiry).
    pub fn internal() -> Self {
        Self::default()
    }

    pub fn is_internal(&self) -> bool {
        self.addr.is_none()
    }

    /// Whether the admin originator is honoured: on the loopback development listener, over an
    /// association bound to it (the same entity in any form; an entity of another CSE that merely
    /// ends in the admin's name is not it), or inside the CSE.
    pub fn may_act_as_admin(&self, cse: &Cse) -> bool {
        self.is_internal()
            || self.development
            || self
                .association
                .as_ref()
                .and_then(|a| a.entity.as_deref())
                .is_some_and(|e| same_entity(cse, e, &cse.id.admin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn bound_to(entity: &str) -> Peer {
        Peer {
            addr: Some(([127, 0, 0, 1], 1).into()),
            association: Some(Arc::new(Association {
                mode: SaeMode::Certificate,
                credential_id: "33-x".into(),
                entity: Some(entity.into()),
            })),
            development: false,
            authenticated: false,
        }
    }

    #[test]
    fn only_the_admin_itself_acts_as_admin() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.storage.path = dir.path().join("db");
        let cse = Cse::open(cfg, &[]).unwrap();
        for same in ["CAdmin", "/id-in/CAdmin", "//m2m.example.com/id-in/CAdmin"] {
            assert!(bound_to(same).may_act_as_admin(&cse), "{same}");
        }
        for other in [
            "/id-mn/CAdmin",
            "//other.example.com/id-in/CAdmin",
            "CAdmin2",
        ] {
            assert!(!bound_to(other).may_act_as_admin(&cse), "{other}");
        }
        assert!(Peer::internal().may_act_as_admin(&cse));
    }
}
