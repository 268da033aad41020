//! The MQTT binding's topics (TS-0010 clauses 6.4.2-6.4.4, 6.5.4): which entity sends, which
//! receives, and the serialization of the payload, as the topic names them. The payload itself is
//! a whole primitive ([`crate::primitive_message`]).
//!
//! ```text
//! /oneM2M/req/<originator>/<receiver>/<type>        a request
//! /oneM2M/resp/<originator>/<receiver>/<type>       its response (originator: who asked)
//! /oneM2M/reg_req/<Credential-ID>/<receiver>/<type> a request of an entity without an ID yet
//! /oneM2M/reg_resp/<Credential-ID>/<receiver>/<type>
//! ```
//!
//! An ID in a topic is the SP-relative ID without its leading `/`, its other `/` written `:`;
//! an absolute ID (Mcc') starts with `:` instead of `//`.

use crate::error::{M2mError, M2mResult};
use crate::identity::{EntityId, Home};
use crate::serialization::Serialization;
use std::fmt;

/// What a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Request,
    Response,
    /// Initial registration: the originator is a Credential-ID (clause 6.4.4).
    RegistrationRequest,
    RegistrationResponse,
}

impl Kind {
    fn level(self) -> &'static str {
        match self {
            Kind::Request => "req",
            Kind::Response => "resp",
            Kind::RegistrationRequest => "reg_req",
            Kind::RegistrationResponse => "reg_resp",
        }
    }

    /// The kind of the answer to this one.
    pub fn answer(self) -> Kind {
        match self {
            Kind::Request => Kind::Response,
            Kind::RegistrationRequest => Kind::RegistrationResponse,
            other => other,
        }
    }
}

/// A oneM2M topic, its ID levels as written in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub kind: Kind,
    /// The entity that sent the request (for a response too): an ID in topic form, or a
    /// Credential-ID for the registration kinds.
    pub originator: String,
    /// The entity that receives the request, in topic form.
    pub receiver: String,
    pub serialization: Serialization,
}

fn refuse(topic: &str, why: &str) -> M2mError {
    M2mError::bad_request(format!("topic {topic:?} {why} (TS-0010 clause 6.4)"))
}

/// Whether a topic level is one (no separator or wildcard, not empty).
fn is_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

impl Topic {
    pub fn new(kind: Kind, originator: &str, receiver: &str, ser: Serialization) -> Topic {
        Topic {
            kind,
            originator: originator.to_owned(),
            receiver: receiver.to_owned(),
            serialization: ser,
        }
    }

