//! tracecar: a tracing sidecar proxy. The README says what it does; ARCHITECTURE.md says
//! where each rule lives.
//!
//! Layers, as the imports run (an arrow is "imports"):
//!
//! - `cli` → `app`, `demo`: the command line builds an [`app::RunConfig`]; `app` wires the
//!   rest together for `tracecar run`.
//! - `app` → `admin`, `export`, `trace`, `proxy`, `policy`, `drain`, `metrics`.
//! - `export` (getting spans out) → `trace` (per-request decisions, no I/O) →
//!   `proxy::observe` (the data path's observer seam; nothing else of `proxy`).
//! - `proxy` (the data path; knows no exporter) → `policy` (what users write), `metrics`,
//!   `drain`.
//! - `policy`, `metrics`, `drain` and `spare` (buffers a thread keeps between requests)
//!   import none of the others; `proxy` and `trace` use `spare`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod demo;
pub(crate) mod drain;
pub mod export;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod redirect;
pub(crate) mod spare;
pub mod trace;
