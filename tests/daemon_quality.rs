//! The quality gate end to end: the real `kvant watch` binary measures
//! every output of a drop against the checkpoint's own full-precision
//! weights on its held-out text, registers only what is within budget on
//! the Ollama emulator, chooses `auto`'s type, draws the report page
//! (checked in headless Chromium), keeps `<model>:best`, and survives a
//! `kill -9` mid-measurement. The numbers are checked against `kvant
//! eval` on the same files (itself proven against llama.cpp in
//! eval_stats).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kvant::daemon::Step;
use serde_json::Value;

use support::archive::{read_stored_zip, stored_zip};
use support::daemon::{
    copy_dir, digest_of, setup, state, tags, wait_for, wait_for_version, Daemon,
};
use support::emulator::Emulator;
use support::fixtures;

/// Small evaluations: a debug build measures every type in seconds.
const SMALL_EVAL: &str = "eval_ctx = 64\neval_chunks = 4\n";

/// A drop folder: nanogpt-k256 (its ckpt.pt, tokenizer.json and
/// heldout.txt), the corpus's train.txt as calibration text, and
/// `kvant_toml`. Staged, then renamed into the inbox.
fn k256_drop(dir: &Path, name: &str, kvant_toml: &str, calibration: bool) {
    let staging = dir.join(format!("staging-{name}"));
    copy_dir(&fixtures::path("nanogpt-k256"), &staging);
    std::fs::remove_file(staging.join("expected.json")).unwrap();
    if calibration {
        std::fs::copy(
            fixtures::path("corpus/train.txt"),
            staging.join("train.txt"),
        )
        .unwrap();
    }
    std::fs::write(staging.join("kvant.toml"), kvant_toml).unwrap();
    std::fs::rename(&staging, dir.join("inbox").join(name)).unwrap();
}

fn kvant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvant"))
        .args(args)
        .output()
        .unwrap()
}

