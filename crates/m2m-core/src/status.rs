//! Response Status Codes (TS-0004 clause 6.6) and their HTTP mapping (TS-0009 table 6.3.2-1).

use std::fmt;

macro_rules! status_codes {
    ($( $name:ident = $code:literal, $http:literal, $text:literal; )*) => {
        /// A oneM2M Response Status Code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ResponseStatusCode {
            $( #[doc = $text] $name, )*
        }

        impl ResponseStatusCode {
            /// The numeric code carried in `X-M2M-RSC` / `rsc`.
            pub const fn code(self) -> u16 {
                match self { $( Self::$name => $code, )* }
            }

            /// The HTTP status code of TS-0009 table 6.3.2-1.
            pub const fn http_status(self) -> u16 {
                match self { $( Self::$name => $http, )* }
            }

            /// The name the specification gives the code (e.g. `ORIGINATOR_HAS_NO_PRIVILEGE`).
            pub const fn name(self) -> &'static str {
                match self { $( Self::$name => $text, )* }
            }

            /// Looks a numeric code up; `None` for codes this implementation does not know.
            pub const fn from_code(code: u16) -> Option<Self> {
                match code { $( $code => Some(Self::$name), )* _ => None }
            }
        }
    };
}

status_codes! {
    Accepted = 1000, 202, "ACCEPTED";
    AcceptedNonBlockingRequestSynch = 1001, 202, "ACCEPTED_NON_BLOCKING_REQUEST_SYNCH";
    AcceptedNonBlockingRequestAsynch = 1002, 202, "ACCEPTED_NON_BLOCKING_REQUEST_ASYNCH";
    Ok = 2000, 200, "OK";
    Created = 2001, 201, "CREATED";
    Deleted = 2002, 200, "DELETED";
    Updated = 2004, 200, "UPDATED";
    BadRequest = 4000, 400, "BAD_REQUEST";
    ReleaseVersionNotSupported = 4001, 501, "RELEASE_VERSION_NOT_SUPPORTED";
    NotFound = 4004, 404, "NOT_FOUND";
    OperationNotAllowed = 4005, 405, "OPERATION_NOT_ALLOWED";
    RequestTimeout = 4008, 504, "REQUEST_TIMEOUT";
    UnsupportedMediaType = 4015, 415, "UNSUPPORTED_MEDIA_TYPE";
    SubscriptionCreatorHasNoPrivilege = 4101, 403, "SUBSCRIPTION_CREATOR_HAS_NO_PRIVILEGE";
    ContentsUnacceptable = 4102, 400, "CONTENTS_UNACCEPTABLE";
    OriginatorHasNoPrivilege = 4103, 403, "ORIGINATOR_HAS_NO_PRIVILEGE";
    GroupRequestIdentifierExists = 4104, 409, "GROUP_REQUEST_IDENTIFIER_EXISTS";
    Conflict = 4105, 409, "CONFLICT";
    OriginatorNotAuthenticated = 4106, 403, "ORIGINATOR_NOT_AUTHENTICATED";
    SecurityAssociationRequired = 4107, 403, "SECURITY_ASSOCIATION_REQUIRED";
    InvalidChildResourceType = 4108, 403, "INVALID_CHILD_RESOURCE_TYPE";
    NoMembers = 4109, 403, "NO_MEMBERS";
    GroupMemberTypeInconsistent = 4110, 400, "GROUP_MEMBER_TYPE_INCONSISTENT";
    EsprimUnsupportedOption = 4111, 403, "ESPRIM_UNSUPPORTED_OPTION";
    EsprimUnknownKeyId = 4112, 403, "ESPRIM_UNKNOWN_KEY_ID";
    EsprimUnknownOrigRandId = 4113, 403, "ESPRIM_UNKNOWN_ORIG_RAND_ID";
    EsprimUnknownRecvRandId = 4114, 403, "ESPRIM_UNKNOWN_RECV_RAND_ID";
    EsprimBadMac = 4115, 403, "ESPRIM_BAD_MAC";
    EsprimImpersonationError = 4116, 403, "ESPRIM_IMPERSONATION_ERROR";
    OriginatorHasAlreadyRegistered = 4117, 403, "ORIGINATOR_HAS_ALREADY_REGISTERED";
    BlockingSubscriptionAlreadyExists = 4124, 409, "BLOCKING_SUBSCRIPTION_ALREADY_EXISTS";
    SpecializationSchemaNotFound = 4125, 501, "SPECIALIZATION_SCHEMA_NOT_FOUND";
    AppRuleValidationFailed = 4126, 403, "APP_RULE_VALIDATION_FAILED";
    OperationDeniedByRemoteEntity = 4127, 403, "OPERATION_DENIED_BY_REMOTE_ENTITY";
    ServiceSubscriptionNotEstablished = 4128, 403, "SERVICE_SUBSCRIPTION_NOT_ESTABLISHED";
    InvalidSparqlQuery = 4143, 400, "INVALID_SPARQL_QUERY";
    InternalServerError = 5000, 500, "INTERNAL_SERVER_ERROR";
    NotImplemented = 5001, 501, "NOT_IMPLEMENTED";
    TargetNotReachable = 5103, 404, "TARGET_NOT_REACHABLE";
    ReceiverHasNoPrivilege = 5105, 403, "RECEIVER_HAS_NO_PRIVILEGE";
    AlreadyExists = 5106, 409, "ALREADY_EXISTS";
    RemoteEntityNotReachable = 5107, 404, "REMOTE_ENTITY_NOT_REACHABLE";
    TargetNotSubscribable = 5203, 403, "TARGET_NOT_SUBSCRIBABLE";
    SubscriptionVerificationInitiationFailed = 5204, 500, "SUBSCRIPTION_VERIFICATION_INITIATION_FAILED";
    SubscriptionHostHasNoPrivilege = 5205, 403, "SUBSCRIPTION_HOST_HAS_NO_PRIVILEGE";
    UnableToRecallRequest = 5220, 409, "UNABLE_TO_RECALL_REQUEST";
    CrossResourceOperationFailure = 5221, 500, "CROSS_RESOURCE_OPERATION_FAILURE";
    NonBlockingSynchRequestNotSupported = 5206, 501, "NON_BLOCKING_SYNCH_REQUEST_NOT_SUPPORTED";
    NotAcceptable = 5207, 406, "NOT_ACCEPTABLE";
    GroupMembersNotResponded = 5209, 500, "GROUP_MEMBERS_NOT_RESPONDED";
    EsprimDecryptionError = 5210, 500, "ESPRIM_DECRYPTION_ERROR";
    EsprimEncryptionError = 5211, 500, "ESPRIM_ENCRYPTION_ERROR";
    JoinMulticastGroupFailed = 5216, 500, "JOIN_MULTICAST_GROUP_FAILED";
    LeaveMulticastGroupFailed = 5217, 500, "LEAVE_MULTICAST_GROUP_FAILED";
    MaxNumberOfMemberExceeded = 6010, 400, "MAX_NUMBER_OF_MEMBER_EXCEEDED";
}

