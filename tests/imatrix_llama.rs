//! `kvant imatrix` against llama.cpp on nanogpt-k256 (F32, converted by
//! kvant) and the training corpus, `-c 128`, 2 chunks:
//!
//! * against the pinned llama.cpp library (the forward-pass judge) through
//!   a `cb_eval` callback, as `llama-imatrix` collects: Σx² per column
//!   within 1e-4 relative for every column (measured: 1e-6, the f32
//!   additions' order);
//! * against llama.cpp's own `llama-imatrix` binary (another llama.cpp
//!   version, built for this CPU, AVX-512 kernels included): the same
//!   tensors, Σx² per column within 1e-4 relative on average (every column
//!   within 1e-3), equal counts and chunk metadata, in both file forms;
//!   and both forms drive `kvant quantize --imatrix` and llama.cpp's
//!   `llama_model_quantize`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use kvant::convert::{convert, ConvertRequest, NoProgress, OutputSpec};
use kvant::gguf::{GgufFile, GgufValue};
use kvant::quant::{FileType, Imatrix};

use support::llama_tools::{run, write_llama_token_file};

const N_CTX: &str = "128";
/// Two chunks, the fewest llama-imatrix accepts: kvant's forward pass runs
/// unoptimized in the test profile.
const CHUNKS: &str = "2";

/// The F32 model and the corpus as nanoGPT token ids (llama.cpp's
/// tokenization of the same text llama-imatrix reads).
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let f32 = dir.join("k256-f32.gguf");
    let req = ConvertRequest {
        source: support::fixtures::path("nanogpt-k256"),
        outputs: vec![OutputSpec {
            file_type: FileType::F32,
            path: f32.clone(),
        }],
        ..Default::default()
    };
    convert(&req, &NoProgress, &AtomicBool::new(false)).expect("converting nanogpt-k256");
    let text = support::fixtures::path("corpus/train.txt");
    let bin = dir.join("train.bin");
    write_llama_token_file(&f32, &text, &bin);
    (f32, text, bin)
}

fn kvant_imatrix(model: &Path, tokens: &Path, out: &Path, format: &str) {
    let st = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .arg("imatrix")
        .arg(model)
        .arg("--tokens")
        .arg(tokens)
        .args([
            "-c",
            N_CTX,
            "--chunks",
            CHUNKS,
            "--output-format",
            format,
            "-o",
        ])
        .arg(out)
        .status()
        .expect("running kvant");
    assert!(st.success(), "kvant imatrix failed");
}

/// One entry of an imatrix: tensor name, Σx² per column, count.
type RawEntry = (String, Vec<f32>, f32);

/// Raw sums and counts per entry of a GGUF imatrix, and its chunk keys.
fn raw_gguf(path: &Path) -> (Vec<RawEntry>, u32, u32) {
    let f = GgufFile::open(path).expect("imatrix gguf");
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut out = Vec::new();
    for t in &f.tensors {
        if let Some(base) = t.info.name.strip_suffix(".in_sum2") {
            let counts = f.tensor(&format!("{base}.counts")).expect("counts");
            let count = f32s(f.tensor_data(counts));
            assert_eq!(count.len(), 1, "{base}: one count per dense weight");
            out.push((base.to_owned(), f32s(f.tensor_data(t)), count[0]));
        }
    }
    let key = |k: &str| match f.metadata.get(k) {
        Some(GgufValue::U32(n)) => *n,
        other => panic!("{k}: {other:?}"),
    };
    (out, key("imatrix.chunk_count"), key("imatrix.chunk_size"))
}

/// kvant's sums against llama-imatrix's: that binary's llama.cpp (another
/// version, AVX-512 kernels) rounds differently from the pinned one kvant
/// mirrors, which shows in the last digits of a few columns (measured: at
/// worst 4.7e-4 in one ffn_down column). Every column within 1e-3
/// relative, within 1e-4 on average; a wrong collection
/// rule (a missing position, BOS or half of a chunk, the wrong input)
/// moves sums by percents.
fn assert_close(what: &str, kvant: &[f32], llama: &[f32]) {
    assert_eq!(kvant.len(), llama.len(), "{what}: lengths");
    let rel: Vec<f64> = kvant
        .iter()
        .zip(llama)
        .map(|(a, b)| ((a - b).abs() / b.abs().max(1e-30)) as f64)
        .collect();
    let worst = rel.iter().copied().fold(0.0, f64::max);
    let mean = rel.iter().sum::<f64>() / rel.len() as f64;
    eprintln!("{what}: worst {worst:e}, mean {mean:e}");
    assert!(
        worst <= 1e-3,
        "{what}: a column differs by {worst:e} (relative)"
    );
    assert!(
        mean <= 1e-4,
        "{what}: columns differ by {mean:e} on average"
    );
}