fn ok_stdout(args: &[&str]) -> String {
    let out = kvant(args);
    assert!(
        out.status.success(),
        "kvant {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn report_json(dir: &Path, model: &str) -> Value {
    let p = dir
        .join("out")
        .join(model)
        .join(format!("{model}.report.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// The report's entry for `file_type`.
fn measured<'a>(report: &'a Value, file_type: &str) -> &'a Value {
    report["quality"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["file_type"] == file_type)
        .unwrap_or_else(|| panic!("{file_type} not in the report: {report:#}"))
}

fn names(url: &str) -> Vec<String> {
    tags(url)
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-12
}

/// `kvant eval FILE --base BASE --text heldout.txt -c 64 --chunks 4`.
fn eval_against(file: &Path, base: &Path) -> Value {
    let text = fixtures::path("nanogpt-k256/heldout.txt");
    let out = ok_stdout(&[
        "eval",
        file.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "-c",
        "64",
        "--chunks",
        "4",
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_budget_between_two_types_registers_only_the_one_within_it() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &[]);
    k256_drop(
        dir.path(),
        "qk",
        &format!("types = [\"q8_0\", \"q2_k\"]\nmax_kld = 0.001\n{SMALL_EVAL}"),
        true,
    );
    wait_for(dir.path(), &["qk"], Step::Registered, &d, 900);
    let report = report_json(dir.path(), "qk");
    let (q8, q2) = (measured(&report, "q8_0"), measured(&report, "q2_k"));
    let kld = |t: &Value| t["kld_mean"].as_f64().unwrap();
    assert!(
        kld(q8) < 0.001 && kld(q2) > 0.001,
        "the budget must lie between the two types: {report:#}"
    );
    assert_eq!(q8["verdict"], "pass");
    assert_eq!(q8["published"], true);
    assert_eq!(q2["verdict"], "over_budget");
    assert_eq!(q2["published"], false);
    assert_eq!(report["quality"]["imatrix_text"], "train.txt");
    assert_eq!(report["quality"]["text"], "heldout.txt");

    // Registered: Q8_0 and its tags; Q2_K written, never registered.
    let listed = names(&emu.url);
    for want in ["qk:q8_0", "qk:latest"] {
        assert!(listed.iter().any(|n| n == want), "{want}: {listed:?}");
    }
    assert!(
        !listed.iter().any(|n| n.starts_with("qk:q2_k")),
        "{listed:?}"
    );
    let out = dir.path().join("out/qk");
    assert!(out.join("qk-q2_k.gguf").is_file());
    let log = d.log();
    let warn = log
        .lines()
        .find(|l| l.contains("quality gate: q2_k not registered"))
        .unwrap_or_else(|| panic!("no WARN line for q2_k:\n{log}"));
    assert!(
        warn.contains("WARN") && warn.contains("qk") && warn.contains("budget 0.001"),
        "{warn}"
    );
    let state_dir = dir.path().join("state");
    let status = ok_stdout(&["status", "--state-dir", state_dir.to_str().unwrap()]);
    assert!(
        status.contains("q2_k") && status.contains("not registered (quality gate)"),
        "{status}"
    );
    let table = ok_stdout(&[
        "report",
        "qk",
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--output",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert!(
        table.contains("Q2_K") && table.contains("> budget 0.001") && table.contains("Q8_0"),
        "{table}"
    );
    let modelfile = std::fs::read_to_string(out.join("qk-q8_0.Modelfile")).unwrap();
    assert!(
        modelfile.starts_with("# kvant: Q8_0, KLD ") && modelfile.contains("on heldout.txt"),
        "{modelfile}"
    );

    // The report's numbers are kvant eval's on the same files and text,
    // against an F32 GGUF of the same checkpoint.
    let base = dir.path().join("base-f32.gguf");
    ok_stdout(&[
        "convert",
        fixtures::path("nanogpt-k256").to_str().unwrap(),
        "--type",
        "f32",
        "-o",
        base.to_str().unwrap(),
    ]);
    for (t, entry) in [("q8_0", q8), ("q2_k", q2)] {
        let e = eval_against(&out.join(format!("qk-{t}.gguf")), &base);
        let k = &e["kld"];
        for (ours, theirs) in [
            (&entry["kld_mean"], &k["kld"]["value"]),
            (&entry["ppl"], &k["ppl"]["value"]),
            (&entry["ppl_base"], &k["ppl_base"]["value"]),
            (&entry["same_top_p"], &k["same_top"]["value"]),
            (&entry["rms_dp"], &k["p_diff_rms"]["value"]),
        ] {
            let (a, b) = (ours.as_f64().unwrap(), theirs.as_f64().unwrap());
            assert!(
                close(a, b, 1e-6),
                "{t}: report {a} vs kvant eval {b}\n{e:#}"
            );
        }
        assert_eq!(entry["n_tokens"], k["n_tokens"], "{t}");
    }

    // The page: one point per type in each chart, the budget lines.
    let page = out.join("qk.report.html");
    let dom = support::browser::dom(&page, &dir.path().join("chromium"));
    let charts: Vec<&str> = dom.split("<svg").skip(1).collect();
    assert_eq!(charts.len(), 2, "KLD and PPL charts:\n{dom}");
    for c in &charts {
        assert_eq!(c.matches("<g class=\"point").count(), 2, "{c}");
        assert!(c.contains("<line class=\"budget\""), "{c}");
        assert_eq!(c.matches("class=\"point published\"").count(), 1, "{c}");
    }
}

#[test]
fn auto_picks_the_type_the_reports_own_numbers_say() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &[]);
    // Tight: only Q8_0 or Q6_K can keep a KLD this small. Loose: a
    // smaller mix passes.
    k256_drop(
        dir.path(),
        "tight",
        &format!("types = [\"auto\"]\nmax_kld = 0.00005\n{SMALL_EVAL}"),
        false,
    );
    k256_drop(
        dir.path(),
        "loose",
        &format!("types = [\"auto\"]\nmax_kld = 0.05\nmax_ppl_increase = 25\n{SMALL_EVAL}"),
        false,
    );
    wait_for(dir.path(), &["tight", "loose"], Step::Registered, &d, 1500);
    let order = [
        "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
        "q8_0",
    ];
    let mut chosen_of = Vec::new();
    for (model, budget_kld, budget_ppl) in [("tight", 0.00005, 10.0), ("loose", 0.05, 25.0)] {
        let report = report_json(dir.path(), model);
        let q = &report["quality"];
        let candidates = q["candidates"].as_array().unwrap();
        assert_eq!(candidates.len(), order.len(), "{q:#}");
        let passes = |c: &Value| {
            let m = &c["quality"];
            m["kld_mean"].as_f64().unwrap() <= budget_kld
                && (m["ppl"].as_f64().unwrap() / m["ppl_base"].as_f64().unwrap() - 1.0) * 100.0
                    <= budget_ppl
                && m["same_top_p"].as_f64().unwrap() >= 0.5
        };
        let chosen: Vec<&Value> = candidates
            .iter()
            .filter(|c| c["outcome"] == "chosen")
            .collect();
        assert_eq!(chosen.len(), 1, "{q:#}");
        let chosen = chosen[0];
        let at = order
            .iter()
            .position(|t| *t == chosen["file_type"])
            .unwrap();
        assert!(
            passes(chosen),
            "the chosen type is within budget: {chosen:#}"
        );
        // Every measured smaller candidate fails by its own numbers, and
        // the one just below the chosen one was measured: the search did
        // not skip a smaller type that would have passed.
        for c in &candidates[..at] {
            if !c["quality"].is_null() {
                assert!(
                    !passes(c),
                    "{c:#} passes but is smaller than the chosen one"
                );
            }
        }
        if at > 0 {
            assert!(!candidates[at - 1]["quality"].is_null(), "{q:#}");
        }
        let measured = candidates
            .iter()
            .filter(|c| !c["quality"].is_null())
            .count();
        assert!(measured <= 4, "bisection: {measured} measurements");
        // Only the chosen file is left, and it is what Ollama has.
        let files: Vec<String> = std::fs::read_dir(dir.path().join("out").join(model))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".gguf"))
            .collect();
        let file_type = chosen["file_type"].as_str().unwrap();
        assert_eq!(files, vec![format!("{model}-{file_type}.gguf")]);
        assert!(names(&emu.url).contains(&format!("{model}:{file_type}")));
        chosen_of.push(at);

        // The page marks the chosen type.
        let page = dir
            .path()
            .join("out")
            .join(model)
            .join(format!("{model}.report.html"));
        let dom = support::browser::dom(&page, &dir.path().join(format!("chromium-{model}")));
        let chart = dom.split("<svg").nth(1).unwrap();
        assert_eq!(
            chart.matches("class=\"point published chosen\"").count(),
            1,
            "{chart}"
        );
        // A screenshot: not blank, the chosen point's gold on screen.
        let shot = dir.path().join(format!("{model}.png"));
        support::browser::browse(
            &dir.path().join(format!("chromium-shot-{model}")),
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1300,1400".into(),
                format!("file://{}", page.display()),
            ],
        );
        let pixels = support::browser::screenshot_pixels(&shot);
        use support::browser::{ink, near, GOLD};
        assert!(
            ink(&pixels) * 200 > pixels.len(),
            "{model}: a blank screenshot"
        );
        let gold = near(&pixels, GOLD, 12);
        assert!(
            gold > 30,
            "{model}: the chosen point is not drawn ({gold} gold pixels)"
        );
    }
    assert!(
        chosen_of[0] >= order.iter().position(|t| *t == "q6_k").unwrap(),
        "tight picks Q6_K or Q8_0"
    );
    assert!(chosen_of[1] < chosen_of[0], "loose picks a smaller mix");
}