    /// Reads `/oneM2M/<kind>/<originator>/<receiver>/<type>`.
    pub fn parse(topic: &str) -> M2mResult<Topic> {
        let rest = topic
            .strip_prefix("/oneM2M/")
            .ok_or_else(|| refuse(topic, "does not start with /oneM2M/"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [kind, originator, receiver, ty] = parts[..] else {
            return Err(refuse(
                topic,
                "is not /oneM2M/<kind>/<originator>/<receiver>/<type>",
            ));
        };
        let kind = match kind {
            "req" => Kind::Request,
            "resp" => Kind::Response,
            "reg_req" => Kind::RegistrationRequest,
            "reg_resp" => Kind::RegistrationResponse,
            _ => return Err(refuse(topic, "has no oneM2M kind")),
        };
        if !is_level(originator) || !is_level(receiver) {
            return Err(refuse(topic, "has an empty or wildcard ID"));
        }
        let serialization = Serialization::from_ct(ty)
            .ok_or_else(|| refuse(topic, "ends with no type (json, cbor or xml)"))?;
        Ok(Topic {
            kind,
            originator: originator.to_owned(),
            receiver: receiver.to_owned(),
            serialization,
        })
    }

    /// The topic its answer goes to: same IDs, same serialization.
    pub fn answer(&self) -> Topic {
        Topic {
            kind: self.kind.answer(),
            ..self.clone()
        }
    }

    /// The filter a receiver subscribes with to get every request of `kind` for `receiver`
    /// (clause 6.4.3): `/oneM2M/<kind>/+/<receiver>/#`.
    pub fn receiver_filter(kind: Kind, receiver: &str) -> String {
        format!("/oneM2M/{}/+/{receiver}/#", kind.level())
    }

    /// The filter an originator subscribes with to get its answers (clause 6.5.4):
    /// `/oneM2M/<kind>/<originator>/#`.
    pub fn originator_filter(kind: Kind, originator: &str) -> String {
        format!("/oneM2M/{}/{originator}/#", kind.level())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = match self.serialization {
            Serialization::Json => "json",
            Serialization::Cbor => "cbor",
            Serialization::Xml => "xml",
        };
        write!(
            f,
            "/oneM2M/{}/{}/{}/{ty}",
            self.kind.level(),
            self.originator,
            self.receiver
        )
    }
}

/// An ID in topic form (clause 6.4.2): `/cse/Cae` -> `cse:Cae`, `//sp/cse` -> `:sp:cse`, a bare
/// AE-ID-Stem as it is.
pub fn topic_id(id: &str) -> String {
    match id.strip_prefix("//") {
        Some(rest) => format!(":{}", rest.replace('/', ":")),
        None => id.trim_start_matches('/').replace('/', ":"),
    }
}

/// The forms in which a topic may name `entity` to the CSE `home`: its SP-relative ID (or
/// absolute, outside the SP) in topic form, and for a local AE its bare AE-ID-Stem (clause 7.4).
pub fn topic_forms(entity: &EntityId, home: &Home) -> Vec<String> {
    let mut forms = vec![topic_id(&entity.as_seen_from(home))];
    if let Some(stem) = entity.local_stem(home) {
        if !forms.iter().any(|f| f == stem.as_str()) {
            forms.push(stem.as_str().to_owned());
        }
    }
    forms
}

/// The entities an originator level may name, as `home` reads IDs: a local AE-ID-Stem, and an
/// SP-relative (or absolute) CSE-ID or AE-ID. Which one a request means is decided against its
/// From.
pub fn topic_entities(level: &str, home: &Home) -> Vec<EntityId> {
    let mut out = Vec::new();
    let id = match level.strip_prefix(':') {
        Some(rest) => format!("//{}", rest.replace(':', "/")),
        None => format!("/{}", level.replace(':', "/")),
    };
    if !level.contains(':') {
        if let Ok(e) = EntityId::parse(level, home) {
            out.push(e);
        }
    }
    if let Ok(e) = EntityId::parse(&id, home) {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// An `mqtt://` or `mqtts://` point of access or notification URI (clause 6.6): the broker's
/// authority and, for a notificationURI, the whole topic it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path without its leading `/`: the topic of a notification URI.
    pub path: String,
}

impl MqttUrl {
    pub fn parse(url: &str) -> M2mResult<MqttUrl> {
        let bad = |why: &str| M2mError::bad_request(format!("MQTT URL {url:?}: {why}"));
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad("not mqtt:// or mqtts://"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("no host, or user info"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, default_port),
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            None => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if path.contains(['+', '#']) {
            return Err(bad("a wildcard in the topic"));
        }
        Ok(MqttUrl {
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// `host:port`, IPv6 in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{CseId, SpId};

    fn home() -> Home {
        Home::cse(
            SpId::parse("in.provider.com").unwrap(),
            CseId::parse("in-cse").unwrap(),
        )
    }

    #[test]
    fn topics_read_and_write_as_clause_6_4_names_them() {
        let t = Topic::parse("/oneM2M/req/Cae1/in-cse/json").unwrap();
        assert_eq!(
            t,
            Topic::new(Kind::Request, "Cae1", "in-cse", Serialization::Json)
        );
        assert_eq!(t.to_string(), "/oneM2M/req/Cae1/in-cse/json");
        assert_eq!(t.answer().to_string(), "/oneM2M/resp/Cae1/in-cse/json");
        let r = Topic::parse("/oneM2M/reg_req/12-AE1-Lock@in.provider.com/in-cse/cbor").unwrap();
        assert_eq!(r.kind, Kind::RegistrationRequest);
        assert_eq!(r.serialization, Serialization::Cbor);
        assert_eq!(
            r.answer().to_string(),
            "/oneM2M/reg_resp/12-AE1-Lock@in.provider.com/in-cse/cbor"
        );
        assert_eq!(
            Topic::receiver_filter(Kind::Request, "in-cse"),
            "/oneM2M/req/+/in-cse/#"
        );
        assert_eq!(
            Topic::originator_filter(Kind::Response, "in-cse"),
            "/oneM2M/resp/in-cse/#"
        );
    }

    #[test]
    fn malformed_topics_are_refused() {
        for t in [
            "oneM2M/req/a/b/json",
            "/oneM2M/req/a/b",
            "/oneM2M/req/a/b/json/x",
            "/oneM2M/req//b/json",
            "/oneM2M/req/a/+/json",
            "/oneM2M/req/a/b/yaml",
            "/oneM2M/other/a/b/json",
            "/onem2m/req/a/b/json",
        ] {
            assert!(Topic::parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn ids_take_their_topic_form_and_back() {
        let h = home();
        assert_eq!(topic_id("/in-cse/Cae1"), "in-cse:Cae1");
        assert_eq!(
            topic_id("//in.provider.com/in-cse"),
            ":in.provider.com:in-cse"
        );
        assert_eq!(topic_id("Sae1"), "Sae1");
        let c_ae = EntityId::parse("Cae1", &h).unwrap();
        assert_eq!(topic_forms(&c_ae, &h), vec!["in-cse:Cae1", "Cae1"]);
        let s_ae = EntityId::parse("Sae1", &h).unwrap();
        assert_eq!(topic_forms(&s_ae, &h), vec!["Sae1"]);
        let mn = EntityId::parse("/mn-cse", &h).unwrap();
        assert_eq!(topic_forms(&mn, &h), vec!["mn-cse"]);
        for form in topic_forms(&c_ae, &h) {
            assert!(topic_entities(&form, &h).contains(&c_ae), "{form}");
        }
        assert!(topic_entities("mn-cse", &h).contains(&mn));
        assert!(topic_entities("Sae1", &h).contains(&s_ae));
        let abs = EntityId::parse("//other.example/x-cse", &h).unwrap();
        assert_eq!(topic_forms(&abs, &h), vec![":other.example:x-cse"]);
        assert_eq!(topic_entities(":other.example:x-cse", &h), vec![abs]);
        // Both readings of a bare level that may be a stem or a CSE-ID.
        assert_eq!(topic_entities("Cx", &h).len(), 2);
    }

    #[test]
    fn mqtt_urls() {
        let u = MqttUrl::parse("mqtts://broker.example:8884/a/b").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "broker.example", 8884, "a/b")
        );
        assert_eq!(MqttUrl::parse("mqtt://h").unwrap().port, 1883);
        assert_eq!(MqttUrl::parse("mqtts://h/").unwrap().port, 8883);
        assert_eq!(
            MqttUrl::parse("mqtts://[::1]:9/t").unwrap().authority(),
            "[::1]:9"
        );
        for bad in [
            "http://h",
            "mqtt://",
            "mqtt://u@h",
            "mqtt://h:x",
            "mqtt://h/a/#",
        ] {
            assert!(MqttUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
