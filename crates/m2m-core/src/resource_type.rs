//! Resource types (TS-0004 table 6.3.4.2.1-1) and their serialization names (TS-0004 clause 8.2.2).

use crate::error::M2mError;
use std::fmt;

/// The resource types this CSE hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    AccessControlPolicy,
    Action,
    Ae,
    /// `<AEAnnc>` (10002), kept only as the IN-CSE's record of an S-stem AE-ID registered at
    /// another CSE (TS-0001 clause 10.2.2.2, TS-0004 clause 7.4.5.2.1).
    AeAnnc,
    Container,
    ContentInstance,
    CrossResourceSubscription,
    CseBase,
    Dependency,
    DynamicAuthorizationConsultation,
    FlexContainer,
    FlexContainerInstance,
    Group,
    LocalMulticastGroup,
    LocationPolicy,
    MgmtObj,
    Node,
    NotificationTargetMgmtPolicyRef,
    NotificationTargetPolicy,
    PolicyDeletionRules,
    PollingChannel,
    RemoteCse,
    Request,
    Role,
    Schedule,
    SemanticDescriptor,
    ServiceSubscribedAppRule,
    Subscription,
    TimeSeries,
    TimeSeriesInstance,
    TimeSyncBeacon,
    Token,
}

impl ResourceType {
    pub const ALL: [ResourceType; 32] = [
        Self::AccessControlPolicy,
        Self::Action,
        Self::Ae,
        Self::AeAnnc,
        Self::Container,
        Self::ContentInstance,
        Self::CrossResourceSubscription,
        Self::CseBase,
        Self::Dependency,
        Self::DynamicAuthorizationConsultation,
        Self::FlexContainer,
        Self::FlexContainerInstance,
        Self::Group,
        Self::LocalMulticastGroup,
        Self::LocationPolicy,
        Self::MgmtObj,
        Self::Node,
        Self::NotificationTargetMgmtPolicyRef,
        Self::NotificationTargetPolicy,
        Self::PolicyDeletionRules,
        Self::PollingChannel,
        Self::RemoteCse,
        Self::Request,
        Self::Role,
        Self::Schedule,
        Self::SemanticDescriptor,
        Self::ServiceSubscribedAppRule,
        Self::Subscription,
        Self::TimeSeries,
        Self::TimeSeriesInstance,
        Self::TimeSyncBeacon,
        Self::Token,
    ];