#[test]
fn without_held_out_text_the_drop_registers_as_before_and_says_not_measured() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &[]);
    let staging = dir.path().join("staging");
    copy_dir(&fixtures::path("nanogpt-k256"), &staging);
    std::fs::remove_file(staging.join("heldout.txt")).unwrap();
    std::fs::write(staging.join("kvant.toml"), "types = [\"q8_0\"]\n").unwrap();
    std::fs::rename(&staging, dir.path().join("inbox/plain")).unwrap();
    wait_for(dir.path(), &["plain"], Step::Registered, &d, 300);
    let report = report_json(dir.path(), "plain");
    assert_eq!(report["quality"]["measured"], false, "{report:#}");
    let reason = report["quality"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("heldout.txt") && reason.contains("val.bin"),
        "{reason}"
    );
    assert!(names(&emu.url).contains(&"plain:q8_0".to_string()));
    let log = d.log();
    assert_eq!(
        log.matches("not measured: no held-out text").count(),
        1,
        "said once:\n{log}"
    );
    assert!(!dir.path().join("out/plain/plain.report.html").exists());
}

#[test]
fn kill_9_during_measurement_redoes_only_what_was_not_recorded() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start_with_env(
        dir.path(),
        &emu.url,
        &[],
        &[("KVANT_TEST_FAULT", "slow-measure@qk")],
    );
    k256_drop(
        dir.path(),
        "qk",
        &format!("types = [\"q8_0\", \"q4_k_m\"]\n{SMALL_EVAL}"),
        false,
    );
    // Wait until the first type's measurement is journaled, then kill.
    let journal = dir.path().join("state/measure");
    let start = Instant::now();
    let recorded = loop {
        let found = std::fs::read_dir(&journal)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("measurements.json"))
            .find(|p| p.is_file());
        if let Some(p) = found {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no measurement journaled:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    d.kill9();
    let first: Value = serde_json::from_slice(&std::fs::read(&recorded).unwrap()).unwrap();
    assert_eq!(first.as_object().unwrap().len(), 1, "{first:#}");
    assert!(state(dir.path()).drops["qk"].step != Step::Registered);
    let before = std::fs::read_to_string(dir.path().join("kvant.log")).unwrap();

    let d = Daemon::start(dir.path(), &emu.url, &[]);
    wait_for(dir.path(), &["qk"], Step::Registered, &d, 900);
    let log = d.log();
    let after = &log[before.len()..];
    assert_eq!(
        after
            .matches("measured by an earlier run of this job")
            .count(),
        1,
        "the journaled type is not measured again:\n{after}"
    );
    let left = std::fs::read_dir(&journal).map_or(0, |rd| rd.count());
    assert_eq!(
        left, 0,
        "the measurement journal is removed once the outcome is journaled"
    );
    let listed = names(&emu.url);
    for want in ["qk:q8_0", "qk:q4_k_m", "qk:latest"] {
        assert_eq!(
            listed.iter().filter(|n| *n == want).count(),
            1,
            "{listed:?}"
        );
    }
    let emu_log = emu.log();
    assert_eq!(
        emu_log.matches("/api/create").count(),
        2,
        "one create per type, none repeated:\n{emu_log}"
    );
    let report = report_json(dir.path(), "qk");
    assert_eq!(report["quality"]["types"].as_array().unwrap().len(), 2);
}

