//! Request and response primitives (TS-0004 clause 6.4) independent of any binding.

use crate::error::{M2mError, M2mResult};
use crate::filter::FilterCriteria;
use crate::resource_type::ResourceType;
use crate::status::ResponseStatusCode;
use serde_json::{json, Value};

/// The Operation parameter (TS-0004 table 6.3.4.2.5-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Create = 1,
    Retrieve = 2,
    Update = 3,
    Delete = 4,
    Notify = 5,
}

impl Operation {
    pub fn from_code(n: u64) -> Option<Self> {
        Some(match n {
            1 => Self::Create,
            2 => Self::Retrieve,
            3 => Self::Update,
            4 => Self::Delete,
            5 => Self::Notify,
            _ => return None,
        })
    }
}

/// Result Content (TS-0004 table 6.3.4.2.7-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultContent {
    Nothing = 0,
    Attributes = 1,
    HierarchicalAddress = 2,
    HierarchicalAddressAndAttributes = 3,
    AttributesAndChildResources = 4,
    AttributesAndChildResourceReferences = 5,
    ChildResourceReferences = 6,
    OriginalResource = 7,
    ChildResources = 8,
    ModifiedAttributes = 9,
    /// The result of a semantic query (`m2m:qres`, clause 7.3.3.19).
    SemanticContent = 10,
    /// Release 4: the URIs a discovery found (`m2m:uril`), the default of a discovery.
    DiscoveryResultReferences = 11,
}

impl ResultContent {
    pub fn parse(s: &str) -> M2mResult<Self> {
        let n: u8 = s
            .parse()
            .map_err(|_| M2mError::bad_request(format!("rcn '{s}' is not a number")))?;
        Ok(match n {
            0 => Self::Nothing,
            1 => Self::Attributes,
            2 => Self::HierarchicalAddress,
            3 => Self::HierarchicalAddressAndAttributes,
            4 => Self::AttributesAndChildResources,
            5 => Self::AttributesAndChildResourceReferences,
            6 => Self::ChildResourceReferences,
            7 => Self::OriginalResource,
            8 => Self::ChildResources,
            9 => Self::ModifiedAttributes,
            10 => Self::SemanticContent,
            11 => Self::DiscoveryResultReferences,
            _ => return Err(M2mError::bad_request(format!("rcn {n} is not supported"))),
        })
    }

    /// Whether this Result Content is valid for an operation (TS-0001 table 8.1.2-1; discovery
    /// also takes the child listings' values).
    pub fn valid_for(self, op: Operation, discovery: bool) -> bool {
        use ResultContent::*;
        match (op, discovery) {
            (Operation::Create, _) => matches!(
                self,
                Nothing
                    | Attributes
                    | HierarchicalAddress
                    | HierarchicalAddressAndAttributes
                    | ModifiedAttributes
            ),
            // A discovery answers with references: the URIs found (11), or the found
            // resources as child resource references (6, `m2m:rrl`).
            (Operation::Retrieve, true) => {
                matches!(self, ChildResourceReferences | DiscoveryResultReferences)
            }
            (Operation::Retrieve, false) => matches!(
                self,
                Attributes
                    | AttributesAndChildResources
                    | AttributesAndChildResourceReferences
                    | ChildResourceReferences
                    | ChildResources
                    | OriginalResource
                    | SemanticContent
            ),
            (Operation::Update, _) => matches!(self, Nothing | Attributes | ModifiedAttributes),
            (Operation::Delete, _) => matches!(
                self,
                Nothing
                    | Attributes
                    | AttributesAndChildResources
                    | ChildResources
                    | ChildResourceReferences
                    | AttributesAndChildResourceReferences
            ),
            (Operation::Notify, _) => matches!(self, Nothing | Attributes),
        }
    }

    /// The default Result Content of an operation (TS-0001 table 8.1.2-1).
    pub fn default_for(op: Operation, discovery: bool) -> Self {
        match (op, discovery) {
            (Operation::Retrieve, true) => Self::ChildResourceReferences,
            (Operation::Delete, _) | (Operation::Notify, _) => Self::Nothing,
            _ => Self::Attributes,
        }
    }
}

