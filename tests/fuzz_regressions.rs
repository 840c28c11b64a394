//! The fuzz targets' corpora as ordinary tests, on stable Rust and without cargo-fuzz: every
//! committed seed under `fuzz/seeds/<target>/` and every minimised finding goes through the
//! very functions the fuzzers call (`fuzz/src/lib.rs`, compiled here as a module).

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// Runs `target` on every file of `fuzz/seeds/<name>/`, naming the file that fails.
fn replay_seeds(name: &str, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(outcome.is_ok(), "seed {} fails", file.display());
    }
}

#[test]
fn b3_extract_seeds() {
    replay_seeds("b3_extract", harness::b3_extract);
}

#[test]
fn w3c_extract_seeds() {
    replay_seeds("w3c_extract", harness::w3c_extract);
}

#[test]
fn datadog_extract_seeds() {
    replay_seeds("datadog_extract", harness::datadog_extract);
}

#[test]
fn policy_load_seeds() {
    replay_seeds("policy_load", harness::policy_load);
}

#[test]
fn dataplane_load_seeds() {
    replay_seeds("dataplane_load", harness::dataplane_load);
}

#[test]
fn h1_heads_seeds() {
    replay_seeds("h1_heads", harness::h1_heads);
}

/// The seeds are real inputs, not just inputs that do not crash: the B3 ones carry what the
/// file name says, the config ones load without errors.
#[test]
fn seeds_mean_what_they_say() {
    use tracecar::trace::b3::{SamplingState, extract};

    let seed = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/seeds/b3_extract")
                .join(name),
        )
        .unwrap()
    };
    let full = extract(&harness::b3_headers(&seed("single-full")));
    assert!(full.single && full.context.is_some_and(|c| c.parent_id.is_some()));
    let multi = extract(&harness::b3_headers(&seed("multi-full")));
    assert!(!multi.single && multi.context.is_some_and(|c| c.parent_id.is_some()));
    assert_eq!(multi.sampling, Some(SamplingState::Accept));
    let fallback = extract(&harness::b3_headers(&seed("invalid-single-valid-multi")));
    assert!(fallback.invalid && fallback.context.is_some());

    let dataplane =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/dataplane_load/dataplane.yaml");
    let (_, warnings) = tracecar::policy::load::load_dataplane(&dataplane).expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
}

// ---------------------------------------------------------------------------------------------
// Findings. Each test below reproduces a crash the fuzzers found; it fails until the bug is
// fixed in `src/`. The raw inputs libFuzzer saved are kept under `fuzz/regressions/<target>/`.

/// Runs every saved crash input of `target` and reports the ones that still fail.
fn replay_findings(name: &str, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(name);
    let mut failing = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let file = entry.unwrap().path();
        let data = std::fs::read(&file).unwrap();
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            failing.push(file.display().to_string());
        }
    }
    assert!(failing.is_empty(), "still failing: {failing:?}");
}

#[test]
fn policy_load_findings() {
    replay_findings("policy_load", harness::policy_load);
}

#[test]
fn dataplane_load_findings() {
    replay_findings("dataplane_load", harness::dataplane_load);
}

#[test]
fn h1_heads_findings() {
    replay_findings("h1_heads", harness::h1_heads);
}

/// Every rendered diagnostic of `yaml` read as a policy file, the steps of `policy::check`.
fn policy_lines(yaml: &str) -> Vec<String> {
    use tracecar::policy::load::parse_str;
    use tracecar::policy::validate::{diagnostics_for, validate_resource, validate_set};

    let (resources, mut found) = parse_str(Path::new("policy.yaml"), yaml);
    for r in &resources {
        found.extend(diagnostics_for(r.kind(), r.meta(), validate_resource(r)));
    }
    found.extend(validate_set(&resources));
    found.iter().map(ToString::to_string).collect()
}

fn assert_one_line_each(lines: &[String]) {
    assert!(!lines.is_empty());
    for line in lines {
        assert!(!line.contains('\n'), "diagnostic spans lines: {line:?}");
    }
}

/// Found by `policy_load` (after ~105 s, 201,451 runs): a resource name holding a line break (here a
/// YAML escape; the fuzzer used bare CRs, which YAML folds to line breaks) is printed raw in
/// the `Kind/name` part of its diagnostics. `Diagnostic::error` folds only the message;
/// `resource()` and `at()` take user text as it is.
#[test]
fn resource_name_with_line_break_prints_one_line() {
    assert_one_line_each(&policy_lines("type: Mesh\nname: \"a\\nb\"\n"));
}

/// The same, through the fuzz target (minimised finding).
#[test]
fn resource_name_with_line_break_fuzz_target() {
    harness::policy_load(b"type: Mesh\nname: \"a\\nb\"\n");
}

/// The same flaw in the warning for a Kuma kind tracecar skips (`MeshRetry/<name>`).
#[test]
fn skipped_kind_name_with_line_break_prints_one_line() {
    assert_one_line_each(&policy_lines("type: MeshRetry\nname: \"a\\nb\"\n"));
}

/// The same flaw in the field path: an unknown key of a backend's `conf` is printed raw in
/// `tracing.backends[0].config.<key>`.
#[test]
fn conf_key_with_line_break_prints_one_line() {
    assert_one_line_each(&policy_lines(
        "type: Mesh\nname: m\ntracing:\n  backends:\n  - name: z\n    type: zipkin\n    conf:\n      url: http://c:9411/\n      \"a\\nb\": 1\n",
    ));
}

/// The same flaw through the dataplane file (`dataplane_load`). Written by hand from the
/// `policy_load` finding: the 10-minute `dataplane_load` run did not reach it.
#[test]
fn dataplane_name_with_line_break_fuzz_target() {
    harness::dataplane_load(b"type: Dataplane\nname: \"a\\nb\"\n");
}

/// Found by `h1_heads` (within the first second, ~116,000 runs): the fast path parsed the
/// target `/#1k` into a `Uri`, which drops the fragment, and sent the upstream `GET /`. A
/// target the `Uri` does not keep whole now goes to the general path (`h1::request::request_parts`).
#[test]
fn h1_target_with_fragment_fuzz_target() {
    harness::h1_heads(b"GET /#1k HTTP/1.1\r\nHost: a\r\n\r\n");
}
