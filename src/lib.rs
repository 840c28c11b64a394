//! tracecar: a tracing sidecar proxy. See DESIGN and the README for the contract.
//!
//! Layers, top to bottom (data flows down): `cli` → `policy` (what users write) → `trace`
//! (per-request decisions, no I/O) → `proxy` (the data path) → `export` (getting spans out).

pub mod admin;
pub mod app;
pub mod cli;
pub mod demo;
pub mod export;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod redirect;
pub mod shutdown;
pub mod trace;
