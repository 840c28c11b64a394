//! The bodies of the fuzz targets, one function per target.
//!
//! The same file is compiled twice: as the library the `fuzz_targets/` binaries call, and as a
//! module of the main crate's `tests/fuzz_regressions.rs`, which replays the committed seeds and
//! every minimised finding through these functions on stable Rust, without cargo-fuzz. So this
//! file uses only what both builds have: `tracecar`, `http`, `serde_json` and `std`.

use std::path::Path;
use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tracecar::policy::resource::Kind;
use tracecar::policy::{Dataplane, Diagnostic, PolicySet, Resource, load, validate};
use tracecar::trace::b3::{self, SamplingState};
use tracecar::trace::context::Read;
use tracecar::trace::{datadog, w3c};

/// The headers `b3_extract` fills, chosen by the first byte of each input line (`byte % 6`, so
/// the ASCII digits `0`–`5` name them in readable seeds).
pub const B3_HEADERS: [HeaderName; 6] = b3::HEADERS;

/// Turns fuzz input into request headers: each `\n`-separated line is one header, its first
/// byte selecting the name and the rest the value. A header may repeat (the first value must
/// win); values `HeaderValue::from_bytes` refuses are skipped, as hyper would never hand them
/// over.
pub fn b3_headers(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        headers.append(B3_HEADERS[usize::from(selector) % 6].clone(), value);
    }
    headers
}

/// Target `b3_extract`: `extract` never panics, and a context it reads survives `inject` then
/// `extract` unchanged, in the form (single or multi) the caller used.
pub fn b3_extract(data: &[u8]) {
    let headers = b3_headers(data);
    let extracted = b3::extract(&headers);
    let Some(context) = extracted.context else {
        return;
    };
    // What the proxy forwards: the caller's decision, or (deferred) a decision of its own.
    let debug = extracted.sampling == Some(SamplingState::Debug);
    let sampled = matches!(
        extracted.sampling,
        Some(SamplingState::Accept | SamplingState::Debug)
    );
    let expected_sampling = Some(match (debug, sampled) {
        (true, _) => SamplingState::Debug,
        (false, true) => SamplingState::Accept,
        (false, false) => SamplingState::Deny,
    });

    let mut fresh = HeaderMap::new();
    b3::inject(&mut fresh, &context, sampled, debug, extracted.single);
    let back = b3::extract(&fresh);
    assert_eq!(back.context, Some(context), "context lost: {fresh:?}");
    assert_eq!(back.sampling, expected_sampling, "sampling lost: {fresh:?}");
    assert_eq!(back.single, extracted.single, "form lost: {fresh:?}");
    assert!(!back.invalid, "inject wrote a malformed context: {fresh:?}");

    // `inject` over the caller's own headers: no stale B3 header may survive to change what
    // the next hop reads.
    let mut reused = headers.clone();
    b3::inject(&mut reused, &context, sampled, debug, extracted.single);
    assert_eq!(
        b3::extract(&reused),
        back,
        "stale headers survived: {reused:?}"
    );
}

/// Headers from fuzz input as `b3_headers` makes them: one per `\n`-separated line, the first
/// byte choosing among `names` (`byte % names.len()`), the rest the value.
pub fn headers_from(data: &[u8], names: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        headers.append(names[usize::from(selector) % names.len()].clone(), value);
    }
    headers
}

/// The headers `w3c_extract` fills: `0` traceparent, `1` tracestate.
pub const W3C_HEADERS: [HeaderName; 2] = [w3c::TRACEPARENT, w3c::TRACESTATE];

