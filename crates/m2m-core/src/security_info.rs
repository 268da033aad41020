//! ESPrim vocabulary: `m2m:securityInfo` and the ESPrim rand objects (TS-0004 clauses 6.3.5.48-6.3.5.52,
//! enumerations 6.3.4.2.35/.40/.41), with the short names of TS-0004 clause 8.2.3.
//!
//! Only the ESPrim (sit 3, 4, 5) and ESCertKE (sit 6, TS-0004 clause 7.5.1.2.12) members are modelled; the
//! dynamic-authorization members of `m2m:securityInfo` are not implemented and are rejected when read, so a
//! peer never sees them ignored.

use serde::{Deserialize, Serialize};

/// The root name of the element in a primitive's Content (`m2m:securityInfo`, short `m2m:seci`).
pub const SECURITY_INFO_ROOT: &str = "m2m:seci";

/// `m2m:securityInfoType` (table 6.3.4.2.35-1), the ESPrim values this project handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum SecurityInfoType {
    /// 3: receiverESPrimRandObject Request.
    ReceiverRandRequest,
    /// 4: receiverESPrimRandObject Response.
    ReceiverRandResponse,
    /// 5: ESPrim Object.
    EsprimObject,
    /// 6: ESCertKE Message.
    EscertkeMessage,
}

impl From<SecurityInfoType> for u8 {
    fn from(t: SecurityInfoType) -> u8 {
        match t {
            SecurityInfoType::ReceiverRandRequest => 3,
            SecurityInfoType::ReceiverRandResponse => 4,
            SecurityInfoType::EsprimObject => 5,
            SecurityInfoType::EscertkeMessage => 6,
        }
    }
}

impl TryFrom<u8> for SecurityInfoType {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            3 => Ok(Self::ReceiverRandRequest),
            4 => Ok(Self::ReceiverRandResponse),
            5 => Ok(Self::EsprimObject),
            6 => Ok(Self::EscertkeMessage),
            _ => Err(format!(
                "securityInfoType {v} is not supported (3, 4, 5 and 6 are)"
            )),
        }
    }
}

/// `m2m:esprimKeyGenAlgID` (table 6.3.4.2.40-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum EsprimKeyGenAlgId {
    /// 1: HMAC-SHA256 (TS-0003 clause 10.3.8.2).
    HmacSha256,
}

impl From<EsprimKeyGenAlgId> for u8 {
    fn from(_: EsprimKeyGenAlgId) -> u8 {
        1
    }
}

impl TryFrom<u8> for EsprimKeyGenAlgId {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(Self::HmacSha256),
            _ => Err(format!(
                "esprimKeyGenAlgID {v} is unknown (1 is HMAC-SHA256)"
            )),
        }
    }
}

/// `m2m:esprimProtocolAndAlgID` (table 6.3.4.2.41-1): JWE Compact Serialization with an AES-GCM `enc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum EsprimProtocolAndAlgId {
    /// 10: JWE compact, enc A128GCM.
    JweA128Gcm,
    /// 11: JWE compact, enc A192GCM.
    JweA192Gcm,
    /// 12: JWE compact, enc A256GCM.
    JweA256Gcm,
}

impl EsprimProtocolAndAlgId {
    /// All values, strongest last.
    pub const ALL: [Self; 3] = [Self::JweA128Gcm, Self::JweA192Gcm, Self::JweA256Gcm];

    /// The JWE `enc` value of this option.
    pub const fn enc(self) -> &'static str {
        match self {
            Self::JweA128Gcm => "A128GCM",
            Self::JweA192Gcm => "A192GCM",
            Self::JweA256Gcm => "A256GCM",
        }
    }

    /// The option whose JWE `enc` is `enc`.
    pub fn from_enc(enc: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.enc() == enc)
    }
}

impl From<EsprimProtocolAndAlgId> for u8 {
    fn from(a: EsprimProtocolAndAlgId) -> u8 {
        match a {
            EsprimProtocolAndAlgId::JweA128Gcm => 10,
            EsprimProtocolAndAlgId::JweA192Gcm => 11,
            EsprimProtocolAndAlgId::JweA256Gcm => 12,
        }
    }
}

