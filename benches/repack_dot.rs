//! The product of repacked Q4_0/Q4_K weights, kvant's
//! `matmul_repacked` against ggml-cpu's own in the same run: ggml's
//! `MUL_MAT` with the weight in its `CPU_REPACK` buffer, run by the CPU
//! backend on as many threads as rayon's pool (the graph is built once;
//! only its compute, with setting the activations and reading the result,
//! is timed). Shapes are GPT-2 small's (768×768, MLP up 3072×768, MLP
//! down 768×3072), for one token (generation) and a prompt's worth.
//!
//! Prints the best of a few runs of each, the ratio ggml time / kvant time
//! (above 1: kvant is faster), and checks that the results are bit for bit
//! equal. Timing is never asserted.
//!
//! Run (the release profile would rebuild llama.cpp; kvant alone is
//! raised to release settings, without the dev profile's debug assertions,
//! whose pointer checks would sit in the kernels' inner loops):
//! `cargo bench --profile dev --config 'profile.dev.package.kvant.opt-level=3'
//! --config 'profile.dev.package.kvant.debug-assertions=false'
//! --config 'profile.dev.package.kvant.overflow-checks=false'
//! --bench repack_dot` (`-- --quick` for fewer runs, `-- --tokens 1,512`).
//!
//! ggml's threads wait for each other in a spinning barrier, so on a busy
//! machine its times swing by an order of magnitude; compare on an idle
//! one, or compare CPU time (`perf record`: the kernels' shares).

use kvant::quant::{matmul_repacked, quantize, GgmlType};

#[allow(dead_code)]
mod support {
    #[path = "../../tests/support/llama.rs"]
    pub mod llama;

    #[path = "../../tests/support/ggml_repack.rs"]
    pub mod ggml_repack;

    #[path = "args.rs"]
    pub mod args;
}

#[path = "support/kernel_timing.rs"]
mod kernel_timing;

use kernel_timing::{best_of, values};
use support::args::{has, value};
use support::ggml_repack::MulMat;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = has(&args, "--quick");
    let token_counts: Vec<usize> = value(&args, "--tokens").map_or(vec![1, 7, 128], |v| {
        v.split(',')
            .map(|s| s.parse().expect("a token count"))
            .collect()
    });
    let threads = rayon::current_num_threads();
    println!("threads {threads}; ratio = ggml time / kvant time");
    println!(
        "{:<5} {:>9} {:>6} {:>10} {:>10} {:>7}",
        "type", "shape", "tokens", "kvant ms", "ggml ms", "ratio"
    );
    for ty in [GgmlType::Q4_0, GgmlType::Q4K] {
        for (n_out, n_in) in [(768, 768), (3072, 768), (768, 3072)] {
            let w =
                quantize(ty, &values(n_out * n_in, n_out as u64), n_in, None).expect("quantizes");
            for &n_tokens in &token_counts {
                let runs = match (quick, n_tokens) {
                    (true, _) => 3,
                    (false, 1) => 200,
                    (false, _) => 20,
                };
                let x = values(n_tokens * n_in, 0x1234_5678 ^ n_tokens as u64);
                let ggml = MulMat::new(ty, &w, n_out, n_in, n_tokens, threads as i32);
                let mut ours = vec![0f32; n_out * n_tokens];
                let mut theirs = Vec::new();
                let tk = best_of(runs, || {
                    matmul_repacked(ty, &w, n_out, n_in, &x, n_tokens, &mut ours)
                        .expect("matmul_repacked")
                });
                let tg = best_of(runs, || theirs = ggml.run(&x));
                let same = ours
                    .iter()
                    .zip(&theirs)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{ty} {n_out}x{n_in}, {n_tokens} tokens: not ggml's bits"
                );
                println!(
                    "{:<5} {:>9} {:>6} {:>10.3} {:>10.3} {:>7.2}",
                    ty.name(),
                    format!("{n_out}x{n_in}"),
                    n_tokens,
                    tk * 1e3,
                    tg * 1e3,
                    tg / tk
                );
            }
        }
    }
}
