//! The identity holes of issue 11, tried as an attacker would, on a CSE driven in process: a
//! request and an association in, a response out, no process spawned (the process-level and
//! real-socket cases are in crates/m2m/tests). Every table tries the attack with its neighbours:
//! every form of the same ID, every kind of listener or association, and a control row that
//! shows the same request succeeds for whom it should (so a refusal is the attack's, not the
//! set-up's).

use m2m_core::{
    EntityId, Home, M2mResult, Operation, Request, ResourceType, Response,
    ResponseStatusCode as Rsc,
};
use m2m_cse::association::{Association, PlainTrust, Proof, SaeMode};
use m2m_cse::{Config, Cse, Peer};
use m2m_security::credentials::{CredentialId, KpsaId, PskEntry, Secret};
use m2m_security::secure_environment::{PlainPskTable, SecureEnvironment};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// The lock's PSK row (bound to its AE-ID), a row bound to nobody, the admin's row.
const LOCK_KPSA: &str = "lock@in.example.com";
const FREE_KPSA: &str = "free@in.example.com";
const ADMIN_KPSA: &str = "admin@in.example.com";

struct Setup {
    cse: Arc<Cse>,
    _dir: tempfile::TempDir,
    home: Home,
}

fn addr() -> SocketAddr {
    ([192, 0, 2, 7], 40000).into()
}

fn row(entity: Option<&str>, kpsa: &str) -> PskEntry {
    PskEntry {
        entity_id: entity.map(str::to_owned),
        kpsa_id: KpsaId::parse(kpsa).unwrap(),
        key: Secret::from_slice(&[7u8; 16]),
    }
}

impl Setup {
    /// An IN-CSE /id-in with the three PSK rows, a registration rule for unbound credentials, and
    /// the lock registered over its own association with a policy on its state container:
    /// rule 1 the lock, everything, acaf; rule 2 the lock and the phone, RETRIEVE, no acaf;
    /// selfPrivileges the lock, everything, no acaf.
    async fn start() -> Setup {
        Self::start_with("").await
    }

    /// [`Setup::start`] with `extra` TOML tables appended to the configuration.
    async fn start_with(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::from_toml(&format!(
            "[[registration.rules]]\naai = [\"*\"]\naae = [\"C*\", \"S*\"]\n\
             [[registration.rules]]\napci = [\"12-*\"]\naai = [\"*\"]\naae = [\"C*\", \"S*\"]\n\
             {extra}\n\
             [tls]\naccepted_identities = [\"/id-mn\", \"/Sphone\", \"Cmeter\"]\n",
        ))
        .unwrap();
        cfg.storage.path = dir.path().join("db");
        let rows = vec![
            row(Some("Clock-AE1"), LOCK_KPSA),
            row(None, FREE_KPSA),
            row(Some("CAdmin"), ADMIN_KPSA),
        ];
        let env: Vec<Box<dyn SecureEnvironment>> =
            vec![Box::new(PlainPskTable::new("test", rows).unwrap())];
        let cse = Cse::open(cfg, &env.into()).unwrap();
        let home = cse.identity().home.clone();
        let s = Setup {
            cse,
            _dir: dir,
            home,
        };
        let lock = s.psk(LOCK_KPSA, Some("Clock-AE1"));
        let r = s
            .send(
                &lock,
                Operation::Create,
                "cse-in",
                "C",
                Some(ResourceType::Ae),
                ae("lock"),
            )
            .await;
        assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
        let acp = json!({"m2m:acp": {"rn": "acp", "pv": {"acr": [
            {"acor": ["Clock-AE1"], "acop": 63, "acaf": true},
            {"acor": ["Clock-AE1", "/id-in/Cphone"], "acop": 2},
        ]}, "pvs": {"acr": [{"acor": ["Clock-AE1"], "acop": 63}]}}});
        let r = s
            .send(
                &lock,
                Operation::Create,
                "cse-in/lock",
                "Clock-AE1",
                Some(ResourceType::AccessControlPolicy),
                Some(acp),
            )
            .await;
        assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
        let cnt = json!({"m2m:cnt": {"rn": "state", "acpi": ["cse-in/lock/acp"]}});
        let r = s
            .send(
                &lock,
                Operation::Create,
                "cse-in/lock",
                "Clock-AE1",
                Some(ResourceType::Container),
                Some(cnt),
            )
            .await;
        assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
        let r = s.cin(&lock, "Clock-AE1", "LOCKED").await;
        assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
        s
    }

    fn entity(&self, id: &str) -> EntityId {
        EntityId::parse(id, &self.home).unwrap()
    }

    fn associated(&self, mode: SaeMode, credential: &str, entity: Option<&str>) -> Peer {
        Peer::associated(
            addr(),
            Arc::new(Association {
                mode,
                credential: CredentialId::parse(credential).unwrap(),
                entity: entity.map(|e| self.entity(e)),
            }),
        )
    }

    /// An association over the PSK row `kpsa` (bound to `entity` as the row says).
    fn psk(&self, kpsa: &str, entity: Option<&str>) -> Peer {
        self.associated(SaeMode::ProvisionedKey, &format!("12-{kpsa}"), entity)
    }

    /// A certificate association of the entity `id`.
    fn cert(&self, id: &str) -> Peer {
        self.associated(SaeMode::Certificate, "33-x.m2m.example.com", Some(id))
    }

    /// What this CSE answers a RETRIEVE of its CSEBase that the CSE `peer` relays for `from`.
    async fn relayed(&self, peer: &Peer, from: &str) -> Rsc {
        self.send(peer, Operation::Retrieve, "cse-in", from, None, None)
            .await
            .rsc
    }

    /// Asserts whether `peer` speaks for `from`: a RETRIEVE of the CSEBase relayed for it is
    /// decided by access control (2000, or 4103: an entity registered elsewhere is no
    /// registree here), or refused as a From the peer does not relay (4106).
    async fn assert_relays(&self, peer: &Peer, from: &str, speaks: bool, who: &str) {
        let rsc = self.relayed(peer, from).await;
        if speaks {
            assert!(
                matches!(rsc, Rsc::Ok | Rsc::OriginatorHasNoPrivilege),
                "{who} relaying {from}: decided by access control, not {rsc:?}"
            );
        } else {
            assert_eq!(
                rsc,
                Rsc::OriginatorNotAuthenticated,
                "{who} relaying {from}"
            );
        }
    }

    async fn send(
        &self,
        peer: &Peer,
        op: Operation,
        to: &str,
        from: &str,
        ty: Option<ResourceType>,
        pc: Option<Value>,
    ) -> Response {
        let from = (!from.is_empty()).then(|| from.to_owned());
        let mut req = Request::new(op, to, from, "rqi-1".to_owned());
        req.ty = ty;
        req.pc = pc;
        req.rvi = Some("3".into());
        self.cse.handle(req, peer.clone()).await
    }

    async fn cin(&self, peer: &Peer, from: &str, con: &str) -> Response {
        self.send(
            peer,
            Operation::Create,
            "cse-in/lock/state",
            from,
            Some(ResourceType::ContentInstance),
            Some(json!({"m2m:cin": {"con": con}})),
        )
        .await
    }

