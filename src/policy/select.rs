//! Which TrafficTrace, and so which tracing backend, applies to this proxy: Kuma's rule for
//! "Dataplane policies" (README, "Which TrafficTrace applies").
//!
//! 1. A selector matches when ONE inbound's tags hold every selector key with an equal value,
//!    or `*` (which still needs the key). Tags are never merged across inbounds.
//! 2. A policy ranks as its best matching selector: more tags wins, then more exact values.
//! 3. Equal rank: the policy created later wins; still equal, the name that sorts first.
//!
//! Everything here is a pure function of its inputs, so the answer never depends on the order
//! in which files were read.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::resource::{Dataplane, Inbound, Mesh, Selector, TrafficTrace};

/// How specific a matching selector is. Field order gives the comparison: tag count first,
/// then exact (non-`*`) values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Rank {
    pub tags: usize,
    pub exact: usize,
}

const WILDCARD: &str = "*";

/// Whether `selector` matches one inbound's tags.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(key, want)| match tags.get(key) {
        Some(have) => want == WILDCARD || want == have,
        None => false,
    })
}

pub fn selector_rank(selector: &BTreeMap<String, String>) -> Rank {
    Rank {
        tags: selector.len(),
        exact: selector.values().filter(|v| *v != WILDCARD).count(),
    }
}

/// A TrafficTrace's best matching selector on this dataplane.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub traffic_trace: &'a TrafficTrace,
    pub selector: &'a Selector,
    pub inbound: &'a Inbound,
    pub rank: Rank,
}

/// The TrafficTrace's best matching selector, if any selector matches any single inbound.
pub fn best_match<'a>(dataplane: &'a Dataplane, tt: &'a TrafficTrace) -> Option<Match<'a>> {
    let inbounds = &dataplane.spec.networking().inbound;
    tt.spec
        .selectors
        .iter()
        .filter_map(|selector| {
            inbounds
                .iter()
                .find(|inbound| selector_matches(&selector.tags, &inbound.tags))
                .map(|inbound| Match {
                    traffic_trace: tt,
                    selector,
                    inbound,
                    rank: selector_rank(&selector.tags),
                })
        })
        // On equal rank keep the first selector written, so the explanation is stable.
        .fold(None, |best: Option<Match<'a>>, m| match best {
            Some(b) if b.rank >= m.rank => Some(b),
            _ => Some(m),
        })
}

/// Orders two matches: `Greater` means `a` wins.
fn precedence(a: &Match<'_>, b: &Match<'_>) -> Ordering {
    a.rank
        .cmp(&b.rank)
        // Created later wins. An absent creation time counts as the earliest, so that the order
        // stays total (and selection independent of input order) when only some have one.
        .then_with(|| {
            a.traffic_trace
                .meta
                .creation_time
                .cmp(&b.traffic_trace.meta.creation_time)
        })
        // The name that sorts first wins.
        .then_with(|| b.traffic_trace.meta.name.cmp(&a.traffic_trace.meta.name))
}

/// The TrafficTrace that applies to `dataplane`, among those of its mesh.
pub fn select_traffic_trace<'a>(
    dataplane: &'a Dataplane,
    traffic_traces: &'a [TrafficTrace],
) -> Option<Match<'a>> {
    traffic_traces
        .iter()
        .filter(|tt| tt.meta.mesh == dataplane.meta.mesh)
        .filter_map(|tt| best_match(dataplane, tt))
        .max_by(precedence)
}

/// The mesh a dataplane belongs to, if it was loaded.
pub fn find_mesh<'a>(dataplane: &Dataplane, meshes: &'a [Mesh]) -> Option<&'a Mesh> {
    meshes.iter().find(|m| m.meta.name == dataplane.meta.mesh)
}