    /// The `ty` value.
    pub const fn code(self) -> u16 {
        match self {
            Self::AccessControlPolicy => 1,
            Self::Ae => 2,
            Self::Container => 3,
            Self::ContentInstance => 4,
            Self::CseBase => 5,
            Self::Group => 9,
            Self::LocationPolicy => 10,
            Self::MgmtObj => 13,
            Self::Node => 14,
            Self::PollingChannel => 15,
            Self::RemoteCse => 16,
            Self::Request => 17,
            Self::Schedule => 18,
            Self::ServiceSubscribedAppRule => 19,
            Self::Subscription => 23,
            Self::SemanticDescriptor => 24,
            Self::NotificationTargetMgmtPolicyRef => 25,
            Self::NotificationTargetPolicy => 26,
            Self::PolicyDeletionRules => 27,
            Self::Role => 31,
            Self::Token => 32,
            Self::DynamicAuthorizationConsultation => 34,
            Self::FlexContainer => 28,
            Self::TimeSeries => 29,
            Self::TimeSeriesInstance => 30,
            Self::FlexContainerInstance => 58,
            Self::TimeSyncBeacon => 60,
            Self::LocalMulticastGroup => 45,
            Self::CrossResourceSubscription => 48,
            Self::Action => 65,
            Self::Dependency => 66,
            Self::AeAnnc => 10002,
        }
    }

    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::AccessControlPolicy,
            2 => Self::Ae,
            3 => Self::Container,
            4 => Self::ContentInstance,
            5 => Self::CseBase,
            9 => Self::Group,
            10 => Self::LocationPolicy,
            13 => Self::MgmtObj,
            14 => Self::Node,
            15 => Self::PollingChannel,
            16 => Self::RemoteCse,
            17 => Self::Request,
            18 => Self::Schedule,
            19 => Self::ServiceSubscribedAppRule,
            23 => Self::Subscription,
            24 => Self::SemanticDescriptor,
            25 => Self::NotificationTargetMgmtPolicyRef,
            26 => Self::NotificationTargetPolicy,
            27 => Self::PolicyDeletionRules,
            31 => Self::Role,
            32 => Self::Token,
            34 => Self::DynamicAuthorizationConsultation,
            28 => Self::FlexContainer,
            29 => Self::TimeSeries,
            30 => Self::TimeSeriesInstance,
            45 => Self::LocalMulticastGroup,
            58 => Self::FlexContainerInstance,
            60 => Self::TimeSyncBeacon,
            48 => Self::CrossResourceSubscription,
            65 => Self::Action,
            66 => Self::Dependency,
            10002 => Self::AeAnnc,
            _ => return None,
        })
    }

    /// Parses a `ty` given by a client: unknown types are a BAD_REQUEST, types of the
    /// specification that this CSE does not host are NOT_IMPLEMENTED.
    pub fn parse_requested(code: &str) -> Result<Self, M2mError> {
        let n: u16 = code.trim().parse().map_err(|_| {
            M2mError::bad_request(format!("resource type '{code}' is not a number"))
        })?;
        Self::from_code(n).ok_or_else(|| {
            if NEVER_CREATED_BY_REQUEST.contains(&n) {
                M2mError::not_allowed(format!("resource type {n} is not created by a request"))
            } else if is_specified_type(n) {
                M2mError::not_implemented(format!("resource type {n} is not supported by this CSE"))
            } else {
                M2mError::bad_request(format!("unknown resource type {n}"))
            }
        })
    }

    /// The short name used as the JSON root element, without the `m2m:` prefix.
    pub const fn short_name(self) -> &'static str {
        match self {
            Self::AccessControlPolicy => "acp",
            Self::Action => "actr",
            Self::Dependency => "depr",
            Self::Role => "rol",
            Self::Token => "tk",
            Self::DynamicAuthorizationConsultation => "dac",
            Self::FlexContainer => "fcnt",
            Self::Ae => "ae",
            Self::AeAnnc => "aeA",
            Self::Container => "cnt",
            Self::ContentInstance => "cin",
            Self::CrossResourceSubscription => "crs",
            Self::CseBase => "cb",
            Self::Group => "grp",
            Self::LocalMulticastGroup => "lmg",
            // mgmtObj has no short name of its own: each specialization has one (`fwr`...).
            Self::MgmtObj => "mgo",
            Self::Node => "nod",
            Self::NotificationTargetMgmtPolicyRef => "ntpr",
            Self::NotificationTargetPolicy => "ntp",
            Self::PolicyDeletionRules => "pdr",
            Self::PollingChannel => "pch",
            Self::RemoteCse => "csr",
            Self::Request => "req",
            Self::Schedule => "sch",
            Self::LocationPolicy => "lcp",
            Self::FlexContainerInstance => "fci",
            Self::TimeSyncBeacon => "tsb",
            Self::SemanticDescriptor => "smd",
            Self::ServiceSubscribedAppRule => "asar",
            Self::Subscription => "sub",
            Self::TimeSeries => "ts",
            Self::TimeSeriesInstance => "tsi",
        }
    }

    /// The JSON root element, e.g. `m2m:cnt`.
    pub const fn root_name(self) -> &'static str {
        match self {
            Self::AccessControlPolicy => "m2m:acp",
            Self::Action => "m2m:actr",
            Self::Dependency => "m2m:depr",
            Self::Role => "m2m:rol",
            Self::Token => "m2m:tk",
            Self::DynamicAuthorizationConsultation => "m2m:dac",
            // The generic name: a specialization is represented under its own name
            // (`cod:tempe`...), see m2m-core `specialization`.
            Self::FlexContainer => "m2m:fcnt",
            Self::Ae => "m2m:ae",
            Self::AeAnnc => "m2m:aeA",
            Self::Container => "m2m:cnt",
            Self::ContentInstance => "m2m:cin",
            Self::CrossResourceSubscription => "m2m:crs",
            Self::CseBase => "m2m:cb",
            Self::Group => "m2m:grp",
            Self::LocalMulticastGroup => "m2m:lmg",
            // The generic name: a specialization is represented under its own name (`m2m:fwr`),
            // see m2m-core `mgmt_obj`.
            Self::MgmtObj => "m2m:mgo",
            Self::Node => "m2m:nod",
            Self::NotificationTargetMgmtPolicyRef => "m2m:ntpr",
            Self::NotificationTargetPolicy => "m2m:ntp",
            Self::PolicyDeletionRules => "m2m:pdr",
            Self::PollingChannel => "m2m:pch",
            Self::RemoteCse => "m2m:csr",
            Self::Request => "m2m:req",
            Self::Schedule => "m2m:sch",
            Self::LocationPolicy => "m2m:lcp",
            Self::FlexContainerInstance => "m2m:fci",
            Self::TimeSyncBeacon => "m2m:tsb",
            Self::SemanticDescriptor => "m2m:smd",
            Self::ServiceSubscribedAppRule => "m2m:asar",
            Self::Subscription => "m2m:sub",
            Self::TimeSeries => "m2m:ts",
            Self::TimeSeriesInstance => "m2m:tsi",
        }
    }

    pub fn from_root_name(name: &str) -> Option<Self> {
        if crate::mgmt_obj::by_root(name).is_some() {
            return Some(Self::MgmtObj);
        }
        Self::ALL.into_iter().find(|t| t.root_name() == name)
    }

    /// Child resource types allowed under a resource of this type (TS-0001 clause 9.6, resource trees).
    pub fn allowed_children(self) -> &'static [ResourceType] {
        use ResourceType::*;
        match self {
            CseBase => &[
                AccessControlPolicy,
                Action,
                Ae,
                Container,
                CrossResourceSubscription,
                DynamicAuthorizationConsultation,
                FlexContainer,
                Group,
                LocalMulticastGroup,
                LocationPolicy,
                Node,
                NotificationTargetPolicy,
                RemoteCse,
                Request,
                Role,
                Schedule,
                SemanticDescriptor,
                ServiceSubscribedAppRule,
                Subscription,
                TimeSeries,
                TimeSyncBeacon,
                Token,
            ],
            Ae => &[
                AccessControlPolicy,
                Action,
                Container,
                CrossResourceSubscription,
                DynamicAuthorizationConsultation,
                FlexContainer,
                Group,
                LocationPolicy,
                PollingChannel,
                SemanticDescriptor,
                Subscription,
                TimeSeries,
                TimeSyncBeacon,
            ],
            Container => &[
                Action,
                Container,
                ContentInstance,
                FlexContainer,
                SemanticDescriptor,
                Subscription,
                TimeSeries,
            ],
            FlexContainer => &[
                Action,
                Container,
                FlexContainer,
                FlexContainerInstance,
                SemanticDescriptor,
                Subscription,
                TimeSeries,
            ],
            TimeSeries => &[Action, SemanticDescriptor, Subscription, TimeSeriesInstance],
            Action => &[Dependency, Subscription],
            Dependency
            | DynamicAuthorizationConsultation
            | Role
            | Token
            | Request
            | PolicyDeletionRules
            | NotificationTargetMgmtPolicyRef => &[Subscription],
            NotificationTargetPolicy => &[PolicyDeletionRules, Subscription],
            Node => &[MgmtObj, Schedule, SemanticDescriptor, Subscription],
            MgmtObj => &[SemanticDescriptor, Subscription],
            Subscription => &[NotificationTargetMgmtPolicyRef, Schedule],
            Schedule | LocationPolicy | TimeSyncBeacon => &[Subscription],
            Group => &[Action, SemanticDescriptor, Subscription],
            SemanticDescriptor => &[Subscription],
            ServiceSubscribedAppRule => &[Subscription],
            RemoteCse => &[
                AccessControlPolicy,
                AeAnnc,
                Container,
                CrossResourceSubscription,
                DynamicAuthorizationConsultation,
                FlexContainer,
                Group,
                PollingChannel,
                Subscription,
                TimeSeries,
                TimeSyncBeacon,
            ],
            AccessControlPolicy => &[Subscription],
            CrossResourceSubscription => &[NotificationTargetMgmtPolicyRef, Schedule],
            AeAnnc
            | ContentInstance
            | FlexContainerInstance
            | LocalMulticastGroup
            | PollingChannel
            | TimeSeriesInstance => &[],
        }
    }

    /// Whether this type carries an `accessControlPolicyIDs` attribute.
    pub const fn has_acpi(self) -> bool {
        // A <pollingChannel> is governed by its parent's AE-ID or CSE-ID, not by policies
        // (TS-0004 clause 7.4.21.2).
        // An <AEAnnc> is the announcing CSE's record: only that CSE acts on it.
        !matches!(
            self,
            Self::AeAnnc
                | Self::ContentInstance
                | Self::AccessControlPolicy
                | Self::FlexContainerInstance
                | Self::PollingChannel
                | Self::TimeSeriesInstance
        )
    }

    /// The type of the instances a resource of this type holds (`la`, `ol`, the instance
    /// counters and limits): a container's contentInstances, a timeSeries' timeSeriesInstances.
    pub const fn instance_type(self) -> Option<ResourceType> {
        match self {
            Self::Container => Some(Self::ContentInstance),
            Self::TimeSeries => Some(Self::TimeSeriesInstance),
            Self::FlexContainer => Some(Self::FlexContainerInstance),
            _ => None,
        }
    }

    /// Whether this type is an instance of a container-like parent (never updated, counted).
    pub const fn is_instance(self) -> bool {
        matches!(
            self,
            Self::ContentInstance | Self::TimeSeriesInstance | Self::FlexContainerInstance
        )
    }
}