/// Discovery Result Type (TS-0004 table 6.3.4.2.8-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiscResType {
    #[default]
    Structured = 1,
    Unstructured = 2,
}

/// The responseType element of Response Type Info (TS-0004 table 6.3.4.2.6-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseType {
    NonBlockingSynch = 1,
    NonBlockingAsynch = 2,
    #[default]
    Blocking = 3,
    FlexBlocking = 4,
    /// The originator wants no response at all (TS-0004 table 6.3.4.2.6-1, written for the 3GPP
    /// interworking of TS-0026): the request is carried out as a blocking one and nothing is
    /// sent back (HTTP 204 without oneM2M headers, no MQTT or WebSocket message, an empty CoAP
    /// acknowledgement).
    NoResponse = 5,
}

/// A request primitive.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub op: Operation,
    /// The `To` parameter, percent-decoded, in CSE-relative, SP-relative or absolute form.
    pub to: String,
    /// The `From` parameter; `None` when the originator did not send one.
    pub from: Option<String>,
    pub rqi: String,
    pub rvi: Option<String>,
    pub ty: Option<ResourceType>,
    pub pc: Option<Value>,
    pub rcn: Option<ResultContent>,
    /// Boxed: 400 bytes that most requests leave empty, and every `async fn` level of the CSE
    /// would otherwise hold and move with the request.
    pub fc: Box<FilterCriteria>,
    pub drt: DiscResType,
    pub rt: ResponseType,
    /// notificationURI of the Response Type Info (X-M2M-RTU): None when not given; given and
    /// empty, no result notification is sent at all (TS-0004 clause 7.5.1.2.5).
    pub rtu: Option<Vec<String>>,
    pub ot: Option<String>,
    pub rqet: Option<String>,
    pub rset: Option<String>,
    pub oet: Option<String>,
    /// Result Persistence (`rp`, m2m:absRelTimestamp): how long the result of a non-blocking
    /// request stays retrievable.
    pub rp: Option<String>,
    pub gid: Option<String>,
    pub ec: Option<String>,
    /// Vendor Information (X-M2M-VSI): opaque to the CSE, echoed in the response.
    pub vsi: Option<String>,
    /// Attribute list of a partial retrieve (`atrl`).
    pub atrl: Vec<String>,
    /// Tokens (`tkns`, m2m:dynAuthJWT): JWS or JWE compact serializations for token-based access
    /// control (TS-0003 clause 7.3.2.3); `Debug` shows how many, never them.
    pub tkns: Tokens,
    /// Role IDs (`rids`, TS-0003 clause 7.4.3): roles the originator asks to be judged in.
    pub rids: Vec<crate::RoleId>,
    /// Token IDs (`tids`): tokens held in `<token>` resources of the Hosting CSE.
    pub tids: Vec<crate::TokenId>,
    /// Local Token IDs (`ltids`, xs:NCName): tokens the Hosting CSE assigned to the originator
    /// earlier (Assigned Token Identifiers of a response).
    pub ltids: Vec<String>,
    /// Semantic Query Indicator (`sqi`, TS-0004 clause 7.3.3.19): the RETRIEVE is a semantic
    /// query over the semanticsFilter of its filter criteria.
    pub sqi: bool,
    /// The serialization the response will be written in, when the binding decides it from the
    /// request (HTTP Accept, else Content-Type): a semantic query's results take the matching
    /// SPARQL results format (TS-0004 clause 7.3.3.19). Not a primitive parameter; `None` is JSON.
    pub accept: Option<crate::serialization::Serialization>,
}

/// The Tokens parameter: bearer credentials, so its `Debug` shows their number only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens(pub Vec<String>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl std::ops::Deref for Tokens {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.0
    }
}

impl std::ops::DerefMut for Tokens {
    fn deref_mut(&mut self) -> &mut Vec<String> {
        &mut self.0
    }
}