    /// The state's latest content as the lock reads it.
    async fn latest(&self) -> String {
        let lock = self.psk(LOCK_KPSA, Some("Clock-AE1"));
        let r = self
            .send(
                &lock,
                Operation::Retrieve,
                "cse-in/lock/state/la",
                "Clock-AE1",
                None,
                None,
            )
            .await;
        r.pc.as_ref()
            .and_then(|p| p.pointer("/m2m:cin/con"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    }
}

/// A `<remoteCSE>` registration of the CSE `csi`, listing `dcse` below it.
fn csr(csi: &str, dcse: &[&str]) -> Option<Value> {
    Some(
        json!({"m2m:csr": {"csi": csi, "cb": format!("{csi}/cse"), "rr": true,
        "poa": ["https://198.51.100.9:1"], "srv": ["3"], "cst": 2, "dcse": dcse}}),
    )
}

fn ae(rn: &str) -> Option<Value> {
    Some(json!({"m2m:ae": {"rn": rn, "api": "Nlock", "rr": false, "srv": ["3"]}}))
}

/// Every form of the lock's AE-ID, letter case of the SP included.
const LOCK_FORMS: [&str; 4] = [
    "Clock-AE1",
    "/id-in/Clock-AE1",
    "//m2m.example.com/id-in/Clock-AE1",
    "//M2M.Example.COM/id-in/Clock-AE1",
];

/// Refusals tell the requester nothing about other entities, policies or rules.
fn assert_says_nothing(r: &Response, what: &str) {
    let dbg = r.dbg().unwrap_or("");
    for word in [
        "Clock-AE1",
        "lock",
        "acp",
        "rule",
        "acaf",
        "/id-mn",
        "Cphone",
        "policy",
    ] {
        assert!(
            !dbg.contains(word),
            "{what}: the refusal names '{word}': {dbg}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Class 2: a listener without security association proves nothing

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_without_association_earns_nothing_granted_to_that_id() {
    let s = Setup::start().await;
    let anonymous = Peer::plain(addr(), PlainTrust::Anonymous);
    for from in LOCK_FORMS {
        // A rule without acaf (RETRIEVE) and one with acaf (CREATE): neither admits a claim.
        let r = s
            .send(
                &anonymous,
                Operation::Retrieve,
                "cse-in/lock/state/la",
                from,
                None,
                None,
            )
            .await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege,
            "retrieve as {from}: {:?}",
            r.pc
        );
        assert_says_nothing(&r, from);
        let r = s.cin(&anonymous, from, "UNLOCKED").await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege,
            "unlock as {from}: {:?}",
            r.pc
        );
        // The policy's selfPrivileges (no acaf): a claim cannot rewrite it.
        let pvs = json!({"m2m:acp": {"pvs": {"acr": [{"acor": ["all"], "acop": 63}]}}});
        let r = s
            .send(
                &anonymous,
                Operation::Update,
                "cse-in/lock/acp",
                from,
                None,
                Some(pvs),
            )
            .await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege,
            "pvs as {from}: {:?}",
            r.pc
        );
        // Creator rights: no deleting, no updating its poa.
        let r = s
            .send(
                &anonymous,
                Operation::Delete,
                "cse-in/lock",
                from,
                None,
                None,
            )
            .await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege,
            "delete as {from}: {:?}",
            r.pc
        );
        let poa = json!({"m2m:ae": {"poa": ["http://198.51.100.1:9/evil"]}});
        let r = s
            .send(
                &anonymous,
                Operation::Update,
                "cse-in/lock",
                from,
                None,
                Some(poa),
            )
            .await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege,
            "poa as {from}: {:?}",
            r.pc
        );
        // Re-registering the AE-ID: it is bound to the lock's credential.
        let r = s
            .send(
                &anonymous,
                Operation::Create,
                "cse-in",
                from,
                Some(ResourceType::Ae),
                ae("lock2"),
            )
            .await;
        assert!(
            matches!(
                r.rsc,
                Rsc::OriginatorNotAuthenticated | Rsc::OriginatorHasAlreadyRegistered
            ),
            "re-register as {from}: {:?}",
            r.pc
        );
        // Another CSE: a claim is not forwarded (it would arrive vouched for).
        let r = s
            .send(
                &anonymous,
                Operation::Retrieve,
                "/id-mn/cse-mn/x",
                from,
                None,
                None,
            )
            .await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorNotAuthenticated,
            "retarget as {from}: {:?}",
            r.pc
        );
    }
    assert_eq!(s.latest().await, "LOCKED");
    // Control: the lock over its own association does each of these.
    let lock = s.psk(LOCK_KPSA, Some("Clock-AE1"));
    assert_eq!(
        s.cin(&lock, "Clock-AE1", "UNLOCKED").await.rsc,
        Rsc::Created
    );
    let r = s
        .send(
            &lock,
            Operation::Retrieve,
            "/id-mn/cse-mn/x",
            "Clock-AE1",
            None,
            None,
        )
        .await;
    assert_ne!(r.rsc, Rsc::OriginatorNotAuthenticated, "{:?}", r.pc);
    // "all" still admits a claim: a policy can open a resource to everybody on purpose.
    let open = json!({"m2m:acp": {"rn": "open", "pv": {"acr": [{"acor": ["all"], "acop": 2}]},
        "pvs": {"acr": [{"acor": ["Clock-AE1"], "acop": 63}]}}});
    let r = s
        .send(
            &lock,
            Operation::Create,
            "cse-in/lock",
            "Clock-AE1",
            Some(ResourceType::AccessControlPolicy),
            Some(open),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let cnt = json!({"m2m:cnt": {"rn": "public", "acpi": ["cse-in/lock/open"]}});
    let r = s
        .send(
            &lock,
            Operation::Create,
            "cse-in/lock",
            "Clock-AE1",
            Some(ResourceType::Container),
            Some(cnt),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let r = s
        .send(
            &anonymous,
            Operation::Retrieve,
            "cse-in/lock/public",
            "Clock-AE1",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Ok, "{:?}", r.pc);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_listener_believes_the_id_but_never_authenticates_it() {
    let s = Setup::start().await;
    let trusted = Peer::plain(addr(), PlainTrust::Trusted);
    // The ID matches (rule 2, no acaf) ...
    let r = s
        .send(
            &trusted,
            Operation::Retrieve,
            "cse-in/lock/state/la",
            "Clock-AE1",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Ok, "{:?}", r.pc);
    // ... but acaf wants a security association.
    let r = s.cin(&trusted, "Clock-AE1", "UNLOCKED").await;
    assert_eq!(r.rsc, Rsc::OriginatorHasNoPrivilege, "{:?}", r.pc);
    // CSEs never come over it.
    let r = s
        .send(
            &trusted,
            Operation::Retrieve,
            "cse-in",
            "/id-mn",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::SecurityAssociationRequired, "{:?}", r.pc);
}

// ---------------------------------------------------------------------------------------------
// Class 3: S-AE-IDs are AEs, never CSE-IDs

#[tokio::test(flavor = "multi_thread")]
async fn nobody_acts_as_an_s_ae_registered_here() {
    let s = Setup::start().await;
    // Two S-AEs register over credentials of their own: Sgw (unbound row) and Sphone (certificate).
    let free = s.psk(FREE_KPSA, None);
    let r = s
        .send(
            &free,
            Operation::Create,
            "cse-in",
            "Sgw",
            Some(ResourceType::Ae),
            ae("gw"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let phone = s.cert("/Sphone");
    let r = s
        .send(
            &phone,
            Operation::Create,
            "cse-in",
            "S",
            Some(ResourceType::Ae),
            ae("phone"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let gw_forms = [
        "Sgw",
        "/Sgw",
        "//m2m.example.com/Sgw",
        "/id-in/Sgw",
        "/id-mn/Sgw",
    ];
    // The S-AE certificate holder, and a CSE peer, in every form of Sgw's ID.
    for peer in [s.cert("/Sphone"), s.cert("/id-mn")] {
        for from in gw_forms {
            for (op, to) in [
                (Operation::Retrieve, "cse-in/gw"),
                (Operation::Delete, "cse-in/gw"),
            ] {
                let r = s.send(&peer, op, to, from, None, None).await;
                assert_eq!(
                    r.rsc,
                    Rsc::OriginatorNotAuthenticated,
                    "{op:?} as {from}: {:?}",
                    r.pc
                );
                assert_says_nothing(&r, from);
            }
        }
    }
    // A CSE registered here speaks for itself, for the C-AEs it registered and for what is
    // below it; not for this CSE, its C-AEs, or another CSE registered here.
    let mn = s.cert("/id-mn");
    let r = s
        .send(
            &mn,
            Operation::Create,
            "cse-in",
            "/id-mn",
            Some(ResourceType::RemoteCse),
            csr("/id-mn", &["/id-asn"]),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    for (from, want_refused) in [
        ("/id-mn", false),
        ("/id-mn/Cmeter", false),
        ("//m2m.example.com/id-mn/Cmeter", false),
        ("/id-asn", false),
        ("/id-asn/Cvalve", false),
        ("Clock-AE1", true),
        ("/id-in/Clock-AE1", true),
        ("/id-in", true),
        ("//m2m.example.com/id-in", true),
        ("Sphone", true),
    ] {
        let r = s
            .send(&mn, Operation::Retrieve, "cse-in", from, None, None)
            .await;
        let refused = r.rsc == Rsc::OriginatorNotAuthenticated;
        assert_eq!(refused, want_refused, "{from}: {:?} {:?}", r.rsc, r.pc);
    }
    // A CSE neither registered here nor this CSE's registrar speaks for nobody but itself.
    let stranger = s.cert("/id-mn2");
    for (from, want_refused) in [
        ("/id-mn2", false),
        ("/id-mn2/Cmeter", true),
        ("//m2m.example.com/id-mn2/Cmeter", true),
        ("/id-mn/Cmeter", true),
        ("/Sroaming", true),
        ("/id-asn", true),
    ] {
        let r = s
            .send(&stranger, Operation::Retrieve, "cse-in", from, None, None)
            .await;
        let refused = r.rsc == Rsc::OriginatorNotAuthenticated;
        assert_eq!(refused, want_refused, "{from}: {:?} {:?}", r.rsc, r.pc);
    }
    // Control: each AE over its own association.
    let r = s
        .send(&free, Operation::Retrieve, "cse-in/gw", "Sgw", None, None)
        .await;
    assert_eq!(r.rsc, Rsc::Ok, "{:?}", r.pc);
    let r = s
        .send(
            &phone,
            Operation::Retrieve,
            "cse-in/phone",
            "/Sphone",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Ok, "{:?}", r.pc);
}

// ---------------------------------------------------------------------------------------------
// Class 4: the admin needs a credential

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_is_the_admin_only_with_a_credential_or_a_trusted_listener() {
    let s = Setup::start().await;
    let cases: Vec<(&str, Peer, bool)> = vec![
        (
            "anonymous listener",
            Peer::plain(addr(), PlainTrust::Anonymous),
            false,
        ),
        (
            "the lock's association",
            s.psk(LOCK_KPSA, Some("Clock-AE1")),
            false,
        ),
        ("an unbound credential", s.psk(FREE_KPSA, None), false),
        ("a CSE peer relaying", s.cert("/id-mn"), false),
        ("an AE certificate", s.cert("/Sphone"), false),
        (
            "the admin's own PSK row",
            s.psk(ADMIN_KPSA, Some("CAdmin")),
            true,
        ),
        (
            "a trusted development listener",
            Peer::plain(addr(), PlainTrust::Trusted),
            true,
        ),
    ];
    for (what, peer, admin) in cases {
        for from in ["CAdmin", "/id-in/CAdmin", "//m2m.example.com/id-in/CAdmin"] {
            // The lock's state is for the lock and the phone only: the admin reads anything.
            let r = s
                .send(
                    &peer,
                    Operation::Retrieve,
                    "cse-in/lock/state",
                    from,
                    None,
                    None,
                )
                .await;
            assert_eq!(
                r.rsc == Rsc::Ok,
                admin,
                "{what} as {from}: {:?} {:?}",
                r.rsc,
                r.pc
            );
        }
    }
    // The CSE itself (internal requests) is not fooled by a From either: only the admin's ID.
    let r = s
        .send(
            &Peer::internal(),
            Operation::Retrieve,
            "cse-in/lock/state",
            "Cnobody",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::OriginatorHasNoPrivilege, "{:?}", r.pc);
}

// ---------------------------------------------------------------------------------------------
// Class 5: registrations only by the credential bound to the ID

#[tokio::test(flavor = "multi_thread")]
async fn an_id_bound_to_a_credential_registers_only_with_it() {
    let s = Setup::start().await;
    // Delete the lock so that its AE-ID is free in the store but still bound to its PSK row.
    let lock = s.psk(LOCK_KPSA, Some("Clock-AE1"));
    let r = s
        .send(
            &lock,
            Operation::Delete,
            "cse-in/lock",
            "Clock-AE1",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
    let others: Vec<(&str, Peer)> = vec![
        ("an unbound credential", s.psk(FREE_KPSA, None)),
        (
            "an anonymous listener",
            Peer::plain(addr(), PlainTrust::Anonymous),
        ),
        (
            "a trusted listener",
            Peer::plain(addr(), PlainTrust::Trusted),
        ),
        ("another AE's certificate", s.cert("/Sphone")),
    ];
    // Nor an AE-ID the configuration accepts only from a certificate (`[tls]
    // accepted_identities`): it is registered over that certificate, and over nothing else.
    let meter_forms = ["Cmeter", "/id-in/Cmeter", "//m2m.example.com/id-in/Cmeter"];
    for (what, peer) in &others {
        for from in LOCK_FORMS.iter().chain(&meter_forms) {
            let r = s
                .send(
                    peer,
                    Operation::Create,
                    "cse-in",
                    from,
                    Some(ResourceType::Ae),
                    ae("squat"),
                )
                .await;
            assert_eq!(
                r.rsc,
                Rsc::OriginatorNotAuthenticated,
                "{what} as {from}: {:?}",
                r.pc
            );
            assert_says_nothing(&r, what);
        }
    }
    let r = s
        .send(
            &s.cert("Cmeter"),
            Operation::Create,
            "cse-in",
            "Cmeter",
            Some(ResourceType::Ae),
            ae("meter"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    // A CSE's credential registers no AE; an AE's no CSE; a CSE only its own CSE-ID.
    let r = s
        .send(
            &s.cert("/id-mn"),
            Operation::Create,
            "cse-in",
            "/id-mn",
            Some(ResourceType::Ae),
            ae("x"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::OriginatorNotAuthenticated, "{:?}", r.pc);
    for (what, peer, from, csi) in [
        (
            "an AE certificate as a CSE",
            s.cert("/Sphone"),
            "/id-x",
            "/id-x",
        ),
        (
            "a CSE for another CSE-ID",
            s.cert("/id-mn"),
            "/id-mn2",
            "/id-mn2",
        ),
        (
            "a CSE naming another csi",
            s.cert("/id-mn"),
            "/id-mn",
            "/id-mn2",
        ),
        (
            "a claim",
            Peer::plain(addr(), PlainTrust::Trusted),
            "/id-mn",
            "/id-mn",
        ),
        (
            "an unbound credential",
            s.psk(FREE_KPSA, None),
            "/id-mn",
            "/id-mn",
        ),
    ] {
        let r = s
            .send(
                &peer,
                Operation::Create,
                "cse-in",
                from,
                Some(ResourceType::RemoteCse),
                csr(csi, &[]),
            )
            .await;
        assert!(
            matches!(
                r.rsc,
                Rsc::OriginatorNotAuthenticated
                    | Rsc::BadRequest
                    | Rsc::SecurityAssociationRequired
            ),
            "{what}: {:?} {:?}",
            r.rsc,
            r.pc
        );
    }
    // Control: the lock registers again over its own row; the MN registers as itself.
    let r = s
        .send(
            &lock,
            Operation::Create,
            "cse-in",
            "C",
            Some(ResourceType::Ae),
            ae("lock"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let r = s
        .send(
            &s.cert("/id-mn"),
            Operation::Create,
            "cse-in",
            "/id-mn",
            Some(ResourceType::RemoteCse),
            csr("/id-mn", &[]),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
}

/// Every form of a C-stem AE-ID of this CSE, and of an S-stem one.
fn forms(id: &str) -> Vec<String> {
    if id.starts_with('S') {
        vec![
            id.to_owned(),
            format!("/{id}"),
            format!("/id-in/{id}"),
            format!("//m2m.example.com/{id}"),
        ]
    } else {
        vec![
            id.to_owned(),
            format!("/id-in/{id}"),
            format!("//m2m.example.com/id-in/{id}"),
            format!("//M2M.Example.COM/id-in/{id}"),
        ]
    }
}

/// An AE-ID that registered over a security association stays with what proved it after the AE
/// deregisters: whatever kind of credential that was (a row bound to nobody, a MAF or GBA key
/// naming it, which no configuration lists), nobody else registers it, in any form, over any
/// listener; its holder does. Only the admin's DELETE frees it, not another entity's.
#[tokio::test(flavor = "multi_thread")]
async fn an_ae_id_stays_with_the_credential_it_registered_with() {
    let s = Setup::start().await;
    let holders: Vec<(&str, Peer, &str)> = vec![
        (
            "a row bound to nobody (C-stem)",
            s.psk(FREE_KPSA, None),
            "Cfree",
        ),
        (
            "a row bound to nobody (S-stem)",
            s.psk("free2@in.example.com", None),
            "Sfree",
        ),
        (
            "a MAF key",
            s.associated(SaeMode::MafKey, "11-km1.maf.example.com", Some("Cmaf")),
            "Cmaf",
        ),
        (
            "a GBA key",
            s.associated(SaeMode::GbaKey, "97-user1@ims.example.com", Some("Sgba")),
            "Sgba",
        ),
    ];
    let attackers = |holder: &str| -> Vec<(&'static str, Peer)> {
        let mut a = vec![
            (
                "another unbound credential",
                s.psk("other@in.example.com", None),
            ),
            (
                "an anonymous listener",
                Peer::plain(addr(), PlainTrust::Anonymous),
            ),
            (
                "a trusted listener",
                Peer::plain(addr(), PlainTrust::Trusted),
            ),
            ("another AE's certificate", s.cert("/Sphone")),
            (
                "another MAF key",
                s.associated(SaeMode::MafKey, "11-km2.maf.example.com", Some("Cother")),
            ),
        ];
        if holder != "Cfree" {
            a.push(("the first unbound credential", s.psk(FREE_KPSA, None)));
        }
        a
    };
    let register = |peer: &Peer, from: &str, rn: &str| {
        let (peer, from, rn) = (peer.clone(), from.to_owned(), rn.to_owned());
        let s = &s;
        async move {
            s.send(
                &peer,
                Operation::Create,
                "cse-in",
                &from,
                Some(ResourceType::Ae),
                ae(&rn),
            )
            .await
        }
    };
    for (what, holder, id) in &holders {
        let r = register(holder, id, id).await;
        assert_eq!(r.rsc, Rsc::Created, "{what}: {:?}", r.pc);
        let r = s
            .send(
                holder,
                Operation::Delete,
                &format!("cse-in/{id}"),
                id,
                None,
                None,
            )
            .await;
        assert_eq!(r.rsc, Rsc::Deleted, "{what}: {:?}", r.pc);
        // Held, but no longer bound: a credential naming nobody speaks for no AE-ID until it
        // registers one again.
        if what.starts_with("a row bound to nobody") {
            let r = s
                .send(holder, Operation::Retrieve, "cse-in", id, None, None)
                .await;
            assert_eq!(r.rsc, Rsc::OriginatorNotAuthenticated, "{what}: {:?}", r.pc);
        }
        for (attacker, peer) in attackers(id) {
            for from in forms(id) {
                let r = register(&peer, &from, "squat").await;
                assert_eq!(
                    r.rsc,
                    Rsc::OriginatorNotAuthenticated,
                    "{attacker} registering {from}, held by {what}: {:?}",
                    r.pc
                );
                assert_says_nothing(&r, attacker);
            }
        }
        // Control: the holder registers it again (in another form of the ID).
        let r = register(holder, &forms(id)[2], id).await;
        assert_eq!(r.rsc, Rsc::Created, "{what} again: {:?}", r.pc);
    }

    // A credential naming the AE-ID outranks the row it registered with first; the row then
    // no longer registers it.
    let free = s.psk(FREE_KPSA, None);
    let r = s
        .send(
            &free,
            Operation::Delete,
            "cse-in/Cfree",
            "Cfree",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
    let named = s.associated(SaeMode::MafKey, "11-km3.maf.example.com", Some("Cfree"));
    let r = register(&named, "Cfree", "Cfree").await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let r = s
        .send(
            &named,
            Operation::Delete,
            "cse-in/Cfree",
            "Cfree",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
    let r = register(&free, "Cfree", "Cfree").await;
    assert_eq!(r.rsc, Rsc::OriginatorNotAuthenticated, "{:?}", r.pc);

    // Another entity allowed to delete the AE does not free its AE-ID; the admin does.
    let r = register(&free, "Cretired", "retired").await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let acp = json!({"m2m:acp": {"rn": "acp", "pv": {"acr": [
        {"acor": ["Cretired", "/Sphone"], "acop": 63},
    ]}, "pvs": {"acr": [{"acor": ["Cretired"], "acop": 63}]}}});
    let r = s
        .send(
            &free,
            Operation::Create,
            "cse-in/retired",
            "Cretired",
            Some(ResourceType::AccessControlPolicy),
            Some(acp),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let r = s
        .send(
            &free,
            Operation::Update,
            "cse-in/retired",
            "Cretired",
            None,
            Some(json!({"m2m:ae": {"acpi": ["cse-in/retired/acp"]}})),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);
    let r = s
        .send(
            &s.cert("/Sphone"),
            Operation::Delete,
            "cse-in/retired",
            "/Sphone",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
    let other = s.psk("other@in.example.com", None);
    let r = register(&other, "Cretired", "retired").await;
    assert_eq!(r.rsc, Rsc::OriginatorNotAuthenticated, "{:?}", r.pc);
    let r = register(&free, "Cretired", "retired").await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let admin = s.psk(ADMIN_KPSA, Some("CAdmin"));
    let r = s
        .send(
            &admin,
            Operation::Delete,
            "cse-in/retired",
            "CAdmin",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
    let r = register(&other, "Cretired", "retired").await;
    assert_eq!(r.rsc, Rsc::Created, "freed by the admin: {:?}", r.pc);
}

/// S-stems are unique in the SP (TS-0001 clause 10.2.2.2): the IN-CSE records each one an MN
/// registers as an `<AEAnnc>` under that MN's `<remoteCSE>`. Only that MN, over its own
/// association, makes or changes it; a stem registered at the IN, held there by a credential,
/// or announced by another MN is refused; the IN then takes the MN's word for that AE and no
/// other CSE's.
#[tokio::test(flavor = "multi_thread")]
async fn an_s_stem_is_announced_once_in_the_sp_and_only_by_its_cse() {
    let s = Setup::start().await;
    for mn in ["/id-mn", "/id-mn2"] {
        let r = s
            .send(
                &s.cert(mn),
                Operation::Create,
                "cse-in",
                mn,
                Some(ResourceType::RemoteCse),
                csr(mn, &[]),
            )
            .await;
        assert_eq!(r.rsc, Rsc::Created, "{mn}: {:?}", r.pc);
    }
    let (mn, mn2) = (s.cert("/id-mn"), s.cert("/id-mn2"));
    let annc = |lnk: &str| {
        Some(json!({"m2m:aeA": {"lnk": lnk, "api": "Nmeter", "lbl": ["Credential-ID:"]}}))
    };
    let announce = |peer: &Peer, under: &str, from: &str, lnk: &str| {
        let (peer, to, from, pc) = (
            peer.clone(),
            format!("/id-in/{under}"),
            from.to_owned(),
            annc(lnk),
        );
        let s = &s;
        async move {
            s.send(
                &peer,
                Operation::Create,
                &to,
                &from,
                Some(ResourceType::AeAnnc),
                pc,
            )
            .await
        }
    };
    // An S-AE registered at the IN (Sphone, by its certificate), one held there by a
    // credential (Sheld, registered over a row bound to nobody, then gone).
    let r = s
        .send(
            &s.cert("/Sphone"),
            Operation::Create,
            "cse-in",
            "/Sphone",
            Some(ResourceType::Ae),
            ae("phone"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let free = s.psk(FREE_KPSA, None);
    let r = s
        .send(
            &free,
            Operation::Create,
            "cse-in",
            "Sheld",
            Some(ResourceType::Ae),
            ae("held"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let r = s
        .send(&free, Operation::Delete, "cse-in/held", "Sheld", None, None)
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);

    // The MN announces its AE's stem: From is the AE as the MN relays it (TS-0004 7.4.5.2.1).
    let r = announce(&mn, "id-mn", "/id-mn/Smeter", "/id-mn/Smeter").await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);

    // Taken stems, whoever asks and in whichever form.
    for (what, peer, under, from, lnk) in [
        (
            "another MN, the same stem",
            &mn2,
            "id-mn2",
            "/id-mn2/Smeter",
            "/id-mn2/Smeter",
        ),
        (
            "another MN as itself",
            &mn2,
            "id-mn2",
            "/id-mn2",
            "/id-mn2/Smeter",
        ),
        (
            "another MN, the stem SP-relative",
            &mn2,
            "id-mn2",
            "/Smeter",
            "/id-mn2/Smeter",
        ),
        (
            "another MN, the stem absolute",
            &mn2,
            "id-mn2",
            "//m2m.example.com/Smeter",
            "/id-mn2/Smeter",
        ),
        (
            "the MN, the same stem again",
            &mn,
            "id-mn",
            "/id-mn",
            "/id-mn/Smeter",
        ),
        (
            "a stem registered at the IN",
            &mn,
            "id-mn",
            "/id-mn/Sphone",
            "/id-mn/Sphone",
        ),
        (
            "a stem registered at the IN, MN as itself",
            &mn,
            "id-mn",
            "/id-mn",
            "/id-mn/Sphone",
        ),
        (
            "a stem held at the IN",
            &mn,
            "id-mn",
            "/id-mn/Sheld",
            "/id-mn/Sheld",
        ),
    ] {
        let r = announce(peer, under, from, lnk).await;
        assert!(
            matches!(
                r.rsc,
                Rsc::OriginatorHasAlreadyRegistered | Rsc::OriginatorNotAuthenticated
            ),
            "{what}: {:?} {:?}",
            r.rsc,
            r.pc
        );
        assert_says_nothing(&r, what);
    }
    // Under another CSE's <remoteCSE>, by anyone but that CSE: refused.
    for (what, peer, from) in [
        ("another MN", mn2.clone(), "/id-mn2/Sother"),
        ("another MN as itself", mn2.clone(), "/id-mn2"),
        ("an AE's certificate", s.cert("/Sphone"), "/Sphone"),
        ("a row bound to nobody", free.clone(), "Sfree"),
        (
            "an anonymous listener",
            Peer::plain(addr(), PlainTrust::Anonymous),
            "Sother",
        ),
        (
            "a trusted listener",
            Peer::plain(addr(), PlainTrust::Trusted),
            "Sother",
        ),
    ] {
        let r = announce(&peer, "id-mn", from, "/id-mn/Sother").await;
        assert!(
            matches!(
                r.rsc,
                Rsc::OriginatorHasNoPrivilege | Rsc::OriginatorNotAuthenticated
            ),
            "{what}: {:?} {:?}",
            r.rsc,
            r.pc
        );
    }
    // A link that names no S-stem of the announcing CSE.
    for lnk in [
        "/id-mn/Cmeter",
        "/id-mn2/Sx",
        "//m2m.example.com/id-mn/Sx",
        "Sx",
    ] {
        let r = announce(&mn, "id-mn", "/id-mn", lnk).await;
        assert_eq!(r.rsc, Rsc::BadRequest, "{lnk}: {:?}", r.pc);
    }
    // From an AE other than the one the link names.
    let r = announce(&mn, "id-mn", "/id-mn/Sone", "/id-mn/Sother").await;
    assert_eq!(r.rsc, Rsc::BadRequest, "{:?}", r.pc);
    // Only the MN changes its record; another MN neither as the AE nor as itself.
    let update = |peer: &Peer, from: &str, lnk: &str| {
        let (peer, from, lnk) = (peer.clone(), from.to_owned(), lnk.to_owned());
        let s = &s;
        async move {
            s.send(
                &peer,
                Operation::Update,
                "/id-in/Smeter",
                &from,
                None,
                Some(json!({"m2m:aeA": {"lnk": lnk}})),
            )
            .await
        }
    };
    for from in ["/id-mn2/Smeter", "/id-mn2", "/Smeter"] {
        let r = update(&mn2, from, "/id-mn2/Smeter").await;
        assert!(
            matches!(
                r.rsc,
                Rsc::OriginatorHasNoPrivilege | Rsc::OriginatorNotAuthenticated
            ),
            "MN2 as {from}: {:?} {:?}",
            r.rsc,
            r.pc
        );
    }
    let r = update(&mn, "/id-mn/Smeter", "/id-mn/Sother").await;
    assert_eq!(r.rsc, Rsc::BadRequest, "another stem: {:?}", r.pc);
    let r = update(&mn, "/id-mn/Smeter", "INACTIVE").await;
    assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);
    let r = update(&mn, "/id-mn/Smeter", "/id-mn/Smeter").await;
    assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);

    // Nobody registers the announced stem at the IN.
    for (what, peer) in [
        ("a row bound to nobody", free.clone()),
        (
            "an anonymous listener",
            Peer::plain(addr(), PlainTrust::Anonymous),
        ),
    ] {
        for from in forms("Smeter") {
            let r = s
                .send(
                    &peer,
                    Operation::Create,
                    "cse-in",
                    &from,
                    Some(ResourceType::Ae),
                    ae("squat"),
                )
                .await;
            assert!(
                matches!(
                    r.rsc,
                    Rsc::OriginatorHasAlreadyRegistered | Rsc::OriginatorNotAuthenticated
                ),
                "{what} as {from}: {:?} {:?}",
                r.rsc,
                r.pc
            );
        }
    }
    // The MN speaks for its AE at the IN; the other MN does not.
    let r = s
        .send(
            &mn,
            Operation::Retrieve,
            "cse-in",
            "/id-mn/Smeter",
            None,
            None,
        )
        .await;
    assert_ne!(r.rsc, Rsc::OriginatorNotAuthenticated, "{:?}", r.pc);
    for from in ["/id-mn2/Smeter", "/Smeter", "//m2m.example.com/Smeter"] {
        let r = s
            .send(&mn2, Operation::Retrieve, "cse-in", from, None, None)
            .await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorNotAuthenticated,
            "MN2 for {from}: {:?}",
            r.pc
        );
    }
    // Another entity behind the MN (an AE the MN relays, or the announced AE deleting its
    // record) does not act on it; nor does anyone relay for a stem held here.
    for (op, from) in [
        (Operation::Retrieve, "/id-mn/Cevil"),
        (Operation::Update, "/id-mn/Cevil"),
        (Operation::Delete, "/id-mn/Cevil"),
        (Operation::Delete, "/id-mn/Smeter"),
        (Operation::Delete, "/id-mn"),
    ] {
        let pc = (op == Operation::Update).then(|| json!({"m2m:aeA": {"lnk": "INACTIVE"}}));
        let r = s.send(&mn, op, "/id-in/Smeter", from, None, pc).await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege,
            "{op:?} as {from}: {:?}",
            r.pc
        );
    }
    let r = announce(&mn, "id-mn", "/id-mn/Cevil", "/id-mn/Sevil").await;
    assert_eq!(
        r.rsc,
        Rsc::OriginatorHasNoPrivilege,
        "an AE announcing another stem: {:?}",
        r.pc
    );
    for from in ["/Sheld", "/id-mn/Sheld", "//m2m.example.com/Sheld"] {
        let r = s
            .send(&mn, Operation::Retrieve, "cse-in", from, None, None)
            .await;
        assert_eq!(r.rsc, Rsc::OriginatorNotAuthenticated, "{from}: {:?}", r.pc);
    }
    // The admin sees the record, with the Credential-ID label.
    let admin = s.psk(ADMIN_KPSA, Some("CAdmin"));
    let r = s
        .send(
            &admin,
            Operation::Retrieve,
            "/id-in/Smeter",
            "CAdmin",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Ok, "{:?}", r.pc);
    assert_eq!(
        r.pc.as_ref().and_then(|p| p.pointer("/m2m:aeA/lnk")),
        Some(&json!("/id-mn/Smeter"))
    );
    let r = s
        .send(
            &admin,
            Operation::Delete,
            "/id-in/Smeter",
            "CAdmin",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
}

/// The IN-CSE records an announced S-stem only as its registration rules would admit the AE
/// registering there (TS-0001 clause 10.2.2.2 steps 006a, 006b): an MN cannot reserve stems the
/// SP's rules keep from the credentials its AEs registered with, at creation or by changing the
/// record later. The rules here: any App-ID and stem without a credential, or with a `12-*` one.
#[tokio::test(flavor = "multi_thread")]
async fn the_in_cse_records_only_announcements_its_rules_admit() {
    let s = Setup::start().await;
    let r = s
        .send(
            &s.cert("/id-mn"),
            Operation::Create,
            "cse-in",
            "/id-mn",
            Some(ResourceType::RemoteCse),
            csr("/id-mn", &[]),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let mn = s.cert("/id-mn");
    let send = |op: Operation, to: &str, stem: &str, pc: Value| {
        let (to, from) = (to.to_owned(), format!("/id-mn/{stem}"));
        let (s, mn) = (&s, mn.clone());
        let ty = (op == Operation::Create).then_some(ResourceType::AeAnnc);
        async move { s.send(&mn, op, &to, &from, ty, Some(pc)).await }
    };
    let annc = |stem: &str, lbl: Value| json!({"m2m:aeA": {"lnk": format!("/id-mn/{stem}"), "api": "Nmeter", "lbl": lbl}});
    for (what, stem, pc, rsc) in [
        (
            "a credential no rule names",
            "Sa",
            annc("Sa", json!(["Credential-ID:mallory@elsewhere.example"])),
            Rsc::AppRuleValidationFailed,
        ),
        (
            "two credentials, one the rules admit",
            "Sb",
            annc(
                "Sb",
                json!([
                    "Credential-ID:12-meter@in.example.com",
                    "Credential-ID:mallory"
                ]),
            ),
            Rsc::BadRequest,
        ),
        (
            "no App-ID",
            "Sc",
            json!({"m2m:aeA": {"lnk": "/id-mn/Sc", "lbl": ["Credential-ID:"]}}),
            Rsc::BadRequest,
        ),
        (
            "a credential label spelt otherwise",
            "Sd",
            annc("Sd", json!(["credential-id:mallory@elsewhere.example"])),
            Rsc::BadRequest,
        ),
    ] {
        let r = send(Operation::Create, "/id-in/id-mn", stem, pc).await;
        assert_eq!(r.rsc, rsc, "{what}: {:?}", r.pc);
        let dbg = r.dbg().unwrap_or("");
        assert!(
            !dbg.is_empty() && !dbg.contains("12-"),
            "{what}: the rules stay unsaid: {dbg}"
        );
        let r = s
            .send(
                &s.psk(ADMIN_KPSA, Some("CAdmin")),
                Operation::Retrieve,
                &format!("/id-in/{stem}"),
                "CAdmin",
                None,
                None,
            )
            .await;
        assert_eq!(r.rsc, Rsc::NotFound, "{what}: nothing recorded: {:?}", r.pc);
    }
    // What the rules admit: a `12-*` credential, and none.
    for (stem, lbl) in [
        ("Smeter", "Credential-ID:12-meter@in.example.com"),
        ("Splain", "Credential-ID:"),
    ] {
        let r = send(
            Operation::Create,
            "/id-in/id-mn",
            stem,
            annc(stem, json!([lbl])),
        )
        .await;
        assert_eq!(r.rsc, Rsc::Created, "{stem}: {:?}", r.pc);
    }
    // A re-registration with another credential is judged again; the record stays as it was.
    let r = send(
        Operation::Update,
        "/id-in/Smeter",
        "Smeter",
        json!({"m2m:aeA": {"lnk": "/id-mn/Smeter", "lbl": ["Credential-ID:mallory@elsewhere.example"]}}),
    )
    .await;
    assert_eq!(r.rsc, Rsc::AppRuleValidationFailed, "{:?}", r.pc);
    let r = s
        .send(
            &s.psk(ADMIN_KPSA, Some("CAdmin")),
            Operation::Retrieve,
            "/id-in/Smeter",
            "CAdmin",
            None,
            None,
        )
        .await;
    assert_eq!(
        r.pc.as_ref().map(|pc| pc["m2m:aeA"]["lbl"].clone()),
        Some(json!(["Credential-ID:12-meter@in.example.com"])),
        "{:?}",
        r.pc
    );
    // Its App-ID cannot be removed.
    let r = send(
        Operation::Update,
        "/id-in/Smeter",
        "Smeter",
        json!({"m2m:aeA": {"api": null}}),
    )
    .await;
    assert_eq!(r.rsc, Rsc::BadRequest, "{:?}", r.pc);
    // Marking it deregistered, and a re-registration over an admitted credential, pass.
    for lbl in ["Credential-ID:12-other@in.example.com", "Credential-ID:"] {
        let r = send(
            Operation::Update,
            "/id-in/Smeter",
            "Smeter",
            json!({"m2m:aeA": {"lnk": "INACTIVE"}}),
        )
        .await;
        assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);
        let r = send(
            Operation::Update,
            "/id-in/Smeter",
            "Smeter",
            json!({"m2m:aeA": {"lnk": "/id-mn/Smeter", "lbl": [lbl]}}),
        )
        .await;
        assert_eq!(r.rsc, Rsc::Updated, "{lbl}: {:?}", r.pc);
    }
}

/// A CSE registered below a registree (an ASN-CSE below an MN-CSE) announces its S-stems to the
/// IN-CSE's CSEBase, and the IN keeps them under the registree whose descendantCSEs name it:
/// only that registree carries them; another registree can neither announce for a CSE it does
/// not list (under its own record: 4000) nor act on the one that lists it (through the base:
/// refused), and an announcement for a CSE its sender does not list is refused like any
/// `<AEAnnc>` at the CSEBase (4103: nothing tells whether another registree lists it).
#[tokio::test(flavor = "multi_thread")]
async fn an_s_stem_below_a_registree_is_announced_only_through_it() {
    let s = Setup::start().await;
    for (mn, dcse) in [("/id-mn", &["/id-asn"][..]), ("/id-mn2", &[][..])] {
        let r = s
            .send(
                &s.cert(mn),
                Operation::Create,
                "cse-in",
                mn,
                Some(ResourceType::RemoteCse),
                csr(mn, dcse),
            )
            .await;
        assert_eq!(r.rsc, Rsc::Created, "{mn}: {:?}", r.pc);
    }
    let (mn, mn2) = (s.cert("/id-mn"), s.cert("/id-mn2"));
    let announce = |peer: &Peer, to: &str, lnk: &str| {
        let (peer, to, lnk) = (peer.clone(), to.to_owned(), lnk.to_owned());
        let s = &s;
        async move {
            s.send(
                &peer,
                Operation::Create,
                &to,
                &lnk,
                Some(ResourceType::AeAnnc),
                Some(json!({"m2m:aeA": {"lnk": lnk, "api": "Nmeter", "lbl": ["Credential-ID:"]}})),
            )
            .await
        }
    };
    let r = announce(&mn, "/id-in/id-in", "/id-asn/Smeter").await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    assert_eq!(
        r.pc.as_ref().map(|pc| pc["m2m:aeA"]["pi"].clone()),
        Some(json!("id-mn")),
        "kept under the MN that lists the announcing CSE: {:?}",
        r.pc
    );
    let r = announce(&mn2, "/id-in/id-in", "/id-asn/Sother").await;
    assert!(
        matches!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege | Rsc::OriginatorNotAuthenticated
        ),
        "another MN, through the base: {:?} {:?}",
        r.rsc,
        r.pc
    );
    let r = announce(&mn2, "/id-in/id-mn2", "/id-asn/Sother").await;
    assert_eq!(
        r.rsc,
        Rsc::BadRequest,
        "another MN, under its own record: {:?}",
        r.pc
    );
    let r = announce(&mn, "/id-in/id-in", "/id-nowhere/Sother").await;
    assert_eq!(
        r.rsc,
        Rsc::OriginatorHasNoPrivilege,
        "a CSE it does not list, refused as any AEAnnc at the CSEBase: {:?}",
        r.pc
    );
    let admin = s.psk(ADMIN_KPSA, Some("CAdmin"));
    let r = s
        .send(
            &admin,
            Operation::Retrieve,
            "/id-in/Sother",
            "CAdmin",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::NotFound, "nothing recorded: {:?}", r.pc);
    // The stem is the MN's to speak for at the IN, not the other MN's.
    for (peer, ok) in [(&mn, true), (&mn2, false)] {
        let r = s
            .send(
                peer,
                Operation::Retrieve,
                "/id-in/cse-in",
                "/id-asn/Smeter",
                None,
                None,
            )
            .await;
        assert_eq!(
            r.rsc != Rsc::OriginatorNotAuthenticated,
            ok,
            "{:?} {:?}",
            r.rsc,
            r.pc
        );
    }
}

/// Only the IN-CSE keeps announcements: an MN-CSE takes none from the CSEs registered with it
/// (they would only keep its registrar from relaying for the AEs they name).
#[tokio::test(flavor = "multi_thread")]
async fn only_the_in_cse_keeps_announcements() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::from_toml(
        "[cse]\nrole = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n\
         [registrar]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\nurl = \"https://127.0.0.1:9\"\n",
    )
    .unwrap();
    cfg.storage.path = dir.path().join("db");
    let env: Vec<Box<dyn SecureEnvironment>> = Vec::new();
    let cse = Cse::open(cfg, &env.into()).unwrap();
    let home = cse.identity().home.clone();
    let asn = Peer::associated(
        addr(),
        Arc::new(Association {
            mode: SaeMode::Certificate,
            credential: CredentialId::parse("32-id-asn.id-in.m2m.example.com").unwrap(),
            entity: Some(EntityId::parse("/id-asn", &home).unwrap()),
        }),
    );
    let send = |to: &str, from: &str, ty: ResourceType, pc: Value| {
        let mut req = Request::new(
            Operation::Create,
            to,
            Some(from.to_owned()),
            "rqi-1".to_owned(),
        );
        req.ty = Some(ty);
        req.pc = Some(pc);
        req.rvi = Some("3".into());
        cse.handle(req, asn.clone())
    };
    let r = send(
        "cse-mn",
        "/id-asn",
        ResourceType::RemoteCse,
        csr("/id-asn", &[]).unwrap(),
    )
    .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    for from in ["/id-asn/Sphone", "/id-asn"] {
        let r = send(
            "/id-mn/id-asn",
            from,
            ResourceType::AeAnnc,
            json!({"m2m:aeA": {"lnk": "/id-asn/Sphone", "lbl": ["Credential-ID:"]}}),
        )
        .await;
        assert_eq!(r.rsc, Rsc::OperationNotAllowed, "{from}: {:?}", r.pc);
    }
}

/// A registree fills the IN-CSE's store with announcements only up to
/// `limits.max_announcements_per_cse`: its own and those it relays from below count, INACTIVE
/// records too (they keep their stems), another registree's do not; a further one is 5207 and
/// recorded nowhere. Changing a record it holds is no new one; a record the admin deletes frees
/// a place.
#[tokio::test(flavor = "multi_thread")]
async fn announcements_per_registree_are_bounded() {
    let s = Setup::start_with("[limits]\nmax_announcements_per_cse = 2\n").await;
    for (mn, dcse) in [("/id-mn", &[][..]), ("/id-mn2", &["/id-asn"][..])] {
        let r = s
            .send(
                &s.cert(mn),
                Operation::Create,
                "cse-in",
                mn,
                Some(ResourceType::RemoteCse),
                csr(mn, dcse),
            )
            .await;
        assert_eq!(r.rsc, Rsc::Created, "{mn}: {:?}", r.pc);
    }
    let (mn, mn2) = (s.cert("/id-mn"), s.cert("/id-mn2"));
    let admin = s.psk(ADMIN_KPSA, Some("CAdmin"));
    let announce = |peer: &Peer, to: &str, lnk: &str| {
        let (peer, to, lnk) = (peer.clone(), to.to_owned(), lnk.to_owned());
        let s = &s;
        async move {
            s.send(
                &peer,
                Operation::Create,
                &to,
                &lnk,
                Some(ResourceType::AeAnnc),
                Some(json!({"m2m:aeA": {"lnk": lnk, "api": "Nmeter", "lbl": ["Credential-ID:"]}})),
            )
            .await
            .rsc
        }
    };
    let recorded = |stem: &str| {
        let (s, admin, to) = (&s, admin.clone(), format!("/id-in/{stem}"));
        async move {
            s.send(&admin, Operation::Retrieve, &to, "CAdmin", None, None)
                .await
                .rsc
                == Rsc::Ok
        }
    };
    assert_eq!(
        announce(&mn, "/id-in/id-mn", "/id-mn/Sa").await,
        Rsc::Created
    );
    assert_eq!(
        announce(&mn, "/id-in/id-mn", "/id-mn/Sb").await,
        Rsc::Created
    );
    assert_eq!(
        announce(&mn, "/id-in/id-mn", "/id-mn/Sc").await,
        Rsc::NotAcceptable
    );
    assert!(!recorded("Sc").await, "nothing recorded beyond the limit");
    // Another registree has its own places, for its own AEs and those it relays from below.
    assert_eq!(
        announce(&mn2, "/id-in/id-mn2", "/id-mn2/Sx").await,
        Rsc::Created
    );
    assert_eq!(
        announce(&mn2, "/id-in/id-in", "/id-asn/Sy").await,
        Rsc::Created
    );
    for (to, lnk) in [
        ("/id-in/id-in", "/id-asn/Sz"),
        ("/id-in/id-mn2", "/id-mn2/Sz"),
    ] {
        assert_eq!(announce(&mn2, to, lnk).await, Rsc::NotAcceptable, "{lnk}");
    }
    assert!(!recorded("Sz").await);
    // A record marked INACTIVE keeps its place; changing a record is no new one.
    let update = |stem: &str, lnk: &str| {
        let (s, mn, to, from) = (
            &s,
            mn.clone(),
            format!("/id-in/{stem}"),
            format!("/id-mn/{stem}"),
        );
        let pc = json!({"m2m:aeA": {"lnk": lnk}});
        async move {
            s.send(&mn, Operation::Update, &to, &from, None, Some(pc))
                .await
                .rsc
        }
    };
    assert_eq!(update("Sa", "INACTIVE").await, Rsc::Updated);
    assert_eq!(
        announce(&mn, "/id-in/id-mn", "/id-mn/Sc").await,
        Rsc::NotAcceptable
    );
    // A re-registration at the limit, as the MN sends it: the CREATE finds the stem recorded
    // (4117, not 5207), then the UPDATE activates the record.
    assert_eq!(
        announce(&mn, "/id-in/id-mn", "/id-mn/Sa").await,
        Rsc::OriginatorHasAlreadyRegistered
    );
    assert_eq!(update("Sa", "/id-mn/Sa").await, Rsc::Updated);
    // The admin deletes one: a place is free again.
    let r = s
        .send(&admin, Operation::Delete, "/id-in/Sb", "CAdmin", None, None)
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
    assert_eq!(
        announce(&mn, "/id-in/id-mn", "/id-mn/Sc").await,
        Rsc::Created
    );
    assert!(recorded("Sc").await);
}

/// Where the SP said which CSEs each registree may have below it (`[[registration.descendants]]`),
/// a claim outside its rules is left out, at creation and at every update, though nobody else
/// accounts for that CSE: the registree neither speaks for it nor draws requests for it. One
/// registree's rules are not another's, and a registree no rule names keeps no descendant.
#[tokio::test(flavor = "multi_thread")]
async fn descendant_rules_bound_what_a_registree_may_claim() {
    let s = Setup::start_with(
        "[[registration.descendants]]\nregistree = \"/id-mn\"\ncses = [\"/id-lock-*\"]\n\
         [[registration.descendants]]\nregistree = \"/id-mn2\"\ncses = [\"/id-asn2\"]\n",
    )
    .await;
    let (mn, mn2, mn3) = (s.cert("/id-mn"), s.cert("/id-mn2"), s.cert("/id-mn3"));
    let dcse = |r: &Response| {
        r.pc.as_ref()
            .and_then(|p| p.pointer("/m2m:csr/dcse"))
            .cloned()
    };
    for (peer, id, claimed, kept) in [
        (
            &mn,
            "/id-mn",
            &["/id-lock-1", "/id-asn2", "/id-victim", "/id-lock-2"][..],
            json!(["/id-lock-1", "/id-lock-2"]),
        ),
        (
            &mn2,
            "/id-mn2",
            &["/id-asn2", "/id-lock-3"][..],
            json!(["/id-asn2"]),
        ),
        (&mn3, "/id-mn3", &["/id-z"][..], json!([])),
    ] {
        let r = s
            .send(
                peer,
                Operation::Create,
                "cse-in",
                id,
                Some(ResourceType::RemoteCse),
                csr(id, claimed),
            )
            .await;
        assert_eq!(r.rsc, Rsc::Created, "{id}: {:?}", r.pc);
        assert_eq!(dcse(&r), Some(kept), "{id} claimed {claimed:?}");
    }
    for (peer, who, from, speaks) in [
        (&mn, "MN", "/id-lock-1/Cvalve", true),
        (&mn, "MN", "//m2m.example.com/id-lock-2", true),
        (&mn, "MN", "/id-victim/Cvalve", false),
        (&mn, "MN", "/id-victim", false),
        (&mn, "MN", "/id-asn2/Cvalve", false),
        (&mn2, "MN2", "/id-asn2/Cvalve", true),
        (&mn2, "MN2", "/id-lock-3/Cvalve", false),
        (&mn3, "MN3", "/id-z/Cvalve", false),
    ] {
        s.assert_relays(peer, from, speaks, who).await;
    }
    // An S-stem AE registered at a CSE it lists: announced through it, then relayed by it.
    let r = s
        .send(
            &mn,
            Operation::Create,
            "/id-in/id-in",
            "/id-lock-1/Slock",
            Some(ResourceType::AeAnnc),
            Some(json!({"m2m:aeA": {"lnk": "/id-lock-1/Slock", "api": "Nlock", "lbl": ["Credential-ID:"]}})),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    s.assert_relays(&mn, "/Slock", true, "MN").await;
    // Requests for a CSE it may list go down to it (unreachable here: 5103); for one it tried to
    // claim, nowhere: nobody here accounts for it (4004).
    let admin = s.psk(ADMIN_KPSA, Some("CAdmin"));
    let routed = |to: &'static str| {
        let (s, admin) = (&s, admin.clone());
        async move {
            s.send(&admin, Operation::Retrieve, to, "CAdmin", None, None)
                .await
                .rsc
        }
    };
    for (to, rsc) in [
        ("/id-lock-1/cse", Rsc::TargetNotReachable),
        ("//m2m.example.com/id-lock-2/cse", Rsc::TargetNotReachable),
        ("/id-asn2/cse", Rsc::TargetNotReachable),
        ("/id-victim/cse", Rsc::NotFound),
        ("//m2m.example.com/id-victim/cse", Rsc::NotFound),
        ("/id-z/cse", Rsc::NotFound),
        ("/id-lock-9/cse", Rsc::NotFound),
    ] {
        assert_eq!(routed(to).await, rsc, "{to}");
    }
    // An update is judged as the creation was, and routing follows the new list at once.
    let r = s
        .send(
            &mn,
            Operation::Update,
            "cse-in/id-mn",
            "/id-mn",
            None,
            Some(json!({"m2m:csr": {"dcse": ["/id-victim", "/id-lock-9"]}})),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);
    assert_eq!(dcse(&r), Some(json!(["/id-lock-9"])));
    for (to, rsc) in [
        ("/id-lock-9/cse", Rsc::TargetNotReachable),
        ("/id-lock-1/cse", Rsc::NotFound),
        ("/id-victim/cse", Rsc::NotFound),
        ("/id-asn2/cse", Rsc::TargetNotReachable),
    ] {
        assert_eq!(routed(to).await, rsc, "{to} after the update");
    }
    // The CSE it no longer lists takes its announced AEs with it.
    for from in ["/Slock", "/id-lock-1/Cvalve"] {
        assert_eq!(
            s.relayed(&mn, from).await,
            Rsc::OriginatorNotAuthenticated,
            "{from} after the update"
        );
    }
    // A registree that goes takes its list with it.
    let r = s
        .send(
            &admin,
            Operation::Delete,
            "cse-in/id-mn2",
            "CAdmin",
            None,
            None,
        )
        .await;
    assert_eq!(r.rsc, Rsc::Deleted, "{:?}", r.pc);
    assert_eq!(routed("/id-asn2/cse").await, Rsc::NotFound);
}

/// A registree relays only for its own tree (TS-0001 clause 10.2.2.4: its descendantCSEs): the
/// CSEs its `dcse` lists as kept here, and their AEs. A claim on a CSE that this CSE, its
/// registrar, another registree or another registree's list accounts for is left out (first
/// come, first kept), so a sibling's descendants, or a CSE nobody listed, are nobody's to speak for.
#[tokio::test(flavor = "multi_thread")]
async fn a_registree_relays_only_for_the_cses_below_it() {
    let s = Setup::start().await;
    let (mn, mn2) = (s.cert("/id-mn"), s.cert("/id-mn2"));
    let r = s
        .send(
            &mn,
            Operation::Create,
            "cse-in",
            "/id-mn",
            Some(ResourceType::RemoteCse),
            csr(
                "/id-mn",
                &[
                    "/id-asn",
                    "/id-in",
                    "/id-mn",
                    "//m2m.example.com/id-x",
                    "/Sx",
                ],
            ),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    assert_eq!(
        r.pc.as_ref().and_then(|p| p.pointer("/m2m:csr/dcse")),
        Some(&json!(["/id-asn"]))
    );
    let r = s
        .send(
            &mn2,
            Operation::Create,
            "cse-in",
            "/id-mn2",
            Some(ResourceType::RemoteCse),
            csr("/id-mn2", &["/id-asn", "/id-asn2", "/id-mn"]),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    assert_eq!(
        r.pc.as_ref().and_then(|p| p.pointer("/m2m:csr/dcse")),
        Some(&json!(["/id-asn2"])),
        "the MN's descendant and the MN itself are not the other MN's"
    );
    for (peer, who, from, speaks) in [
        (&mn, "MN", "/id-asn", true),
        (&mn, "MN", "/id-asn/Cvalve", true),
        (&mn, "MN", "//m2m.example.com/id-asn/Cvalve", true),
        (&mn, "MN", "/id-mn/Cvalve", true),
        (&mn, "MN", "/id-asn2/Cvalve", false),
        (&mn, "MN", "/id-unknown/Cvalve", false),
        (&mn, "MN", "/id-unknown", false),
        (&mn, "MN", "//other.example.org/id-asn/Cvalve", false),
        (&mn, "MN", "/Sunannounced", false),
        (&mn2, "MN2", "/id-asn/Cvalve", false),
        (&mn2, "MN2", "/id-asn", false),
        (&mn2, "MN2", "/id-asn2/Cvalve", true),
        (&mn2, "MN2", "/id-mn/Cvalve", false),
        // Neither registrar nor registree: itself only.
        (
            &s.cert("/id-x"),
            "an unregistered CSE",
            "/id-x/Cvalve",
            false,
        ),
    ] {
        s.assert_relays(peer, from, speaks, who).await;
    }
    // Its list is the registree's to change, and a CSE it let go is free for another one.
    let r = s
        .send(
            &mn,
            Operation::Update,
            "cse-in/id-mn",
            "/id-mn",
            None,
            Some(json!({"m2m:csr": {"dcse": []}})),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);
    let r = s
        .send(
            &mn2,
            Operation::Update,
            "cse-in/id-mn2",
            "/id-mn2",
            None,
            Some(json!({"m2m:csr": {"dcse": ["/id-asn", "/id-asn2"]}})),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);
    assert_eq!(
        r.pc.as_ref().and_then(|p| p.pointer("/m2m:csr/dcse")),
        Some(&json!(["/id-asn", "/id-asn2"]))
    );
    assert_eq!(
        s.relayed(&mn, "/id-asn/Cvalve").await,
        Rsc::OriginatorNotAuthenticated
    );
    s.assert_relays(&mn2, "/id-asn/Cvalve", true, "MN2").await;
    // Nobody else changes a registree's list, not even one a policy lets update the rest.
    let admin = s.psk(ADMIN_KPSA, Some("CAdmin"));
    let acp = json!({"m2m:acp": {"rn": "csrs", "pv": {"acr": [{"acor": ["/id-mn2", "/id-mn/Cx"], "acop": 63}]},
        "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}});
    let r = s
        .send(
            &admin,
            Operation::Create,
            "cse-in",
            "CAdmin",
            Some(ResourceType::AccessControlPolicy),
            Some(acp),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let r = s
        .send(
            &admin,
            Operation::Update,
            "cse-in/id-mn",
            "CAdmin",
            None,
            Some(json!({"m2m:csr": {"acpi": ["cse-in/csrs"]}})),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Updated, "{:?}", r.pc);
    let r = s
        .send(
            &mn2,
            Operation::Update,
            "cse-in/id-mn",
            "/id-mn2",
            None,
            Some(json!({"m2m:csr": {"lbl": ["granted"]}})),
        )
        .await;
    assert_eq!(
        r.rsc,
        Rsc::Updated,
        "the policy grants the rest: {:?}",
        r.pc
    );
    let r = s
        .send(
            &mn2,
            Operation::Update,
            "cse-in/id-mn",
            "/id-mn2",
            None,
            Some(json!({"m2m:csr": {"dcse": ["/id-asn3"]}})),
        )
        .await;
    assert_eq!(r.rsc, Rsc::OriginatorHasNoPrivilege, "{:?}", r.pc);
    // Nor an AE the registree relays, though a policy lets it update the rest.
    for (pc, want) in [
        (json!({"m2m:csr": {"lbl": ["by Cx"]}}), Rsc::Updated),
        (
            json!({"m2m:csr": {"dcse": []}}),
            Rsc::OriginatorHasNoPrivilege,
        ),
    ] {
        let r = s
            .send(
                &mn,
                Operation::Update,
                "cse-in/id-mn",
                "/id-mn/Cx",
                None,
                Some(pc.clone()),
            )
            .await;
        assert_eq!(r.rsc, want, "{pc}: {:?}", r.pc);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_association_is_bound_to_this_cse_itself() {
    let s = Setup::start().await;
    for id in [
        "/id-in",
        "//m2m.example.com/id-in",
        "//M2M.EXAMPLE.COM/id-in",
    ] {
        let proof = m2m_security::tls::Authenticated::Psk(Association {
            mode: SaeMode::ProvisionedKey,
            credential: CredentialId::parse("12-x@in.example.com").unwrap(),
            entity: Some(s.entity(id)),
        });
        let e = s.cse.bind_association(proof).unwrap_err();
        assert!(e.contains("this CSE itself"), "{id}: {e}");
    }
    let ok = m2m_security::tls::Authenticated::Psk(Association {
        mode: SaeMode::ProvisionedKey,
        credential: CredentialId::parse("12-x@in.example.com").unwrap(),
        entity: Some(s.entity("/id-mn")),
    });
    assert!(s.cse.bind_association(ok).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Class 8: what refusals and notifications give away

#[tokio::test(flavor = "multi_thread")]
async fn a_notify_to_an_ae_needs_the_notify_privilege() {
    let s = Setup::start().await;
    // A stranger AE registers over its own credential, then notifies the lock.
    let free = s.psk(FREE_KPSA, None);
    let r = s
        .send(
            &free,
            Operation::Create,
            "cse-in",
            "Cstranger",
            Some(ResourceType::Ae),
            ae("stranger"),
        )
        .await;
    assert_eq!(r.rsc, Rsc::Created, "{:?}", r.pc);
    let sgn = Some(
        json!({"m2m:sgn": {"sur": "/id-in/sub1", "nev": {"rep": {"m2m:cin": {"con": "UNLOCKED"}}, "net": 3}}}),
    );
    for to in ["cse-in/lock", "Clock-AE1", "/id-in/Clock-AE1"] {
        let r = s
            .send(&free, Operation::Notify, to, "Cstranger", None, sgn.clone())
            .await;
        assert_eq!(
            r.rsc,
            Rsc::OriginatorHasNoPrivilege,
            "notify {to}: {:?}",
            r.pc
        );
        assert_says_nothing(&r, to);
    }
    // From the CSE hosting a subscription (this one, or a CSE peer as itself), it is relayed (the
    // lock has no poa here: 5103, but not refused).
    for peer in [Peer::internal(), s.cert("/id-mn")] {
        let from = if peer.is_internal() {
            "/id-in"
        } else {
            "/id-mn"
        };
        let r = s
            .send(
                &peer,
                Operation::Notify,
                "cse-in/lock",
                from,
                None,
                sgn.clone(),
            )
            .await;
        assert_eq!(r.rsc, Rsc::TargetNotReachable, "{from}: {:?}", r.pc);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_verification_reflects_nothing() {
    let s = Setup::start().await;
    let lock = s.psk(LOCK_KPSA, Some("Clock-AE1"));
    let sub = |nu: &str| Some(json!({"m2m:sub": {"rn": "s", "nu": [nu]}}));
    // A malformed target is the requester's error.
    for nu in [
        "ftp://x",
        "http://",
        "http://@/x",
        "not an id",
        "https://user@198.51.100.1/",
    ] {
        let r = s
            .send(
                &lock,
                Operation::Create,
                "cse-in/lock/state",
                "Clock-AE1",
                Some(ResourceType::Subscription),
                sub(nu),
            )
            .await;
        assert_eq!(r.rsc, Rsc::BadRequest, "{nu}: {:?}", r.pc);
    }
    // Closed port, refused, nothing listening: one answer, which says nothing about the target.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut texts = Vec::new();
    for nu in [
        format!("http://127.0.0.1:{port}/n"),
        "http://127.0.0.1:9/n".to_owned(),
    ] {
        let r = s
            .send(
                &lock,
                Operation::Create,
                "cse-in/lock/state",
                "Clock-AE1",
                Some(ResourceType::Subscription),
                sub(&nu),
            )
            .await;
        assert_eq!(
            r.rsc,
            Rsc::SubscriptionVerificationInitiationFailed,
            "{nu}: {:?}",
            r.pc
        );
        let dbg = r.dbg().unwrap_or("").to_owned();
        assert!(
            !dbg.contains("127.0.0.1") && !dbg.contains("refused") && !dbg.contains("5103"),
            "{dbg}"
        );
        texts.push(dbg);
    }
    assert_eq!(texts[0], texts[1]);
}

// ---------------------------------------------------------------------------------------------
// The proof each kind of peer gives, as the access decision sees it

#[tokio::test(flavor = "multi_thread")]
async fn every_peer_gets_the_proof_it_earned() -> M2mResult<()> {
    let s = Setup::start().await;
    // An ACP rule for the lock's ID without acaf (RETRIEVE) and with acaf (CREATE): the first
    // admits vouched and authenticated originators, the second authenticated ones only.
    let cases: Vec<(&str, Peer, &str, Proof)> = vec![
        (
            "the lock's association",
            s.psk(LOCK_KPSA, Some("Clock-AE1")),
            "Clock-AE1",
            Proof::Authenticated,
        ),
        (
            "anonymous",
            Peer::plain(addr(), PlainTrust::Anonymous),
            "Clock-AE1",
            Proof::Claimed,
        ),
        (
            "trusted",
            Peer::plain(addr(), PlainTrust::Trusted),
            "Clock-AE1",
            Proof::Vouched,
        ),
    ];
    for (what, peer, from, proof) in cases {
        let read = s
            .send(
                &peer,
                Operation::Retrieve,
                "cse-in/lock/state/la",
                from,
                None,
                None,
            )
            .await;
        assert_eq!(
            read.rsc == Rsc::Ok,
            proof >= Proof::Vouched,
            "{what} read: {:?}",
            read.pc
        );
        let write = s.cin(&peer, from, "LOCKED").await;
        assert_eq!(
            write.rsc == Rsc::Created,
            proof == Proof::Authenticated,
            "{what} write: {:?}",
            write.pc
        );
    }
    Ok(())
}