/// Resource type codes that TS-0004 defines (normal, announced and virtual ranges); used only to
/// tell "unknown" from "not implemented" and to check type codes inside attribute values (schema).
/// Whether `n` is a resource type of the specification (Release 3 numbers 1-51, Release 4 up to
/// 66 such as flexContainerInstance 58 and action/dependency 65/66, and their announced forms).
/// Types no request creates, whether a CSE keeps them or not: `<AEContactList>` (43) and
/// `<AEContactListPerCSE>` (44) are the IN-CSE's own (TS-0004 clauses 7.4.53.2.1, 7.4.54.2.1:
/// OPERATION_NOT_ALLOWED).
const NEVER_CREATED_BY_REQUEST: [u16; 2] = [43, 44];

pub(crate) fn is_specified_type(n: u16) -> bool {
    matches!(n, 1..=66) || matches!(n, 10001..=10066)
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ResponseStatusCode as Rsc;

    #[test]
    fn codes_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_code(t.code()), Some(t));
            assert_eq!(ResourceType::from_root_name(t.root_name()), Some(t));
        }
    }

    #[test]
    fn requested_type_errors() {
        assert_eq!(
            ResourceType::parse_requested("3").unwrap(),
            ResourceType::Container
        );
        assert_eq!(
            ResourceType::parse_requested("x").unwrap_err().rsc,
            Rsc::BadRequest
        );
        assert_eq!(
            ResourceType::parse_requested("999").unwrap_err().rsc,
            Rsc::BadRequest
        );
        assert_eq!(
            ResourceType::parse_requested("12").unwrap_err().rsc,
            Rsc::NotImplemented
        );
        for never in ["43", "44"] {
            assert_eq!(
                ResourceType::parse_requested(never).unwrap_err().rsc,
                Rsc::OperationNotAllowed
            );
        }
    }
}