impl Request {
    pub fn new(
        op: Operation,
        to: impl Into<String>,
        from: Option<String>,
        rqi: impl Into<String>,
    ) -> Self {
        Self {
            op,
            to: to.into(),
            from,
            rqi: rqi.into(),
            rvi: Some("3".into()),
            ty: None,
            pc: None,
            rcn: None,
            fc: Box::default(),
            drt: DiscResType::default(),
            rt: ResponseType::default(),
            rtu: None,
            ot: None,
            rqet: None,
            rset: None,
            oet: None,
            rp: None,
            gid: None,
            ec: None,
            vsi: None,
            atrl: Vec::new(),
            tkns: Tokens::default(),
            rids: Vec::new(),
            sqi: false,
            tids: Vec::new(),
            ltids: Vec::new(),
            accept: None,
        }
    }

    /// Whether this is a discovery request (RETRIEVE with filterUsage = discovery).
    pub fn is_discovery(&self) -> bool {
        self.op == Operation::Retrieve && self.fc.is_discovery()
    }

    /// The Result Content asked for, or the default of the operation.
    pub fn result_content(&self) -> ResultContent {
        self.rcn
            .unwrap_or_else(|| ResultContent::default_for(self.op, self.is_discovery()))
    }
}

/// m2m:contentStatus 1: more results follow from the Content Offset.
pub const PARTIAL_CONTENT: u8 = 1;
/// m2m:contentStatus 2: the content is complete.
pub const FULL_CONTENT: u8 = 2;

/// A response primitive.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub rsc: ResponseStatusCode,
    pub rqi: String,
    pub pc: Option<Value>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub rvi: Option<String>,
    pub ot: Option<String>,
    /// Vendor Information (X-M2M-VSI).
    pub vsi: Option<String>,
    /// Result Expiration Timestamp (X-M2M-RST, table 7.2.1.2-1): the request's, as it gave it.
    pub rset: Option<String>,
    /// Content Status (TS-0004 table 6.3.4.2.x, m2m:contentStatus): [`PARTIAL_CONTENT`] when a
    /// discovery or listing was cut short by a limit or its time budget, else absent.
    pub cts: Option<u8>,
    /// Content Offset of the next partial result.
    pub cto: Option<u64>,
    /// URI of a created resource (Content-Location in HTTP).
    pub location: Option<String>,
    /// Assigned Token Identifiers (`ati`, m2m:dynAuthLocalTokenIdAssignments): the local token
    /// IDs the Hosting CSE gave the tokens a Dynamic Authorization Server issued for this request,
    /// as (localTokenID, tokenID).
    pub ati: Vec<(String, String)>,
}

impl Response {
    pub fn new(rsc: ResponseStatusCode, rqi: impl Into<String>, pc: Option<Value>) -> Self {
        Self {
            rsc,
            rqi: rqi.into(),
            pc,
            from: None,
            to: None,
            rvi: None,
            ot: None,
            vsi: None,
            rset: None,
            cts: None,
            cto: None,
            location: None,
            ati: Vec::new(),
        }
    }

    /// An error response carrying `m2m:dbg`.
    pub fn error(err: &M2mError, rqi: impl Into<String>) -> Self {
        Self::new(err.rsc, rqi, Some(json!({ "m2m:dbg": err.dbg })))
    }

    /// The `m2m:dbg` text of an error response.
    pub fn dbg(&self) -> Option<&str> {
        self.pc.as_ref()?.get("m2m:dbg")?.as_str()
    }

    /// Turns an unsuccessful response into an error.
    pub fn into_result(self) -> M2mResult<Response> {
        if self.rsc.is_success() {
            Ok(self)
        } else {
            let dbg = self.dbg().unwrap_or("").to_owned();
            Err(M2mError::new(self.rsc, dbg))
        }
    }

    /// Serializes as an `m2m:rsp` object (used in aggregated group responses).
    pub fn to_rsp_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("rsc".into(), json!(self.rsc.code()));
        m.insert("rqi".into(), json!(self.rqi));
        if let Some(pc) = &self.pc {
            m.insert("pc".into(), pc.clone());
        }
        if let Some(fr) = &self.from {
            m.insert("fr".into(), json!(fr));
        }
        if let Some(to) = &self.to {
            m.insert("to".into(), json!(to));
        }
        if let Some(rvi) = &self.rvi {
            m.insert("rvi".into(), json!(rvi));
        }
        Value::Object(m)
    }
}
