//! Authentication on gRPC, shared by Flight SQL and OTLP/gRPC.
//!
//! A call arrives → [`authenticator`], a tonic interceptor, reads its
//! `authorization` header and its peer's address and asks the
//! [`Directory`] who it is → the [`Principal`] goes into the request's
//! extensions for the service to run as, or the call is refused with the
//! status [`auth_status`] makes of the [`AuthError`] (its SQLSTATE in the
//! [`SQLSTATE_KEY`] metadata entry).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tonic::{Request, Status};

use crate::{AuthError, Directory};

/// The metadata key that carries the SQLSTATE of an error.
pub const SQLSTATE_KEY: &str = "x-sqlstate";

/// A gRPC interceptor that authenticates every call from its
/// `authorization` header (and its peer's address) and leaves the
/// [`Principal`](crate::Principal) in the request's extensions; a refusal is
/// UNAUTHENTICATED (or RESOURCE_EXHAUSTED after too many failures) with the
/// SQLSTATE.
pub fn authenticator(
    directory: Arc<Directory>,
    protocol: &'static str,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |mut request: Request<()>| {
        let peer = request
            .remote_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let who = directory
            .authenticate(header, peer, protocol)
            .map_err(auth_status)?;
        request.extensions_mut().insert(who);
        Ok(request)
    }
}

/// An authentication or permission error as a gRPC status: the code its
/// SQLSTATE maps to ([`sextant_sqlstate::SqlState::protocol_status`]), but
/// RESOURCE_EXHAUSTED for a client that must wait before it tries again.
pub fn auth_status(e: AuthError) -> Status {
    let code = match e {
        AuthError::TooManyFailures(_) => tonic::Code::ResourceExhausted,
        ref e => tonic::Code::from(e.sqlstate().protocol_status().grpc),
    };
    let mut s = Status::new(code, e.to_string());
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(e.sqlstate().code()) {
        s.metadata_mut().insert(SQLSTATE_KEY, v);
    }
    s
}
