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

    /// currentTime: this CSE's clock when it answered, for an originator to synchronize with.
    fn present(&self, cse: &Cse, res: &mut Resource) {
        res.attrs.insert(
            "ctm".into(),
            Value::String(m2m_core::time::format(cse.now())),
        );
    }
}
