//! The Ub bootstrapping run (3GPP TS 33.220 clause 4.5.2, TS 24.109 clause 4.4) as pure logic,
//! both sides: the BSF challenges a subscriber (its HSS's vector in an HTTP Digest AKA
//! challenge), checks the answer (RES, or AUTS to resynchronise), and on success names the
//! bootstrapped key Ks by its B-TID; the UE runs its USIM on the challenge and answers. The
//! processes (`m2m bsf`, the UE side of `m2m ae`) carry these values over HTTP.

use super::aka::{self, Refusal};
use super::digest_aka::{self, Exchange, ALGORITHM, QOP};
use super::key_derivation::{b_tid, Ks};
use super::milenage::{Block, Milenage};
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// A subscriber as the BSF's HSS knows it: its IMPI, K and OPc, and the next SQN to use.
pub struct Subscriber {
    pub impi: String,
    pub milenage: Milenage,
    pub next_sqn: u64,
    pub amf: [u8; 2],
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("impi", &self.impi)
            .finish_non_exhaustive()
    }
}

/// What both sides keep of a successful run to protect the BSF's answer: the Authentication-Info
/// header's `rspauth` (RFC 2617 clause 3.2.3) over the 200 body, which only a party that knows RES
/// computes. On Ub over plain HTTP it is the only integrity protection of the B-TID and lifetime.
pub struct AuthInfo {
    res: Zeroizing<[u8; 8]>,
    username: String,
    realm: String,
    nonce: String,
    uri: String,
    nc: String,
    cnonce: String,
}

impl fmt::Debug for AuthInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthInfo(RES redacted)")
    }
}

impl AuthInfo {
    fn exchange(&self) -> Exchange<'_> {
        Exchange {
            username: &self.username,
            realm: &self.realm,
            nonce: &self.nonce,
            method: "",
            uri: &self.uri,
            nc: &self.nc,
            cnonce: &self.cnonce,
            body: b"",
        }
    }

    /// The BSF's Authentication-Info value for the 200 `body`.
    pub fn header(&self, body: &[u8]) -> String {
        format!(
            "rspauth={}, cnonce={}, nc={}, qop={QOP}",
            digest_aka::quote(&digest_aka::rspauth(&self.exchange(), &*self.res, body)),
            digest_aka::quote(&self.cnonce),
            self.nc
        )
    }

    /// The UE's check of the BSF's Authentication-Info over the 200 `body`.
    pub fn check(&self, header: &str, body: &[u8]) -> bool {
        let Ok(p) = digest_aka::parse(header) else {
            return false;
        };
        let want = digest_aka::rspauth(&self.exchange(), &*self.res, body);
        let got = p.get("rspauth").map(String::as_str).unwrap_or_default();
        bool::from(subtle::ConstantTimeEq::ct_eq(
            want.as_bytes(),
            got.as_bytes(),
        ))
    }
}

/// A challenge the BSF sent and waits for the answer to.
pub struct Pending {
    pub impi: String,
    pub rand: Block,
    pub nonce: String,
    xres: [u8; 8],
    ks: Ks,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("impi", &self.impi)
            .finish_non_exhaustive()
    }
}

/// The BSF's challenge: what it keeps, and the WWW-Authenticate value it sends (401); `None`
/// once the subscriber's SQN is spent (48 bits).
pub fn challenge(sub: &mut Subscriber, realm: &str, rand: Block) -> Option<(Pending, String)> {
    if sub.next_sqn > aka::MAX_SQN {
        return None;
    }
    let v = aka::vector(&sub.milenage, rand, sub.next_sqn, sub.amf);
    sub.next_sqn += 1;
    let nonce = digest_aka::nonce(&rand, &v.autn, &[]);
    let header = format!(
        "Digest realm={}, nonce={}, algorithm={ALGORITHM}, qop={}",
        digest_aka::quote(realm),
        digest_aka::quote(&nonce),
        digest_aka::quote(QOP),
    );
    let pending = Pending {
        impi: sub.impi.clone(),
        rand,
        nonce,
        xres: v.xres,
        ks: Ks::new(&v.ck, &v.ik),
    };
    Some((pending, header))
}

/// The outcome of the UE's answer at the BSF.
#[derive(Debug)]
pub enum Verdict {
    /// RES proven: Ks is bootstrapped, named by the B-TID; `auth_info` signs the 200 answer.
    Bootstrapped {
        b_tid: String,
        ks: Ks,
        rand: Block,
        auth_info: Box<AuthInfo>,
    },
    /// AUTS authentic: the USIM is at this SQN; challenge again above it.
    Resynchronise { sqn_ms: u64 },
    /// Anything else; the reason is for the BSF's log only.
    Refused(&'static str),
}

/// The request a UE answers with: its method, URI and body enter the digest.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub body: &'a [u8],
}