/// Every tensor of kvant's file `ours` has llama.cpp's bytes in `theirs`.
fn assert_same_tensors(ours: &Path, theirs: &Path, what: &str) {
    let (a, b) = (
        GgufFile::open(ours).expect("kvant's output"),
        GgufFile::open(theirs).expect("llama's output"),
    );
    for t in &a.tensors {
        let u = b.tensor(&t.info.name).expect("same tensors");
        assert!(
            a.tensor_data(t) == b.tensor_data(u),
            "{what}: {} differs from llama_model_quantize's",
            t.info.name
        );
    }
}

struct Files {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    f32: PathBuf,
    text: PathBuf,
    bin: PathBuf,
    ours_gguf: PathBuf,
    ours_dat: PathBuf,
}

/// The model, the tokens and kvant's two files, made once.
fn files() -> &'static Files {
    static F: std::sync::OnceLock<Files> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (f32, text, bin) = setup(dir.path());
        let (ours_gguf, ours_dat) = (dir.path().join("kvant.gguf"), dir.path().join("kvant.dat"));
        kvant_imatrix(&f32, &bin, &ours_gguf, "gguf");
        kvant_imatrix(&f32, &bin, &ours_dat, "dat");
        Files {
            dir: dir.path().to_owned(),
            f32,
            text,
            bin,
            ours_gguf,
            ours_dat,
            _dir: dir,
        }
    })
}

#[test]
fn imatrix_equals_llama_imatrix_in_both_forms() {
    let Files {
        dir,
        f32,
        text,
        bin,
        ours_gguf,
        ours_dat,
        ..
    } = files();
    let (llama_gguf, llama_dat) = (dir.join("llama.gguf"), dir.join("llama.dat"));
    for (out, format) in [(&llama_gguf, "gguf"), (&llama_dat, "dat")] {
        run(
            "llama-imatrix",
            &[
                &"-m",
                f32,
                &"-f",
                text,
                &"-c",
                &N_CTX,
                &"--chunks",
                &CHUNKS,
                &"--output-format",
                &format,
                &"-o",
                out,
            ],
        );
    }
    let (ours, our_chunks, our_size) = raw_gguf(ours_gguf);
    let (theirs, their_chunks, their_size) = raw_gguf(&llama_gguf);
    let names = |v: &[(String, Vec<f32>, f32)]| v.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&ours),
        names(&theirs),
        "the same weights, in the same order"
    );
    assert_eq!(
        ours.len(),
        4 * 4,
        "attn_qkv, attn_output, ffn_up, ffn_down per layer"
    );
    assert_eq!((our_chunks, our_size), (their_chunks, their_size));
    assert_eq!(our_chunks, 2);
    for ((name, sums, count), (_, their_sums, their_count)) in ours.iter().zip(&theirs) {
        assert_eq!(count, their_count, "{name}: counts");
        assert_close(name, sums, their_sums);
    }

    // The legacy form: the same mean x² per column (and ncall) as
    // llama-imatrix's, read by kvant's loader.
    let (a, b) = (
        Imatrix::load(ours_dat).expect("kvant .dat"),
        Imatrix::load(&llama_dat).expect("llama .dat"),
    );
    assert!(a.is_legacy && b.is_legacy);
    assert_eq!(a.chunk_count, b.chunk_count);
    let mut an: Vec<&str> = a.names().collect();
    let mut bn: Vec<&str> = b.names().collect();
    an.sort_unstable();
    bn.sort_unstable();
    assert_eq!(an, bn);
    for n in an {
        assert_close(n, a.values(n).expect("entry"), b.values(n).expect("entry"));
    }
    // The GGUF form loads to the same means.
    let g = Imatrix::load(ours_gguf).expect("kvant gguf");
    for n in g.names() {
        assert_close(n, g.values(n).expect("entry"), b.values(n).expect("entry"));
    }
    assert_eq!(g.datasets, vec![bin.display().to_string()]);
}

