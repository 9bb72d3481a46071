//! Matrix products, kvant against ggml-cpu in the same run, on the same
//! rows with the same threads: for every weight type, a 768×768 and a
//! 3072×768 weight (GPT-2 small's attention and MLP-up shapes) times 512
//! tokens.
//!
//! * kvant: `kvant::quant::dot::matmul` (activations quantized once, rows
//!   in parallel, several tokens per loaded weight block).
//! * ggml: its own `from_float` for every token row, then its `vec_dot`
//!   for every (row, token) pair, rows split over the same rayon pool: the
//!   kernels ggml's `mul_mat` runs when neither llamafile's tinyBLAS nor a
//!   repacked layout takes over.
//!
//! Prints, per type and shape, the best of a few runs of each and the
//! ratio ggml time / kvant time (above 1: kvant is faster), and checks
//! that the two results agree. Timing is never asserted.
//!
//! Run (the release profile would rebuild llama.cpp; the dev profile's
//! dependencies are already optimized, so only kvant is raised):
//! `cargo bench --profile dev --config 'profile.dev.package.kvant.opt-level=3'
//! --bench dot` (`-- --quick` for 64 tokens and one run each,
//! `-- --types q4_K,f16`).

use kvant::quant::dot;
use kvant::quant::{quantize, GgmlType};
use rayon::prelude::*;

#[allow(dead_code)]
#[path = "../tests/support/ggml_cpu.rs"]
mod ggml_cpu;

#[path = "support/kernel_timing.rs"]
mod kernel_timing;

use kernel_timing::{best_of, values};

/// ggml's product driven row by row: from_float per token, then vec_dot.
fn ggml_matmul(ty: GgmlType, w: &[u8], n_out: usize, n_in: usize, x: &[f32], out: &mut [f32]) {
    let dt = dot::vec_dot_type(ty);
    let act_row = dt.row_size(n_in).expect("fits");
    let n_tokens = x.len() / n_in;
    let acts: Vec<Vec<u8>> = x
        .par_chunks(n_in)
        .map(|r| ggml_cpu::from_float(dt, r))
        .collect();
    let w_row = ty.row_size(n_in).expect("fits");
    let mut by_row = vec![0f32; n_out * n_tokens];
    by_row
        .par_chunks_mut(n_tokens)
        .zip(w.par_chunks(w_row))
        .for_each(|(o, wr)| {
            for (s, a) in o.iter_mut().zip(&acts) {
                *s = ggml_cpu::vec_dot(ty, n_in, wr, &a[..act_row]);
            }
        });
    for (r, row) in by_row.chunks_exact(n_tokens).enumerate() {
        for (tk, &v) in row.iter().enumerate() {
            out[tk * n_out + r] = v;
        }
    }
}

fn weight_bytes(ty: GgmlType, x: &[f32], n_in: usize) -> Vec<u8> {
    match ty {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 | GgmlType::BF16 => {
            let mut b = vec![0u8; x.len() * 2];
            for (o, r) in b.chunks_mut(n_in * 2).zip(x.chunks(n_in)) {
                dot::quantize_activation_row(ty, r, o);
            }
            b
        }
        _ => quantize(ty, x, n_in, None).expect("quantizes"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let types: Vec<GgmlType> = match args.iter().position(|a| a == "--types") {
        Some(i) => args[i + 1]
            .split(',')
            .map(|s| s.parse().expect("a ggml type name"))
            .collect(),
        None => dot::WEIGHT_TYPES.to_vec(),
    };
    let (n_tokens, runs) = if quick { (64, 1) } else { (512, 3) };
    println!(
        "threads {}, {n_tokens} tokens; ratio = ggml time / kvant time",
        rayon::current_num_threads()
    );
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>7}",
        "type", "shape", "kvant ms", "ggml ms", "ratio"
    );
    let n_in = 768;
    let x = values(n_tokens * n_in, 0x1234_5678);
    for ty in types {
        for n_out in [768, 3072] {
            let wx = values(n_out * n_in, 0x9E37_79B9 ^ n_out as u64);
            let w = weight_bytes(ty, &wx, n_in);
            let mut ours = vec![0f32; n_out * n_tokens];
            let mut theirs = vec![0f32; n_out * n_tokens];
            let tk = best_of(runs, || {
                dot::matmul(ty, &w, n_out, n_in, &x, n_tokens, &mut ours).expect("matmul")
            });
            let tg = best_of(runs, || ggml_matmul(ty, &w, n_out, n_in, &x, &mut theirs));
            let worst = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
                .fold(0f32, f32::max);
            assert!(worst < 1e-3, "{ty}: results differ by {worst:e}");
            println!(
                "{:<6} {:>10} {:>10.2} {:>10.2} {:>7.2}",
                ty.name(),
                format!("{n_out}x{n_in}"),
                tk * 1e3,
                tg * 1e3,
                tg / tk
            );
        }
    }
}
