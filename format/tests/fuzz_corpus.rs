//! Replays every committed fuzz input through the fuzz targets' bodies on
//! the stable toolchain: the seed corpora under `fuzz/corpus/TARGET/` and
//! the crash inputs kept under `fuzz/regressions/TARGET/`. A panic in any
//! parser fails the test and names the file.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// A fuzz target's body.
type Target = fn(&[u8]);

/// The fuzz targets by directory name.
const TARGETS: [(&str, Target); 4] = [
    ("header", targets::header),
    ("bat_page", targets::bat_page),
    ("descriptor", targets::descriptor),
    ("delta", targets::delta),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Returns the files of `dir`, sorted; an absent directory has none.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `kind/TARGET/` through its target and returns the
/// number of inputs run and the files whose run panicked.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        for path in inputs(&fuzz_dir().join(kind).join(name)) {
            let data = fs::read(&path).expect("read corpus file");
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    (count, failures)
}

#[test]
fn seed_corpus_replays_without_panic() {
    let (count, failures) = replay("corpus");
    assert!(failures.is_empty(), "inputs that panicked: {failures:?}");
    assert!(count >= TARGETS.len(), "only {count} seed inputs found");
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        assert!(
            !inputs(&dir).is_empty(),
            "no seed inputs in {}",
            dir.display()
        );
    }
}

#[test]
fn regressions_replay_without_panic() {
    let (_, failures) = replay("regressions");
    assert!(failures.is_empty(), "inputs that panicked: {failures:?}");
}

#[test]
fn valid_seeds_parse() {
    let corpus = fuzz_dir().join("corpus");
    let header = fs::read(corpus.join("header/valid")).expect("read header seed");
    assert!(lamina_format::Header::decode(&header).is_ok());

    let page = fs::read(corpus.join("bat_page/valid")).expect("read BAT page seed");
    assert!(lamina_format::BatPage::decode(&page, 0).is_ok());

    let descriptor = fs::read(corpus.join("descriptor/two_deltas.json")).expect("read seed");
    assert!(lamina_format::Descriptor::parse(&descriptor).is_ok());
}

#[test]
fn corrupt_seeds_are_rejected() {
    let corpus = fuzz_dir().join("corpus");
    for name in ["bad_crc", "bad_magic", "truncated", "empty"] {
        let bytes = fs::read(corpus.join("header").join(name)).expect("read header seed");
        assert!(
            lamina_format::Header::decode(&bytes).is_err(),
            "header/{name}"
        );
    }
    for name in [
        "self_parent.json",
        "bad_cluster_size.json",
        "missing_top.json",
        "not_json",
    ] {
        let bytes = fs::read(corpus.join("descriptor").join(name)).expect("read seed");
        assert!(
            lamina_format::Descriptor::parse(&bytes).is_err(),
            "descriptor/{name}"
        );
    }
}
