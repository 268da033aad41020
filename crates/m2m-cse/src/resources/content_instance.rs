//! `<contentInstance>` (TS-0004 clause 7.4.7): inserted with its effects on the container
//! (counters, state tag, limits: [`super::container`]).

use super::Behaviour;
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::{M2mResult, Operation, ResourceType};

pub struct ContentInstance;

impl Behaviour for ContentInstance {
    /// Its container's disableRetrieval (TS-0004 clause 7.4.7.2.2-4).
    fn admits(&self, cse: &Cse, op: Operation, res: &Resource) -> M2mResult<()> {
        if op == Operation::Create {
            return Ok(());
        }
        match cse.store.get(res.pi())? {
            Some(parent) if parent.ty == ResourceType::Container => {
                super::container::refuse_if_disabled(op, &parent)
            }
            _ => Ok(()),
        }
    }

    /// `cin_` and a time-ordered suffix, so that instances list in creation order.
    fn default_name(&self, _ri: &str) -> String {
        format!("cin_{}", crate::dispatcher::time_ordered_suffix())
    }

    fn insert(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        parent: &Resource,
        new: Resource,
    ) -> M2mResult<Resource> {
        super::container::insert_instance(cse, w, parent, new)
    }
}
