//! The oneM2M vocabulary shared by every part of the system, with no I/O: status codes
//! (TS-0004 clause 6.6), resource types, identifiers and addressing (TS-0001 clause 7.2), request and
//! response primitives (TS-0004 clause 6.4), filter criteria, and the HTTP (TS-0009), CoAP
//! (TS-0008) and MQTT (TS-0010) bindings.

#![forbid(unsafe_code)]

pub mod coap_binding;
pub mod coap_exchange;
pub mod config_text;
pub mod error;
pub mod filter;
pub mod geo_query;
pub mod group_authentication;
pub mod http_binding;
pub mod id;
pub mod identity;
pub mod issued_id;
pub mod json_serialization;
pub mod mgmt_obj;
pub mod mqtt_binding;
pub mod primitive;
pub mod primitive_message;
pub mod resource_type;
pub mod schema;
pub mod security_info;
pub mod serialization;
pub mod specialization;
pub mod status;
pub mod time;
pub mod xml;

pub use error::{M2mError, M2mResult};
pub use filter::FilterCriteria;
pub use id::{Address, CseId, Scope, SpId};
pub use identity::{AeStem, EntityId, Home, Originator, StemKind};
pub use issued_id::{RoleId, TokenId};
pub use primitive::{
    DiscResType, Operation, Request, Response, ResponseType, ResultContent, Tokens,
};
pub use resource_type::ResourceType;
pub use status::ResponseStatusCode;
