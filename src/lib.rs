#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// On docs.rs (nightly rustdoc with `--cfg docsrs`), every item behind a cargo feature carries a
// badge naming the feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations)]

#[cfg(feature = "acp")]
pub mod acp;
pub mod adapters;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod design;
pub mod domain;
pub mod engine;
#[cfg(feature = "forms")]
pub mod forms;
pub mod json;
pub mod ports;
#[cfg(any(feature = "mpp", feature = "x402"))]
pub mod protocols;
#[cfg(feature = "json-schema")]
pub mod schema;
#[cfg(feature = "axum")]
pub mod service;
#[cfg(feature = "proptest")]
pub mod strategies;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "tokens")]
pub mod tokens;
