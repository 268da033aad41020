//! Temporary bridge to the attribute schemas (replaced by m2m_core::schema).
use m2m_core::{M2mResult, ResourceType};
use serde_json::{Map, Value};

pub fn validate_create(_ty: ResourceType, _content: &Map<String, Value>) -> M2mResult<()> {
    Ok(())
}
pub fn validate_update(ty: ResourceType, _content: &Map<String, Value>) -> M2mResult<()> {
    if ty == ResourceType::ContentInstance {
        return Err(m2m_core::M2mError::not_allowed(
            "contentInstance cannot be updated",
        ));
    }
    Ok(())
}
pub fn is_attribute_name(name: &str) -> bool {
    matches!(
        name,
        "cr" | "rn" | "ri" | "mni" | "api" | "aei" | "lbl" | "con" | "cnf" | "st" | "cs"
    )
}