/// Checks the Authorization of the UE's second request against `pending`.
pub fn verify(
    pending: Pending,
    sub: &Subscriber,
    realm: &str,
    bsf_domain: &str,
    authorization: &str,
    req: Request<'_>,
) -> Verdict {
    let Ok(p) = digest_aka::parse(authorization) else {
        return Verdict::Refused("malformed Authorization");
    };
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if get("username") != pending.impi || get("realm") != realm || get("nonce") != pending.nonce {
        return Verdict::Refused("username, realm or nonce is not the challenge's");
    }
    if get("uri") != req.uri || !get("qop").eq_ignore_ascii_case(QOP) {
        return Verdict::Refused("uri or qop is not the request's");
    }
    // RFC 2617 clause 3.2.2: with a qop, cnonce and an 8-hex-digit nc are required.
    let nc = get("nc");
    if get("cnonce").is_empty() || nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Verdict::Refused("cnonce or nc missing or malformed");
    }
    if !get("algorithm").is_empty() && !get("algorithm").eq_ignore_ascii_case(ALGORITHM) {
        return Verdict::Refused("another digest algorithm");
    }
    let x = Exchange {
        username: &pending.impi,
        realm,
        nonce: &pending.nonce,
        method: req.method,
        uri: req.uri,
        nc: get("nc"),
        cnonce: get("cnonce"),
        body: req.body,
    };
    let same = |want: &str| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            want.as_bytes(),
            get("response").as_bytes(),
        ))
    };
    if let Some(auts) = p.get("auts") {
        // A resynchronisation's digest uses an empty password (RFC 3310 clause 3.4).
        let decoded = base64::engine::general_purpose::STANDARD.decode(auts);
        let Ok(Ok(auts)) = decoded.map(<[u8; 14]>::try_from) else {
            return Verdict::Refused("malformed AUTS");
        };
        if !same(&digest_aka::response(&x, b"")) {
            return Verdict::Refused("the resynchronisation's digest is wrong");
        }
        return match aka::resynchronise(&sub.milenage, &pending.rand, &auts) {
            Some(sqn_ms) => Verdict::Resynchronise { sqn_ms },
            None => Verdict::Refused("AUTS is not the subscriber's"),
        };
    }
    if !same(&digest_aka::response(&x, &pending.xres)) {
        return Verdict::Refused("RES is wrong");
    }
    let auth_info = Box::new(AuthInfo {
        res: Zeroizing::new(pending.xres),
        username: pending.impi.clone(),
        realm: realm.to_owned(),
        nonce: pending.nonce.clone(),
        uri: req.uri.to_owned(),
        nc: nc.to_owned(),
        cnonce: get("cnonce").to_owned(),
    });
    Verdict::Bootstrapped {
        b_tid: b_tid(&pending.rand, bsf_domain),
        ks: pending.ks,
        rand: pending.rand,
        auth_info,
    }
}

