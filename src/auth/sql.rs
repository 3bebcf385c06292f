//! `mysql, sql`: not built yet.

use std::sync::Arc;

use super::authenticator::{AuthError, Authenticator};
use super::spec::AuthSpec;

/// Builds the module (not yet: refused with a clear error).
pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    Err(AuthError::Other(format!(
        "auth module {} is not implemented yet",
        spec.kind.name()
    )))
}