/// nanoGPT's `ckpt.pt` at `iter`, its weights scaled by 1 ± `noise`
/// (a deterministic sign per element): a later or worse version of the
/// same training run, as nanoGPT rewrites the file at every eval.
fn k256_version(iter: u16, noise: f32) -> Vec<u8> {
    let bytes = std::fs::read(fixtures::path("nanogpt-k256/ckpt.pt")).unwrap();
    let mut entries = read_stored_zip(&bytes);
    for (name, data) in &mut entries {
        if name.ends_with("data.pkl") {
            let key = b"iter_num";
            let at = data.windows(key.len()).position(|w| w == key).unwrap();
            // `iter_num` then a memo put (r + 4 bytes), then BININT2.
            let int = at + key.len() + 5;
            assert_eq!(data[int], b'M', "iter_num is a BININT2");
            data[int + 1..int + 3].copy_from_slice(&iter.to_le_bytes());
        } else if name.contains("/data/") {
            for (i, v) in data.chunks_exact_mut(4).enumerate() {
                let x = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let sign = if (i.wrapping_mul(2_654_435_761) >> 7) & 1 == 0 {
                    1.0
                } else {
                    -1.0
                };
                v.copy_from_slice(&(x * (1.0 + sign * noise)).to_le_bytes());
            }
        }
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    stored_zip(&refs)
}

#[test]
fn a_rewritten_checkpoint_draws_its_history_and_best_points_at_the_lowest_perplexity() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &["--keep", "1"]);
    let drop = dir.path().join("inbox/run");
    let staging = dir.path().join("staging");
    copy_dir(&fixtures::path("nanogpt-k256"), &staging);
    std::fs::remove_file(staging.join("expected.json")).unwrap();
    std::fs::write(
        staging.join("kvant.toml"),
        format!("types = [\"q8_0\"]\n{SMALL_EVAL}"),
    )
    .unwrap();
    std::fs::write(staging.join("ckpt.pt"), k256_version(100, 0.3)).unwrap();
    std::fs::rename(&staging, &drop).unwrap();
    wait_for_version(dir.path(), "run", &d, 600, |v| v == "iter100");
    // iter200 is the original weights (the best); iter300 is noisier.
    for (iter, noise) in [(200u16, 0.0f32), (300, 0.1)] {
        let tmp = dir.path().join("ckpt.tmp");
        std::fs::write(&tmp, k256_version(iter, noise)).unwrap();
        std::fs::rename(&tmp, drop.join("ckpt.pt")).unwrap();
        wait_for_version(dir.path(), "run", &d, 600, |v| v == format!("iter{iter}"));
    }
    let report = report_json(dir.path(), "run");
    let history = report["quality"]["history"].as_array().unwrap();
    let versions: Vec<&str> = history
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["iter100", "iter200", "iter300"], "{history:#?}");
    let ppl: Vec<f64> = history.iter().map(|p| p["ppl"].as_f64().unwrap()).collect();
    assert!(ppl[1] < ppl[2] && ppl[2] < ppl[0], "{ppl:?}");
    assert_eq!(history[1]["best"], true);

    // `best` is iter200's file on the host; keep = 1 pruned iter100 but
    // never the best version.
    let listed = tags(&emu.url);
    assert_eq!(
        digest_of(&listed, "run:best"),
        digest_of(&listed, "run:q8_0-iter200")
    );
    assert_eq!(
        digest_of(&listed, "run:latest"),
        digest_of(&listed, "run:q8_0-iter300")
    );
    let all = names(&emu.url);
    assert!(!all.iter().any(|n| n == "run:q8_0-iter100"), "{all:?}");

    let page = dir.path().join("out/run/run.report.html");
    let dom = support::browser::dom(&page, &dir.path().join("chromium"));
    let charts: Vec<&str> = dom.split("<svg").skip(1).collect();
    assert_eq!(charts.len(), 3, "KLD, PPL and history charts");
    assert_eq!(charts[2].matches("<g class=\"point version").count(), 3);
    assert!(charts[2].contains("iter200 (best)"), "{}", charts[2]);
}
