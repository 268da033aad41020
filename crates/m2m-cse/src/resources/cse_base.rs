//! `<CSEBase>` (TS-0004 clause 7.4.3): made by the CSE itself at start, never by a request; its
//! currentTime (`ctm`, TS-0001 table 9.6.3-3) is sampled at each RETRIEVE.

use super::{ready, Behaviour, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::Resource;
use m2m_core::{M2mError, M2mResult};
use serde_json::{Map, Value};

pub struct CseBase;

impl Behaviour for CseBase {
    fn prepare_create<'a>(
        &'a self,
        _call: Call<'a>,
        _parent: &'a Resource,
        _attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        ready(Err(M2mError::not_allowed("a CSEBase cannot be created")))
    }

    /// A deregistered entity leaves its node's links; a deleted node leaves its entities' nodeLink
    /// (`resources::node`).
    fn child_deleted(
        &self,
        cse: &Cse,
        w: &crate::store::Writer<'_>,
        _res: &Resource,
        child: &Resource,
    ) -> M2mResult<()> {
        match child.ty {
            m2m_core::ResourceType::Ae | m2m_core::ResourceType::RemoteCse => {
                super::node::unlink(cse, w, child, child.str_attr("nl"))
            }
            m2m_core::ResourceType::Node => super::node::node_deleted(cse, w, child),
            _ => Ok(()),
        }
    }

    /// currentTime: this CSE's clock when it answered, for an originator to synchronize with.
    fn present(&self, cse: &Cse, res: &mut Resource) {
        res.attrs.insert(
            "ctm".into(),
            Value::String(m2m_core::time::format(cse.now())),
        );
    }
}