/// The body of the BSF's 200 answer (TS 24.109 Annex C): the B-TID and the key's lifetime
/// (an xsd:dateTime).
pub fn bootstrapping_info(b_tid: &str, lifetime: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<BootstrappingInfo xmlns=\"uri:3gpp-gba\">\
         <btid>{}</btid><lifetime>{}</lifetime></BootstrappingInfo>",
        xml_escape(b_tid),
        xml_escape(lifetime)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The B-TID and lifetime of a BootstrappingInfo body.
pub fn read_bootstrapping_info(body: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = start + body[start..].find(&format!("</{name}>"))?;
        Some(
            body[start..end]
                .trim()
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    Some((field("btid")?, field("lifetime")?))
}

/// What the UE answers a challenge with.
#[derive(Debug)]
pub enum UeAnswer {
    /// RES proven in the digest; Ks is the UE's once the BSF answers 200 with the B-TID.
    Authenticated {
        authorization: String,
        ks: Ks,
        rand: Block,
        auth_info: Box<AuthInfo>,
    },
    /// The SQN was not fresh: AUTS sent; the BSF challenges again.
    Resynchronising { authorization: String },
}

/// Why the UE refused a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UeRefusal {
    /// Not a Digest AKA challenge this UE can read.
    Malformed(&'static str),
    /// AUTN's MAC is not the subscriber's network's: not the home network (or a forged BSF).
    NotTheNetwork,
}

/// The UE's side: runs the USIM on the challenge (`www_authenticate`), `highest` its highest
/// accepted SQN, and writes the Authorization of the next request.
pub fn answer(
    usim: &Milenage,
    highest: &mut u64,
    impi: &str,
    www_authenticate: &str,
    req: Request<'_>,
    cnonce: &str,
) -> Result<UeAnswer, UeRefusal> {
    let p: BTreeMap<String, String> = digest_aka::parse(www_authenticate)
        .map_err(|_| UeRefusal::Malformed("not a Digest challenge"))?;
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if !get("algorithm").eq_ignore_ascii_case(ALGORITHM) {
        return Err(UeRefusal::Malformed("not AKAv1-MD5"));
    }
    if !get("qop")
        .split(',')
        .any(|q| q.trim().eq_ignore_ascii_case(QOP))
    {
        return Err(UeRefusal::Malformed(
            "the challenge does not offer qop auth-int",
        ));
    }
    let opaque = p.get("opaque").cloned();
    let realm = get("realm");
    let nonce = get("nonce");
    let (rand, autn) = digest_aka::rand_autn(nonce).ok_or(UeRefusal::Malformed("bad nonce"))?;
    let x = Exchange {
        username: impi,
        realm,
        nonce,
        method: req.method,
        uri: req.uri,
        nc: "00000001",
        cnonce,
        body: req.body,
    };
    let header = |response: &str, auts: Option<&str>| {
        let mut h = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, qop={QOP}, nc=00000001, cnonce={}, \
             algorithm={ALGORITHM}, response={}",
            digest_aka::quote(impi),
            digest_aka::quote(realm),
            digest_aka::quote(nonce),
            digest_aka::quote(req.uri),
            digest_aka::quote(cnonce),
            digest_aka::quote(response),
        );
        if let Some(a) = auts {
            h.push_str(&format!(", auts={}", digest_aka::quote(a)));
        }
        // RFC 2617 clause 3.2.2: opaque goes back as the server sent it.
        if let Some(o) = &opaque {
            h.push_str(&format!(", opaque={}", digest_aka::quote(o)));
        }
        h
    };
    match aka::authenticate(usim, &rand, &autn, highest) {
        Ok(a) => Ok(UeAnswer::Authenticated {
            authorization: header(&digest_aka::response(&x, &a.res), None),
            ks: Ks::new(&a.ck, &a.ik),
            rand,
            auth_info: Box::new(AuthInfo {
                res: Zeroizing::new(a.res),
                username: impi.to_owned(),
                realm: realm.to_owned(),
                nonce: nonce.to_owned(),
                uri: req.uri.to_owned(),
                nc: "00000001".to_owned(),
                cnonce: cnonce.to_owned(),
            }),
        }),
        Err(Refusal::SyncFailure { auts }) => {
            let auts = base64::engine::general_purpose::STANDARD.encode(auts);
            Ok(UeAnswer::Resynchronising {
                authorization: header(&digest_aka::response(&x, b""), Some(&auts)),
            })
        }
        Err(Refusal::MacFailure) => Err(UeRefusal::NotTheNetwork),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "bsf.example.net";
    const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
    const GET: Request<'static> = Request {
        method: "GET",
        uri: "/",
        body: b"",
    };

    fn keys() -> ([u8; 16], [u8; 16]) {
        (
            hex::decode("465b5ce8b199b49faa5f0a2ee238a6bc")
                .unwrap()
                .try_into()
                .unwrap(),
            hex::decode("cd63cb71954a9f4e48a5994e37a02baf")
                .unwrap()
                .try_into()
                .unwrap(),
        )
    }

    fn subscriber(next_sqn: u64) -> Subscriber {
        let (k, opc) = keys();
        Subscriber {
            impi: IMPI.into(),
            milenage: Milenage::new(k, opc),
            next_sqn,
            amf: [0x80, 0x00],
        }
    }

    #[test]
    fn a_usim_and_the_bsf_agree_on_ks_and_the_b_tid() {
        let mut sub = subscriber(33);
        let (k, opc) = keys();
        let usim = Milenage::new(k, opc);
        let mut highest = 32;
        let (pending, www) = challenge(&mut sub, REALM, [7; 16]).unwrap();
        let www = format!("{www}, opaque=\"bsf-state\"");
        let UeAnswer::Authenticated {
            authorization,
            ks,
            rand,
            auth_info,
        } = answer(&usim, &mut highest, IMPI, &www, GET, "c1").unwrap()
        else {
            panic!("not authenticated");
        };
        assert!(
            authorization.contains("opaque=\"bsf-state\""),
            "{authorization}"
        );
        let Verdict::Bootstrapped {
            b_tid: id,
            ks: bsf_ks,
            auth_info: bsf_info,
            ..
        } = verify(pending, &sub, REALM, "bsf.example.net", &authorization, GET)
        else {
            panic!("refused");
        };
        assert_eq!(ks.expose(), bsf_ks.expose());
        assert_eq!(id, b_tid(&rand, "bsf.example.net"));
        let body = bootstrapping_info(&id, "2026-12-07T10:00:00Z");
        // The BSF signs its answer with RES; the UE checks it, and a changed B-TID fails.
        let info = bsf_info.header(body.as_bytes());
        assert!(auth_info.check(&info, body.as_bytes()));
        let forged = bootstrapping_info("AAAA@bsf.example.net", "2026-12-07T10:00:00Z");
        assert!(!auth_info.check(&info, forged.as_bytes()));
        assert!(!auth_info.check("rspauth=\"00\"", body.as_bytes()));
        assert_eq!(format!("{auth_info:?}"), "AuthInfo(RES redacted)");
        assert_eq!(
            read_bootstrapping_info(&body),
            Some((id.clone(), "2026-12-07T10:00:00Z".to_owned()))
        );
        // The header carries no key material.
        assert!(!authorization.contains(&hex::encode(&ks.expose()[..8])));
    }

    #[test]
    fn a_wrong_key_a_replay_and_a_stale_sqn_are_refused_and_auts_resynchronises() {
        let (k, opc) = keys();
        let usim = Milenage::new(k, opc);
        // A UE with another K: its RES is wrong at the BSF.
        let mut sub = subscriber(10);
        let (pending, www) = challenge(&mut sub, REALM, [1; 16]).unwrap();
        let other = Milenage::new([9; 16], opc);
        assert_eq!(
            answer(&other, &mut 0, IMPI, &www, GET, "c").unwrap_err(),
            UeRefusal::NotTheNetwork,
            "the other USIM refuses the network first"
        );
        // A forged answer with a guessed RES.
        let forged = format!(
            "Digest username=\"{IMPI}\", realm=\"{REALM}\", nonce=\"{}\", uri=\"/\", qop=auth-int, nc=00000001, cnonce=\"c\", response=\"{}\"",
            pending.nonce,
            "0".repeat(32)
        );
        assert!(matches!(
            verify(pending, &sub, REALM, "bsf", &forged, GET),
            Verdict::Refused("RES is wrong")
        ));

        // The USIM is ahead of the HSS (SQN 500 seen): the challenge at SQN 11 is stale.
        let mut highest = 500;
        let (pending, www) = challenge(&mut sub, REALM, [2; 16]).unwrap();
        let UeAnswer::Resynchronising { authorization } =
            answer(&usim, &mut highest, IMPI, &www, GET, "c2").unwrap()
        else {
            panic!("a stale SQN was accepted");
        };
        let Verdict::Resynchronise { sqn_ms } =
            verify(pending, &sub, REALM, "bsf", &authorization, GET)
        else {
            panic!("AUTS not taken");
        };
        assert_eq!(sqn_ms, 500);
        sub.next_sqn = sqn_ms + 1;
        let (pending, www) = challenge(&mut sub, REALM, [3; 16]).unwrap();
        let UeAnswer::Authenticated { authorization, .. } =
            answer(&usim, &mut highest, IMPI, &www, GET, "c3").unwrap()
        else {
            panic!("not authenticated after resynchronisation");
        };
        // The same answer replayed against a new challenge: another nonce, refused.
        let (pending2, _) = challenge(&mut sub, REALM, [4; 16]).unwrap();
        assert!(matches!(
            verify(pending2, &sub, REALM, "bsf", &authorization, GET),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            verify(pending, &sub, REALM, "bsf", &authorization, GET),
            Verdict::Bootstrapped { .. }
        ));
        // Another method, URI or body than the digest covers: refused.
        let (pending, www) = challenge(&mut sub, REALM, [5; 16]).unwrap();
        let UeAnswer::Authenticated { authorization, .. } =
            answer(&usim, &mut highest, IMPI, &www, GET, "c4").unwrap()
        else {
            panic!();
        };
        let post = Request {
            method: "POST",
            uri: "/",
            body: b"x",
        };
        assert!(matches!(
            verify(pending, &sub, REALM, "bsf", &authorization, post),
            Verdict::Refused(_)
        ));
        // Without cnonce, or with a malformed nc: refused before any digest.
        let (pending, www) = challenge(&mut sub, REALM, [6; 16]).unwrap();
        let UeAnswer::Authenticated { authorization, .. } =
            answer(&usim, &mut highest, IMPI, &www, GET, "c5").unwrap()
        else {
            panic!();
        };
        let no_nc = authorization.replace("nc=00000001", "nc=1");
        assert!(matches!(
            verify(pending, &sub, REALM, "bsf", &no_nc, GET),
            Verdict::Refused("cnonce or nc missing or malformed")
        ));
        // A challenge without auth-int is not answered; an SQN past 48 bits is never used.
        let plain = www.replace("qop=\"auth-int\"", "qop=\"auth\"");
        assert!(answer(&usim, &mut highest, IMPI, &plain, GET, "c").is_err());
        sub.next_sqn = aka::MAX_SQN + 1;
        assert!(challenge(&mut sub, REALM, [8; 16]).is_none());
    }
}