#[test]
fn both_forms_drive_kvant_quantize_and_llama_model_quantize() {
    let Files {
        dir,
        f32,
        ours_gguf,
        ours_dat,
        ..
    } = files();
    for (format, im) in [("gguf", ours_gguf), ("dat", ours_dat)] {
        let ours = dir.join(format!("kvant-q4_k_m-{format}.gguf"));
        let st = Command::new(env!("CARGO_BIN_EXE_kvant"))
            .arg("quantize")
            .arg(f32)
            .arg("-o")
            .arg(&ours)
            .args(["--type", "q4_k_m", "--imatrix"])
            .arg(im)
            .status()
            .expect("running kvant quantize");
        assert!(st.success(), "kvant quantize --imatrix {format} failed");
        let theirs = dir.join(format!("llama-q4_k_m-{format}.gguf"));
        support::quantize::llama_model_quantize(f32, &theirs, FileType::Q4_K_M, Some(im));
        assert_same_tensors(&ours, &theirs, &format!("{format} (kvant quantize)"));
    }
}

fn kvant_ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .args(args)
        .output()
        .expect("running kvant");
    assert!(
        out.status.success(),
        "kvant failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mean KLD of `model` against the F32 base file, by llama-perplexity and
/// by `kvant eval` on the same file.
fn kld_both(model: &Path, base_file: &Path) -> (f64, f64) {
    let heldout = support::fixtures::path("nanogpt-k256/heldout.txt");
    let out = support::llama_tools::perplexity(
        model,
        &heldout,
        128,
        4,
        &[&"--kl-divergence-base", &base_file, &"--kl-divergence"],
    );
    let llama = support::llama_tools::summary_value(&out, "Mean    KLD").0;
    let json = kvant_ok(&[&"eval", &model, &"--base-logits", &base_file, &"--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("kvant eval --json");
    (v["kld"]["kld"]["value"].as_f64().expect("kld"), llama)
}

/// `kvant convert --calibration` computes the importance matrix from the
/// checkpoint's own weights in the same run: the statistics equal `kvant
/// imatrix` on the F32 GGUF, the files equal llama.cpp's
/// `llama_model_quantize` given that imatrix byte for byte, and the
/// imatrix lowers Q2_K's KL-divergence as llama-perplexity measures it.
#[test]
fn convert_with_calibration_quantizes_as_llama_model_quantize_given_its_imatrix() {
    let Files { dir, f32, text, .. } = files();
    let src = support::fixtures::path("nanogpt-k256");
    let (calibrated, plain) = (dir.join("calibrated"), dir.join("plain"));
    let saved = dir.join("calibrated-imatrix.gguf");
    kvant_ok(&[
        &"convert",
        &src,
        &"--type",
        &"q4_k_m,q2_k",
        &"--output-dir",
        &calibrated,
        &"--calibration",
        text,
        &"--eval-ctx",
        &N_CTX,
        &"--save-imatrix",
        &saved,
    ]);
    kvant_ok(&[
        &"convert",
        &src,
        &"--type",
        &"q4_k_m,q2_k",
        &"--output-dir",
        &plain,
    ]);
    // The same sums as `kvant imatrix` on the F32 file, same chunking
    // (4 chunks of 128: the calibration default count).
    let from_gguf = dir.join("from-gguf-imatrix.gguf");
    kvant_ok(&[
        &"imatrix",
        f32,
        &"--text",
        text,
        &"-c",
        &N_CTX,
        &"--chunks",
        &"4",
        &"-o",
        &from_gguf,
    ]);
    let (a, b) = (raw_gguf(&saved), raw_gguf(&from_gguf));
    assert_eq!((a.1, a.2), (b.1, b.2), "chunk count and size");
    assert_eq!(a.0, b.0, "the checkpoint's imatrix is the F32 GGUF's");

    let base_file = dir.join("f32-base.kld");
    support::llama_tools::perplexity(
        f32,
        &support::fixtures::path("nanogpt-k256/heldout.txt"),
        128,
        4,
        &[&"--kl-divergence-base", &base_file],
    );
    for (ft, name) in [(FileType::Q4_K_M, "q4_k_m"), (FileType::Q2_K, "q2_k")] {
        let ours = calibrated.join(format!("nanogpt-k256-{name}.gguf"));
        let theirs = dir.join(format!("llama-calibrated-{name}.gguf"));
        support::quantize::llama_model_quantize(f32, &theirs, ft, Some(&saved));
        assert_same_tensors(
            &ours,
            &theirs,
            &format!("{name} (kvant convert --calibration)"),
        );
        let with = kld_both(&ours, &base_file);
        let without = kld_both(&plain.join(format!("nanogpt-k256-{name}.gguf")), &base_file);
        eprintln!(
            "{name}: mean KLD with imatrix kvant {:.6} llama {:.6}; without kvant {:.6} llama {:.6}",
            with.0, with.1, without.0, without.1
        );
        for (k, l) in [with, without] {
            assert!(
                (k - l).abs() <= 0.02 * l + 1e-5,
                "{name}: kvant eval {k} vs llama-perplexity {l}"
            );
        }
        if ft == FileType::Q2_K {
            assert!(
                with.1 < without.1,
                "the imatrix lowers Q2_K's KLD: {with:?} vs {without:?}"
            );
        }
    }
}

/// Issue 9's imatrix criterion against the pinned llama.cpp itself (the
/// library the forward-pass tests judge by, not the separately built
/// `llama-imatrix` above, whose llama.cpp is another version built for
/// this CPU's AVX-512): Σx² per column of every product's input, as a
/// `cb_eval` callback sees it on the same chunks, within 1e-4 relative
/// for every column. The F32 forward pass is llama.cpp's bit for bit, so
/// what is left is the order of the f32 additions.
#[test]
fn imatrix_equals_what_cb_eval_collects_per_column() {
    let Files {
        f32,
        bin,
        ours_gguf,
        ..
    } = files();
    let judge = support::llama::Model::load(f32, false);
    let bytes = std::fs::read(bin).expect("token file");
    let tokens: Vec<i32> = bytes
        .chunks_exact(2)
        .map(|b| i32::from(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    let with_bos = judge.tokenize("a", true, false);
    let adds_bos = with_bos.len() > judge.tokenize("a", false, false).len();
    let n_ctx: usize = N_CTX.parse().expect("number");
    let chunks: usize = CHUNKS.parse().expect("number");
    let mut sums: Vec<(String, Vec<f64>)> = Vec::new();
    for c in 0..chunks {
        let mut ids = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if adds_bos {
            ids[0] = with_bos[0];
        }
        for (name, n_in, values) in judge.eval_matmul_inputs(&ids) {
            if name == "output.weight" || name == "token_embd.weight" {
                continue;
            }
            let at = match sums.iter().position(|(n, _)| *n == name) {
                Some(at) => at,
                None => {
                    sums.push((name.clone(), vec![0f64; n_in]));
                    sums.len() - 1
                }
            };
            for row in values.chunks_exact(n_in) {
                for (s, &x) in sums[at].1.iter_mut().zip(row) {
                    *s += f64::from(x) * f64::from(x);
                }
            }
        }
    }
    let (ours, _, _) = raw_gguf(ours_gguf);
    assert_eq!(ours.len(), sums.len(), "the same products");
    let mut worst = 0f64;
    for (name, mine, count) in &ours {
        let theirs = &sums
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}: not a product llama.cpp runs"))
            .1;
        assert_eq!(*count as usize, chunks * n_ctx, "{name}: count");
        for (j, (&a, &b)) in mine.iter().zip(theirs).enumerate() {
            let rel = (f64::from(a) - b).abs() / b.abs().max(1e-30);
            worst = worst.max(rel);
            assert!(rel <= 1e-4, "{name} column {j}: {a} vs {b} ({rel:e})");
        }
    }
    eprintln!("per-column Σx² against cb_eval: worst relative {worst:e}");
}
