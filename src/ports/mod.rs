//! Ports: the traits the engine needs from the outside world (store, PSP, vault, clock, audit).
//!
//! Empty in this release: the domain is usable on its own, with usage supplied by the caller.
//! The engine and its ports arrive in the next release (see CHANGELOG.md).
