//! End-to-end security (TS-0003 clauses 8.4, 8.5; seeds/001 clauses 5.1, 5.4): protection that survives
//! the CSEs a message or a stored value passes through. Pure logic, no sockets; time comes from the caller.
//!
//! - [`jose`]: typed keys and JWS/JWE with strict algorithm allow-lists (the layer everything below uses).
//! - [`esprim`]: End-to-End Security of Primitives (ESPrim): rand objects, sessionESPrimKey, JWE-protected
//!   inner primitives and responses, with expiry and a replay cache.
//! - [`escertke`]: End-to-End Certificate-based Key Establishment (ESCertKE): a TLS 1.2 handshake carried
//!   as four messages, giving both ends pairwiseE2EKey (the pairwiseESPrimKey of certificate ESPrim).
//! - [`esdata`]: End-to-End Security of Data (ESData): contentInstance content signed and/or encrypted by
//!   the AE, bound to the resource's attributes, opaque to the hosting CSE.
//! - [`group_message`]: secure group communication (a gateway-signed command under a group key) and a
//!   group credential sealed for one member under that member's own key.
//! - [`multicast`]: a multicast group fan-out datagram protected with the group key: signed by the group
//!   hosting CSE, encrypted for the members, with a per-sender sequence number and a replay window.
//! - [`freshness`]: the checks of the times and versions ESData and group credentials carry.

pub mod escertke;
pub mod esdata;
pub mod esprim;
pub mod freshness;
pub mod group_message;
pub mod jose;
pub mod multicast;
