//! The sampling decision: made once per trace, so traces are whole or absent.
//!
//! An incoming decision always wins (debug forces sampling). Otherwise the backend's percentage
//! decides deterministically from a stable key — the trace id when one came in, else the
//! `x-request-id`, whatever its format — so every hop that sees the same key agrees.

use super::b3::SamplingState;

/// 100% in basis points (0.01% steps, Kuma's granularity).
pub const ALL: u32 = 10_000;

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    pub debug: bool,
}

/// A percentage (0–100) as basis points, rounded to Kuma's 0.01 granularity.
pub fn basis_points(percent: f64) -> u32 {
    if percent.is_nan() || percent <= 0.0 {
        0
    } else if percent >= 100.0 {
        ALL
    } else {
        (percent * 100.0).round() as u32
    }
}

pub fn decide(incoming: Option<SamplingState>, key: &[u8], basis_points: u32) -> Decision {
    match incoming {
        Some(SamplingState::Debug) => Decision {
            sampled: true,
            debug: true,
        },
        Some(SamplingState::Accept) => Decision {
            sampled: true,
            debug: false,
        },
        Some(SamplingState::Deny) => Decision {
            sampled: false,
            debug: false,
        },
        None => Decision {
            sampled: match basis_points {
                0 => false,
                ALL.. => true,
                bp => bucket(key) < bp,
            },
            debug: false,
        },
    }
}

/// The key's bucket in 0..10_000: FNV-1a, then a 64-bit finalizer so that keys differing in a
/// few characters (sequential request ids) still spread evenly.
pub fn bucket(key: &[u8]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    (hash % u64::from(ALL)) as u32
}

/// MeshTrace's three sampling knobs, in basis points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Caps everything, traced or forced.
    pub overall: u32,
    /// Forces tracing when the request carries `x-client-trace-id`.
    pub client: u32,
    /// Decides the rest.
    pub random: u32,
}

/// MeshTrace's decision, as Envoy combines the knobs: with no incoming sampling state, a
/// request with `x-client-trace-id` is forced with probability `client`, the rest sampled with
/// probability `random`, and `overall` caps all. Envoy draws `random` and `overall` from the
/// same request-id value, and `client` at random per hop; here `client` gets its own draw
/// from the same stable key, so every hop agrees.
pub fn decide_knobs(
    incoming: Option<SamplingState>,
    key: &[u8],
    client_trace_id: bool,
    knobs: &Knobs,
) -> Decision {
    if incoming.is_some() {
        return decide(incoming, key, ALL);
    }
    let draw = bucket(key);
    let forced = client_trace_id && client_bucket(key) < knobs.client;
    Decision {
        sampled: (forced || draw < knobs.random) && draw < knobs.overall,
        debug: false,
    }
}

/// A second bucket from the same key, independent of [`bucket`]: the key followed by a fixed
/// suffix.
pub fn client_bucket(key: &[u8]) -> u32 {
    let mut salted = Vec::with_capacity(key.len() + 7);
    salted.extend_from_slice(key);
    salted.extend_from_slice(b"#client");
    bucket(&salted)
}
