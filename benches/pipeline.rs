//! End-to-end benchmark, kvant against llama.cpp in the same run, same
//! machine, same thread count:
//!
//! 1. generates a ~124M-parameter nanoGPT-shaped `ckpt.pt` (n_layer 12,
//!    n_embd 768, vocab 50304, block 1024; tied embeddings);
//! 2. issue 2: `kvant convert ckpt.pt --type f16` — wall time and peak RSS
//!    (target: peak RSS well under the checkpoint's size);
//! 3. issue 3: from the F32 GGUF, every listed file type with
//!    `kvant quantize` and with llama.cpp's `llama_model_quantize`
//!    (`ggml`'s reference path as llama-quantize runs it): seconds, MB/s of
//!    F32 input, the kvant/llama.cpp time ratio, peak RSS of each, and
//!    whether every tensor's bytes are identical.
//!
//! Each measured step runs in its own child process so peak RSS is that
//! step's alone (`wait4`'s `ru_maxrss`).
//!
//! Run: `cargo bench --bench pipeline` (`-- --quick` for a 4-layer model,
//! `-- --types q4_k_m,q8_0` to choose types, `-- --threads N`).

#[path = "support/mod.rs"]
mod support;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use kvant::gguf::GgufFile;
use kvant::quant::FileType;
use support::args::{has, value};
use support::bench_model;
use support::measure::{measure, run_measured, MEASURE_FLAG};

/// Child mode: quantize with llama.cpp, exactly as llama-quantize does.
fn llama_quantize(input: &str, output: &str, ftype: u32, threads: i32) {
    use llama_cpp_sys_2::*;
    let inp = CString::new(input).expect("path");
    let out = CString::new(output).expect("path");
    // SAFETY: FFI with valid NUL-terminated paths and default params.
    unsafe {
        llama_backend_init();
        let mut params = llama_model_quantize_default_params();
        params.nthread = threads;
        params.ftype = ftype as _;
        let rc = llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params);
        assert_eq!(rc, 0, "llama_model_quantize failed");
    }
}

fn identical_tensors(a: &Path, b: &Path) -> (usize, usize, bool) {
    let fa = GgufFile::open(a).expect("kvant output");
    let fb = GgufFile::open(b).expect("llama.cpp output");
    let mut same = 0;
    let mut types_match = true;
    for t in &fa.tensors {
        let Some(u) = fb.tensor(&t.info.name) else {
            types_match = false;
            continue;
        };
        if u.info.ty != t.info.ty {
            types_match = false;
        } else if fa.tensor_data(t) == fb.tensor_data(u) {
            same += 1;
        }
    }
    (
        same,
        fa.tensors.len(),
        types_match && fa.tensors.len() == fb.tensors.len(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MEASURE_FLAG) {
        run_measured(&args[2], &args[3], &args[4..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--llama-quantize") {
        let ftype: u32 = args[4].parse().expect("ftype");
        let threads: i32 = args[5].parse().expect("threads");
        llama_quantize(&args[2], &args[3], ftype, threads);
        return;
    }
    let quick = has(&args, "--quick");
    let flag = |name: &str| value(&args, name);
    let threads: usize = flag("--threads").and_then(|t| t.parse().ok()).unwrap_or(2);
    let types: Vec<FileType> = flag("--types")
        .unwrap_or_else(|| "q8_0,q6_k,q4_k_m,q5_k_m,q4_0,q3_k_m,q2_k".into())
        .split(',')
        .map(|t| t.parse().expect("type"))
        .collect();
    let (n_layer, n_embd, vocab, block) = bench_model::shape(quick);

    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-pipeline");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let ckpt = bench_model::write_checkpoint(&work, quick);
    let ckpt_mib = std::fs::metadata(&ckpt).expect("ckpt").len() as f64 / (1024.0 * 1024.0);
    let kvant = env!("CARGO_BIN_EXE_kvant");
    println!("model: n_layer {n_layer}, n_embd {n_embd}, vocab {vocab}, ctx {block}; ckpt.pt {ckpt_mib:.0} MiB; threads {threads}");

    let f16 = work.join("model-f16.gguf");
    let m = measure(
        Command::new(kvant)
            .args(["convert"])
            .arg(&ckpt)
            .arg("-o")
            .arg(&f16)
            .args(["--type", "f16", "--threads", &threads.to_string()]),
        None,
    );
    println!(
        "convert ckpt.pt -> F16: {:.2} s, peak RSS {:.0} MiB ({:.0}% of the checkpoint)",
        m.seconds,
        m.peak_rss_mib,
        100.0 * m.peak_rss_mib / ckpt_mib
    );

    let f32 = work.join("model-f32.gguf");
    measure(
        Command::new(kvant)
            .args(["convert"])
            .arg(&ckpt)
            .arg("-o")
            .arg(&f32)
            .args(["--type", "f32", "--threads", &threads.to_string()]),
        None,
    );
    let f32_mb = std::fs::metadata(&f32).expect("f32").len() as f64 / 1e6;
    let me = std::env::current_exe().expect("self");
    println!();
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10}  bytes",
        "type", "kvant s", "llama s", "kvant MB/s", "llama MB/s", "ratio", "kvant RSS", "llama RSS"
    );
    for ft in types {
        let ko = work.join(format!("kvant-{}.gguf", ft.name()));
        let lo = work.join(format!("llama-{}.gguf", ft.name()));
        let k = measure(
            Command::new(kvant)
                .arg("quantize")
                .arg(&f32)
                .arg("-o")
                .arg(&ko)
                .args(["--type", &ft.name(), "--threads", &threads.to_string()]),
            None,
        );
        let l = measure(
            Command::new(&me)
                .arg("--llama-quantize")
                .arg(&f32)
                .arg(&lo)
                .arg(ft.llama_ftype().to_string())
                .arg(threads.to_string()),
            None,
        );
        let (same, total, types_ok) = identical_tensors(&ko, &lo);
        println!(
            "{:<8} {:>9.2} {:>9.2} {:>10.0} {:>10.0} {:>6.2}x {:>7.0} MiB {:>6.0} MiB  {same}/{total} tensors identical{}",
            ft.name(),
            k.seconds,
            l.seconds,
            f32_mb / k.seconds,
            f32_mb / l.seconds,
            l.seconds / k.seconds,
            k.peak_rss_mib,
            l.peak_rss_mib,
            if types_ok { "" } else { ", TYPES DIFFER" }
        );
        let _ = std::fs::remove_file(&ko);
        let _ = std::fs::remove_file(&lo);
    }
}