/// Target `w3c_extract`: `extract` never panics; a context it reads survives `inject` then
/// `extract` unchanged (ids, width, sampled and random flags, `tracestate` byte for byte); a
/// `tracestate` it keeps is a valid list of 1 to 32 members; and `inject` over the caller's
/// own headers leaves nothing stale.
pub fn w3c_extract(data: &[u8]) {
    let headers = headers_from(data, &W3C_HEADERS);
    let extracted = w3c::extract(&headers);
    let Read::Valid(context) = &extracted.context else {
        assert!(
            !extracted.state_invalid,
            "tracestate judged without a traceparent"
        );
        return;
    };
    let ids = context.ids.expect("a valid traceparent has ids");
    assert_ne!(
        ids.trace_id.high | ids.trace_id.low,
        0,
        "all-zero trace id read"
    );
    assert_ne!(ids.span_id.0, 0, "all-zero span id read");
    if let Some(state) = &context.trace_state {
        let members = w3c::validate_tracestate(state.as_bytes());
        assert!(
            matches!(members, Some(1..=32)),
            "kept an invalid or empty tracestate: {state:?}"
        );
    }
    let sampled = context.sampling == Some(SamplingState::Accept);
    let mut fresh = HeaderMap::new();
    w3c::inject(
        &mut fresh,
        &ids,
        sampled,
        context.random,
        context.trace_state.as_ref(),
    );
    let back = w3c::extract(&fresh);
    assert_eq!(&back.context, &extracted.context, "context lost: {fresh:?}");
    assert!(
        !back.state_invalid,
        "inject wrote an invalid tracestate: {fresh:?}"
    );

    let mut reused = headers.clone();
    w3c::inject(
        &mut reused,
        &ids,
        sampled,
        context.random,
        context.trace_state.as_ref(),
    );
    assert_eq!(
        w3c::extract(&reused),
        back,
        "stale headers survived: {reused:?}"
    );
}

/// The headers `datadog_extract` fills: `0` trace id, `1` parent id, `2` sampling priority,
/// `3` origin, `4` tags.
pub const DATADOG_HEADERS: [HeaderName; 5] = [
    datadog::TRACE_ID,
    datadog::PARENT_ID,
    datadog::SAMPLING_PRIORITY,
    datadog::ORIGIN,
    datadog::TAGS,
];

/// Target `datadog_extract`: `extract` never panics; a context it reads survives `inject` then
/// `extract` unchanged (ids with the `_dd.p.tid` high bits, priority, origin, `_dd.p.*` tags);
/// and `inject` over the caller's own headers leaves nothing stale.
pub fn datadog_extract(data: &[u8]) {
    let headers = headers_from(data, &DATADOG_HEADERS);
    let extracted = datadog::extract(&headers);
    let Read::Valid(context) = &extracted.context else {
        return;
    };
    let ids = context.ids.expect("a valid Datadog context has ids");
    assert_ne!(ids.trace_id.low, 0, "zero trace id read");
    assert_ne!(ids.span_id.0, 0, "zero parent id read");
    let sampled = matches!(
        context.sampling,
        Some(SamplingState::Accept | SamplingState::Debug)
    );
    let debug = context.sampling == Some(SamplingState::Debug);
    // A deferred decision is written as this hop's own; only a caller's decision travels as is.
    let priority = datadog::priority(sampled, debug, context.dd_priority);
    let mut fresh = HeaderMap::new();
    datadog::inject(
        &mut fresh,
        &ids,
        priority,
        context.dd_origin.as_ref(),
        context.dd_tags.as_ref(),
    );
    let back = datadog::extract(&fresh);
    assert!(!back.tags_invalid, "inject wrote malformed tags: {fresh:?}");
    let Read::Valid(again) = &back.context else {
        panic!("inject wrote an unreadable context: {fresh:?}");
    };
    assert_eq!(again.ids, context.ids, "ids lost: {fresh:?}");
    assert_eq!(again.dd_origin, context.dd_origin, "origin lost: {fresh:?}");
    assert_eq!(again.dd_tags, context.dd_tags, "tags lost: {fresh:?}");
    if context.sampling.is_some() {
        assert_eq!(again.sampling, context.sampling, "decision lost: {fresh:?}");
        assert_eq!(
            again.dd_priority, context.dd_priority,
            "priority changed: {fresh:?}"
        );
    }

    let mut reused = headers.clone();
    datadog::inject(
        &mut reused,
        &ids,
        priority,
        context.dd_origin.as_ref(),
        context.dd_tags.as_ref(),
    );
    assert_eq!(
        datadog::extract(&reused),
        back,
        "stale headers survived: {reused:?}"
    );
}

/// The name every fuzz input is "read from".
const POLICY_FILE: &str = "fuzz/policy.yaml";

