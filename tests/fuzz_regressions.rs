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
fn policy_load_seeds() {
    replay_seeds("policy_load", harness::policy_load);
}

#[test]
fn dataplane_load_seeds() {
    replay_seeds("dataplane_load", harness::dataplane_load);
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