impl TryFrom<u8> for EsprimProtocolAndAlgId {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            10 => Ok(Self::JweA128Gcm),
            11 => Ok(Self::JweA192Gcm),
            12 => Ok(Self::JweA256Gcm),
            _ => Err(format!(
                "esprimProtocolAndAlgID {v} is unknown (10, 11, 12 are JWE A128/A192/A256GCM)"
            )),
        }
    }
}

/// `m2m:receiverESPrimRandObject` (table 6.3.5.51-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverEsprimRandObject {
    /// esprimRandID.
    pub esri: String,
    /// esprimRandValue: 128 random bits (this project writes 32 lowercase hex digits).
    pub esrv: String,
    /// esprimRandExpiry (m2m:absRelTimestamp).
    pub esrx: String,
    /// esprimKeyGenAlgIDs.
    pub esks: Vec<EsprimKeyGenAlgId>,
    /// esprimProtocolAndAlgIDs.
    pub espa: Vec<EsprimProtocolAndAlgId>,
}

/// `m2m:originatorESPrimRandObject` (table 6.3.5.50-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginatorEsprimRandObject {
    /// esprimRandID.
    pub esri: String,
    /// esprimRandValue: 128 random bits (this project writes 32 lowercase hex digits).
    pub esrv: String,
    /// esprimRandExpiry (m2m:absRelTimestamp).
    pub esrx: String,
    /// esprimKeyGenAlgID.
    pub esk: EsprimKeyGenAlgId,
    /// esprimProtocolAndAlgIDs.
    pub espa: Vec<EsprimProtocolAndAlgId>,
}

/// `m2m:securityInfo` (table 6.3.5.48-1), ESPrim members only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityInfo {
    /// securityInfoType.
    pub sit: SecurityInfoType,
    /// esprimRandObject: present only with sit 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ero: Option<ReceiverEsprimRandObject>,
    /// esprimObject (m2m:e2eCompactJWE): present only with sit 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epo: Option<String>,
    /// escertkeMessage (xs:base64Binary, standard alphabet with padding): present only with sit 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eckm: Option<String>,
}

impl SecurityInfo {
    /// sit 3: ask the Receiver for a receiverESPrimRandObject.
    pub fn rand_request() -> Self {
        Self {
            sit: SecurityInfoType::ReceiverRandRequest,
            ero: None,
            epo: None,
            eckm: None,
        }
    }

    /// sit 4: the Receiver's answer.
    pub fn rand_response(ero: ReceiverEsprimRandObject) -> Self {
        Self {
            sit: SecurityInfoType::ReceiverRandResponse,
            ero: Some(ero),
            epo: None,
            eckm: None,
        }
    }

    /// sit 5: an ESPrim object (JWE compact) in an outer NOTIFY request or response.
    pub fn esprim_object(jwe: impl Into<String>) -> Self {
        Self {
            sit: SecurityInfoType::EsprimObject,
            ero: None,
            epo: Some(jwe.into()),
            eckm: None,
        }
    }

    /// sit 6: an ESCertKE Message (the TLS records of one flight), base64-encoded.
    pub fn escertke_message(message: &[u8]) -> Self {
        use base64::Engine;
        Self {
            sit: SecurityInfoType::EscertkeMessage,
            ero: None,
            epo: None,
            eckm: Some(base64::engine::general_purpose::STANDARD.encode(message)),
        }
    }