fn example_dataplane() -> &'static Dataplane {
    static DATAPLANE: OnceLock<Dataplane> = OnceLock::new();
    DATAPLANE.get_or_init(|| {
        let text = include_str!("../../config/dataplane.yaml");
        let (mut resources, diagnostics) = load::parse_str(Path::new("dataplane.yaml"), text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        match resources.pop() {
            Some(Resource::Dataplane(dp)) => dp,
            other => panic!("config/dataplane.yaml holds no Dataplane: {other:?}"),
        }
    })
}

fn example_policy() -> &'static PolicySet {
    static POLICY: OnceLock<PolicySet> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut resources = Vec::new();
        for (name, text) in [
            ("mesh.yaml", include_str!("../../config/mesh.yaml")),
            (
                "trace-all-traffic.yaml",
                include_str!("../../config/trace-all-traffic.yaml"),
            ),
        ] {
            let (mut r, diagnostics) = load::parse_str(Path::new(name), text);
            assert!(diagnostics.is_empty(), "{diagnostics:?}");
            resources.append(&mut r);
        }
        PolicySet::from_resources(resources)
    })
}

/// Every diagnostic is printed as one line (diagnostic.rs's contract).
fn assert_one_line(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        let line = d.to_string();
        assert!(!line.contains('\n'), "diagnostic spans lines: {line:?}");
    }
}

/// Target `policy_load`: any text as a policy file, through the steps of `policy::check`
/// (parse, validate each resource, validate the set), then the effective configuration of an
/// example Dataplane under it, rendered as `/config_dump` does. Nothing panics; every
/// diagnostic is one line.
pub fn policy_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = Path::new(POLICY_FILE);
    let (resources, mut diagnostics) = load::parse_str(file, &text);
    for r in &resources {
        diagnostics.extend(validate::diagnostics_for(
            r.kind(),
            r.meta(),
            validate::validate_resource(r),
        ));
    }
    diagnostics.extend(validate::validate_set(&resources));
    assert_one_line(&diagnostics);
    let set = PolicySet::from_resources(resources);
    let effective = set.effective(example_dataplane(), 1);
    serde_json::to_vec_pretty(&effective).expect("the effective configuration serialises");
}

/// Target `dataplane_load`: any text as the dataplane file, through the steps of
/// `load::load_dataplane` and `policy::check` in memory (parse, exactly one Dataplane,
/// `validate_dataplane`), then its effective configuration under the example policy. Nothing
/// panics; every diagnostic is one line.
pub fn dataplane_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = Path::new(POLICY_FILE);
    let (resources, mut diagnostics) = load::parse_str(file, &text);
    if diagnostics.iter().any(Diagnostic::is_error) {
        assert_one_line(&diagnostics);
        return;
    }
    let mut dataplanes: Vec<Dataplane> = Vec::new();
    for r in resources {
        match r {
            Resource::Dataplane(d) => dataplanes.push(d),
            other => diagnostics.push(
                Diagnostic::warning(file, "not a Dataplane, ignored in the dataplane file")
                    .resource(format!("{}/{}", other.kind(), other.meta().name)),
            ),
        }
    }
    if dataplanes.len() != 1 {
        assert_one_line(&diagnostics);
        return;
    }
    let dp = dataplanes.remove(0);
    diagnostics.extend(validate::diagnostics_for(
        Kind::Dataplane,
        &dp.meta,
        validate::validate_dataplane(&dp),
    ));
    assert_one_line(&diagnostics);
    let effective = example_policy().effective(&dp, 1);
    serde_json::to_vec_pretty(&effective).expect("the effective configuration serialises");
}

/// Target `h1_heads`: the HTTP/1.1 fast path's parsers and encoders, without I/O (the checks
/// live beside them in `tracecar::proxy::h1::fuzz::heads`, built with the `fuzzing` feature).
/// The input is read as a request head with its body (when plain: offsets inside the head, and the request the upstream gets
/// parses back with the same method, target and fields), as upstream response heads (1xx
/// skipped; the caller's head parses back with the same status and no hop-by-hop field), and
/// as a chunked body (the same outcome whole, byte by byte and split in two).
pub fn h1_heads(data: &[u8]) {
    tracecar::proxy::h1::fuzz::heads(data);
}
