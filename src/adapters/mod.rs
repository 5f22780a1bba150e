//! Adapters: implementations of the ports, each behind a cargo feature.
//!
//! Empty in this release: see [`crate::ports`].
