//! The rule of a mandate's lifecycle update, shared by every store adapter so that the memory,
//! SQLite and PostgreSQL stores refuse the same things with the same words (see
//! [`crate::ports::Store::update_mandate`]). Pure: the adapters read the stored mandate, call
//! [`relifecycle`], and write what it returns.

use crate::domain::{Mandate, MandateStatus};
use crate::ports::StoreError;

/// The stored mandate with `update`'s lifecycle (the stored scope stays), if the stored status
/// is still `expected`; else [`StoreError::Conflict`] naming the mandate.
pub(crate) fn relifecycle(
    stored: &Mandate,
    update: &Mandate,
    expected: MandateStatus,
) -> Result<Mandate, StoreError> {
    let conflict = |message: String| StoreError::Conflict {
        entity: "mandate",
        id: stored.id().to_string(),
        message,
    };
    if stored.status() != expected {
        return Err(conflict(format!(
            "the status is {}, not {expected}",
            stored.status()
        )));
    }
    let mut spec = stored.spec().clone();
    spec.lifecycle = update.lifecycle().clone();
    Mandate::new(spec).map_err(|e| conflict(e.to_string()))
}
