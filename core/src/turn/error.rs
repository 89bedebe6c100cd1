//! The error of a TURN request handler: the STUN error response it asks for.

/// Why a request fails, as the error response to send (RFC 8489 §14.8,
/// RFC 8656 §19). The server turns it into the wire response in one place,
/// adding REALM and a fresh NONCE where the code asks for them, and
/// MESSAGE-INTEGRITY when the request was authenticated.
///
/// (420 Unknown Attribute is not here: it lists attributes, is sent before
/// authentication, and is built by [`crate::stun::unknown_attribute_response`]
/// as the Binding server does.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorResponse {
    /// 400: malformed, or asking for something the server cannot do.
    BadRequest,
    /// 401: no credentials, or wrong ones.
    Unauthorized,
    /// 403: the peer address is not allowed by the policy.
    Forbidden,
    /// 437: no allocation for this client, or one already.
    AllocationMismatch,
    /// 438: the nonce expired or was made for another client.
    StaleNonce,
    /// 440: relays of the requested family cannot be bound.
    AddressFamilyNotSupported,
    /// 441: the allocation belongs to another user.
    WrongCredentials,
    /// 442: a transport other than UDP was requested.
    UnsupportedTransportProtocol,
    /// 443: the peer's family is not the allocation's.
    PeerAddressFamilyMismatch,
    /// 446: a TCP allocation already has a connection to this peer (RFC 6062).
    ConnectionAlreadyExists,
    /// 447: the TCP connection to the peer failed or took too long (RFC 6062).
    ConnectionTimeoutOrFailure,
    /// 486: the user or the server holds as many allocations as allowed.
    AllocationQuotaReached,
    /// 508: no relay socket, permission slot or reservation for it.
    InsufficientCapacity,
}

impl ErrorResponse {
    /// The ERROR-CODE number.
    pub fn code(self) -> u16 {
        match self {
            ErrorResponse::BadRequest => 400,
            ErrorResponse::Unauthorized => 401,
            ErrorResponse::Forbidden => 403,
            ErrorResponse::AllocationMismatch => 437,
            ErrorResponse::StaleNonce => 438,
            ErrorResponse::AddressFamilyNotSupported => 440,
            ErrorResponse::WrongCredentials => 441,
            ErrorResponse::UnsupportedTransportProtocol => 442,
            ErrorResponse::PeerAddressFamilyMismatch => 443,
            ErrorResponse::ConnectionAlreadyExists => 446,
            ErrorResponse::ConnectionTimeoutOrFailure => 447,
            ErrorResponse::AllocationQuotaReached => 486,
            ErrorResponse::InsufficientCapacity => 508,
        }
    }

    /// Whether the response carries REALM and a fresh NONCE to retry with (RFC 8489 §9.2.4).
    pub fn challenges(self) -> bool {
        matches!(self, ErrorResponse::Unauthorized | ErrorResponse::StaleNonce)
    }
}