    /// The bytes of the ESCertKE Message of a sit 6 element.
    pub fn escertke_bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let text = self
            .eckm
            .as_deref()
            .ok_or_else(|| "the securityInfo carries no escertkeMessage".to_owned())?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "escertkeMessage is not base64".to_owned())
    }

    /// Checks that exactly the member of table 6.3.5.48-1 that `sit` calls for is present.
    pub fn validate(&self) -> Result<(), String> {
        let present = (self.ero.is_some(), self.epo.is_some(), self.eckm.is_some());
        let ok = match self.sit {
            SecurityInfoType::ReceiverRandRequest => present == (false, false, false),
            SecurityInfoType::ReceiverRandResponse => present == (true, false, false),
            SecurityInfoType::EsprimObject => present == (false, true, false),
            SecurityInfoType::EscertkeMessage => present == (false, false, true),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "securityInfo with sit {} must carry {}",
                u8::from(self.sit),
                match self.sit {
                    SecurityInfoType::ReceiverRandRequest => "no other element",
                    SecurityInfoType::ReceiverRandResponse => "ero and nothing else",
                    SecurityInfoType::EsprimObject => "epo and nothing else",
                    SecurityInfoType::EscertkeMessage => "eckm and nothing else",
                }
            ))
        }
    }

    /// The primitive Content `{"m2m:seci": {...}}`.
    pub fn to_content(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert(
            SECURITY_INFO_ROOT.into(),
            serde_json::to_value(self).expect("securityInfo serializes"),
        );
        serde_json::Value::Object(m)
    }

    /// Reads `{"m2m:seci": {...}}` from a primitive Content and validates it.
    pub fn from_content(pc: &serde_json::Value) -> Result<Self, String> {
        let inner = pc
            .get(SECURITY_INFO_ROOT)
            .ok_or_else(|| format!("the content has no {SECURITY_INFO_ROOT} element"))?;
        let si: SecurityInfo = serde_json::from_value(inner.clone())
            .map_err(|e| format!("{SECURITY_INFO_ROOT} is malformed: {e}"))?;
        si.validate()?;
        Ok(si)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_names_and_codes() {
        let ero = ReceiverEsprimRandObject {
            esri: "r1".into(),
            esrv: "00".repeat(16),
            esrx: "20300101T000000".into(),
            esks: vec![EsprimKeyGenAlgId::HmacSha256],
            espa: vec![EsprimProtocolAndAlgId::JweA128Gcm],
        };
        let c = SecurityInfo::rand_response(ero.clone()).to_content();
        assert_eq!(c["m2m:seci"]["sit"], 4);
        assert_eq!(c["m2m:seci"]["ero"]["esks"], json!([1]));
        assert_eq!(c["m2m:seci"]["ero"]["espa"], json!([10]));
        assert_eq!(SecurityInfo::from_content(&c).unwrap().ero.unwrap(), ero);
        let p = SecurityInfo::esprim_object("a.b.c.d.e").to_content();
        assert_eq!(p, json!({"m2m:seci": {"sit": 5, "epo": "a.b.c.d.e"}}));
        assert_eq!(
            SecurityInfo::rand_request().to_content(),
            json!({"m2m:seci": {"sit": 3}})
        );
        let m = SecurityInfo::escertke_message(&[0x16, 0x03, 0x01]).to_content();
        assert_eq!(m, json!({"m2m:seci": {"sit": 6, "eckm": "FgMB"}}));
        let back = SecurityInfo::from_content(&m).unwrap();
        assert_eq!(back.escertke_bytes().unwrap(), vec![0x16, 0x03, 0x01]);
    }

    #[test]
    fn bad_security_info_is_refused() {
        for bad in [
            json!({"m2m:seci": {"sit": 1}}),
            json!({"m2m:seci": {"sit": 5}}),
            json!({"m2m:seci": {"sit": 3, "epo": "x"}}),
            json!({"m2m:seci": {"sit": 5, "epo": "x", "zzz": 1}}),
            json!({"m2m:seci": {"sit": 6}}),
            json!({"m2m:seci": {"sit": 6, "eckm": "AA==", "epo": "x"}}),
            json!({"m2m:seci": {"sit": 5, "epo": "x", "eckm": "AA=="}}),
            json!({"m2m:seci": {"sit": 4, "ero": {"esri": "r"}}}),
            json!({"other": 1}),
        ] {
            assert!(SecurityInfo::from_content(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            EsprimProtocolAndAlgId::from_enc("A192GCM"),
            Some(EsprimProtocolAndAlgId::JweA192Gcm)
        );
        assert_eq!(EsprimProtocolAndAlgId::from_enc("A128CBC-HS256"), None);
    }
}
