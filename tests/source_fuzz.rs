//! Robustness of `source::open` on damaged real checkpoints: random byte
//! flips (concentrated on the pickle and the zip directory), truncations
//! and splices of nanoGPT's `ckpt.pt`, in the zip and the legacy (non-zip)
//! format, must give `Ok` or `Err`, never a panic, and the reader's peak
//! heap use must stay below the file's size
//! (it maps the file instead of reading it, and caps what the pickle may
//! build). A counting global allocator measures the peak; this binary holds
//! one test so no other test thread allocates during a measurement.

mod support;

use std::path::Path;

use proptest::prelude::*;
use support::fixtures;

/// The fuzz runner's counting allocator, shared rather than copied.
#[path = "../fuzz/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Slack for fixed costs (error strings, hash maps of a few entries).
const SLACK: usize = 256 << 10;

/// Opens `path`, returning whether it succeeded and the peak extra heap
/// bytes used while opening (including the result itself).
fn measured_open(path: &Path) -> (bool, usize) {
    let base = alloc::start();
    let ok = kvant::source::open(path).is_ok();
    (ok, alloc::peak_since(base))
}

#[derive(Debug, Clone)]
enum Damage {
    /// XOR bytes at these offsets (fractions of a region) with these masks.
    Flip { region: u8, spots: Vec<(u32, u8)> },
    /// Keep only this fraction (per 65536) of the file.
    Truncate(u16),
    /// Copy `len` bytes from `from` to `to` (fractions of the file).
    Splice { from: u16, to: u16, len: u16 },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (0u8..3, prop::collection::vec((any::<u32>(), 1u8..=255), 1..24))
            .prop_map(|(region, spots)| Damage::Flip { region, spots }),
        1 => any::<u16>().prop_map(Damage::Truncate),
        1 => (any::<u16>(), any::<u16>(), 1u16..4096)
            .prop_map(|(from, to, len)| Damage::Splice { from, to, len }),
    ]
}

fn apply(orig: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = orig.to_vec();
    let n = b.len();
    let frac = |f: u16| (n as u64 * f as u64 / 65536) as usize;
    match d {
        Damage::Flip { region, spots } => {
            // 0: the pickle (first 20 KiB), 1: the zip directory (last
            // 32 KiB), 2: anywhere.
            let (start, len) = match region {
                0 => (0, 20 << 10),
                1 => (n - (32 << 10), 32 << 10),
                _ => (0, n),
            };
            for &(at, mask) in spots {
                b[start + at as usize % len] ^= mask;
            }
        }
        Damage::Truncate(f) => b.truncate(frac(*f)),
        Damage::Splice { from, to, len } => {
            let (from, to) = (frac(*from), frac(*to));
            let len = (*len as usize).min(n - from).min(n - to);
            let chunk = orig[from..from + len].to_vec();
            b[to..to + len].copy_from_slice(&chunk);
        }
    }
    b
}

#[test]
fn damaged_checkpoints_never_panic_and_stay_within_memory() {
    // Clean fixtures first: the baseline the damaged ones are held to.
    for rel in [
        "nanogpt-az/ckpt.pt",
        "nanogpt-az/best_model.pt",
        "nanogpt-az-fp16/ckpt.pt",
        "nanogpt-k256/ckpt.pt",
        "nanogpt-az-legacy-format/ckpt.pt",
        "nanogpt-az-legacy-format/best_model.pt",
        "hf-gpt2-az/model.safetensors",
    ] {
        let p = fixtures::path(rel);
        let size = std::fs::metadata(&p).expect("size").len() as usize;
        let (ok, peak) = measured_open(&p);
        assert!(ok, "{rel} should open");
        assert!(
            peak < size / 4,
            "{rel}: peak heap {peak} B for a {size} B file"
        );
    }
    // The zip form, and the legacy stream whose pickles fill its first
    // 8 KiB (region 0) and whose storages' element counts sit between
    // their bytes.
    for rel in ["nanogpt-az/ckpt.pt", "nanogpt-az-legacy-format/ckpt.pt"] {
        damage_campaign(rel);
    }
}

fn damage_campaign(rel: &str) {
    let orig = std::fs::read(fixtures::path(rel)).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.pt");
    let opened = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);
    let config = ProptestConfig {
        cases: 160,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/source_fuzz.txt",
            ),
        )),
        ..ProptestConfig::default()
    };
    // Found by this test: a flipped LONG_BINPUT index once grew the memo
    // table to that index (14 MB for a 13 MB file). Kept as a fixed case.
    let memo_flip = Damage::Flip {
        region: 0,
        spots: vec![(111_367_501, 9)],
    };
    std::fs::write(&path, apply(&orig, &memo_flip)).expect("write");
    let (_, peak) = measured_open(&path);
    assert!(
        peak <= orig.len() / 4,
        "{rel}: peak heap {peak} B after {memo_flip:?}"
    );
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&damage(), |d| {
            let bytes = apply(&orig, &d);
            std::fs::write(&path, &bytes).expect("write");
            let size = bytes.len();
            drop(bytes);
            let (ok, peak) = measured_open(&path);
            let counter = if ok { &opened } else { &refused };
            counter.set(counter.get() + 1);
            prop_assert!(
                peak <= size + SLACK,
                "{}: peak heap {} B for a {} B file after {:?}",
                rel,
                peak,
                size,
                d
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    // Both outcomes must occur, or the damage did not exercise the reader.
    let (opened, refused) = (opened.get(), refused.get());
    assert!(
        opened > 0 && refused > 0,
        "{rel}: opened {opened}, refused {refused}"
    );
}
