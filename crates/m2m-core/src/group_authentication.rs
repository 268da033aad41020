//! The primitive contents of Group Authentication Solution 1 (seeds/001 clause 8.2.1; TR-0012): the
//! Group Security Association Handshake carried as NOTIFY requests to a CSEBase and their answers.
//!
//! oneM2M defines no resource or content for this handshake; these four typed contents are the
//! project's (docs/SECURITY.md, "Group authentication"). Rand travels as lowercase hex.
//!
//! | root name | sent by → to | in |
//! | --- | --- | --- |
//! | [`KEY_REQUEST`] | member Ax → agent B (MN-CSE) | NOTIFY to B's CSEBase, over Ax's inner TLS-PSK association |
//! | [`ROUND`] | agent B → C (IN-CSE) | NOTIFY to C's CSEBase, over B's outer association |
//! | [`ROUND_ANSWER`] | C → B | the 2000 OK answer to [`ROUND`] |
//! | [`KEY_MATERIAL`] | B → Ax | the 2000 OK answer to [`KEY_REQUEST`] |

use crate::{M2mError, M2mResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A member asks its group agent for group key material: `{"m2m:gakReq": {}}`.
pub const KEY_REQUEST: &str = "m2m:gakReq";
/// The agent asks C for a round naming the members inner-authenticated now.
pub const ROUND: &str = "m2m:gaRound";
/// C's answer to a round: Rand and, per member, its KsxId.
pub const ROUND_ANSWER: &str = "m2m:gaRand";
/// The agent's answer to a member: what it needs to derive Ksx.
pub const KEY_MATERIAL: &str = "m2m:gaKey";

/// The empty content of a member's request (the member is the association's entity).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {}

/// B → C: the members (AE-IDs or CSE-IDs) that completed their inner association with B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Round {
    /// memberIDs.
    pub mid: Vec<String>,
}

/// One member of a round as C derived its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundMember {
    /// The member as listed by the agent.
    pub id: String,
    /// Enrolee-Ax-ID: the ID hashed into Ksx (the entity of C's PSK row, before NFKC).
    pub eid: String,
    /// KsxId (= KpsaxiId): the psk_identity the member offers to C.
    pub kid: String,
}

/// C → B: the round's Rand, its members and when their keys expire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundAnswer {
    /// Rand, hex.
    pub rand: String,
    /// expirationTime of every Ksx of the round (oneM2M timestamp).
    pub exp: String,
    pub mbr: Vec<RoundMember>,
}

/// B → Ax: what Ax needs, with its own Kpsaxi, to derive Ksx and open TLS-PSK with C.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMaterial {
    /// Rand, hex.
    pub rand: String,
    /// Enrolee-Ax-ID to hash.
    pub eid: String,
    /// KsxId (= KpsaxiId).
    pub kid: String,
    /// The CSE-ID of C, where Ksx opens an association.
    pub csi: String,
    /// expirationTime of Ksx.
    pub exp: String,
}

/// `{"<root>": <value>}`.
pub fn wrap<T: Serialize>(root: &str, value: &T) -> Value {
    let inner = serde_json::to_value(value).unwrap_or(Value::Null);
    crate::serialization::rooted(root, inner)
}

/// The content under `root`, if the primitive content carries that root.
pub fn unwrap<T: for<'de> Deserialize<'de>>(
    root: &str,
    pc: Option<&Value>,
) -> Option<M2mResult<T>> {
    let inner = pc?.get(root)?;
    Some(
        serde_json::from_value(inner.clone())
            .map_err(|e| M2mError::bad_request(format!("{root}: {e}"))),
    )
}

/// Decodes a hex Rand.
pub fn rand_from_hex(hex: &str) -> M2mResult<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(M2mError::bad_request(
            "rand is not an even number of hex digits",
        ));
    }
    Ok((0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect())
}

/// Encodes a Rand as lowercase hex.
pub fn rand_to_hex(rand: &[u8]) -> String {
    rand.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_refuses_unknown_fields() {
        let r = Round {
            mid: vec!["Smeter1".into()],
        };
        let v = wrap(ROUND, &r);
        assert_eq!(v, json!({"m2m:gaRound": {"mid": ["Smeter1"]}}));
        assert_eq!(unwrap::<Round>(ROUND, Some(&v)).unwrap().unwrap(), r);
        assert!(unwrap::<Round>(KEY_REQUEST, Some(&v)).is_none());
        let bad = json!({"m2m:gaRound": {"mid": ["x"], "extra": 1}});
        assert!(unwrap::<Round>(ROUND, Some(&bad)).unwrap().is_err());
        let bad = json!({"m2m:gaRound": {"mid": "x"}});
        assert!(unwrap::<Round>(ROUND, Some(&bad)).unwrap().is_err());
    }

    #[test]
    fn rand_hex() {
        assert_eq!(rand_from_hex("00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(rand_to_hex(&[0, 255, 16]), "00ff10");
        for bad in ["", "0", "zz", "0g"] {
            assert!(rand_from_hex(bad).is_err(), "{bad}");
        }
    }
}