impl ResponseStatusCode {
    /// 1xxx and 2xxx codes: the request was carried out.
    pub const fn is_success(self) -> bool {
        self.code() < 4000
    }
}

impl fmt::Display for ResponseStatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::ResponseStatusCode as Rsc;

    #[test]
    fn http_mapping_follows_ts0009() {
        for (rsc, http) in [
            (Rsc::Ok, 200),
            (Rsc::Created, 201),
            (Rsc::Deleted, 200),
            (Rsc::Updated, 200),
            (Rsc::BadRequest, 400),
            (Rsc::NotFound, 404),
            (Rsc::OperationNotAllowed, 405),
            (Rsc::Conflict, 409),
            (Rsc::UnsupportedMediaType, 415),
            (Rsc::OriginatorHasNoPrivilege, 403),
            (Rsc::OriginatorHasAlreadyRegistered, 403),
            (Rsc::NotImplemented, 501),
            (Rsc::TargetNotReachable, 404),
            (Rsc::NotAcceptable, 406),
            (Rsc::EsprimDecryptionError, 500),
        ] {
            assert_eq!(rsc.http_status(), http, "{rsc}");
        }
    }

    #[test]
    fn codes_round_trip() {
        for code in [2000, 2001, 4000, 4004, 4103, 4117, 5204] {
            assert_eq!(Rsc::from_code(code).unwrap().code(), code);
        }
        assert_eq!(Rsc::from_code(1234), None);
    }
}
