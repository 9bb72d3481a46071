//! ggml-cpu's repacked matrix product from the pinned llama.cpp, driven
//! the way llama.cpp drives it: the weight is allocated in the CPU
//! backend's `CPU_REPACK` extra buffer type (the one llama.cpp's loader
//! prefers for CPU weights), whose `init_tensor` records
//! `ggml_repack_get_optimal_repack_type`'s choice in `tensor->extra` and
//! whose `set_tensor` repacks the GGUF bytes with ggml's own repacker; a
//! one-node `MUL_MAT` graph then runs on the CPU backend, which hands the
//! op to the repack traits' `forward_mul_mat` (activation quantization,
//! gemm/gemv, chunking across threads) exactly as in a forward pass.

use std::ffi::{c_char, c_void, CStr};
use std::ptr;

use kvant::quant::GgmlType;
use llama_cpp_sys_2::*;

/// `ggml_backend_dev_get_extra_bufts_t` (ggml-backend.h).
type ExtraBufts = unsafe extern "C" fn(ggml_backend_dev_t) -> *mut ggml_backend_buffer_type_t;

/// The CPU backend's `CPU_REPACK` buffer type, found as llama.cpp finds
/// it: through the registry's `ggml_backend_dev_get_extra_bufts`.
fn repack_buffer_type() -> ggml_backend_buffer_type_t {
    super::llama::init();
    // SAFETY: the CPU registry, its device and the extra buffer type list
    // are static; the list is null-terminated.
    unsafe {
        let reg = ggml_backend_cpu_reg();
        let dev = ggml_backend_reg_dev_get(reg, 0);
        let name = c"ggml_backend_dev_get_extra_bufts";
        let f = ggml_backend_reg_get_proc_address(reg, name.as_ptr());
        assert!(
            !f.is_null(),
            "the CPU backend exports no extra buffer types"
        );
        let f: ExtraBufts = std::mem::transmute::<*mut c_void, ExtraBufts>(f);
        let mut list = f(dev);
        while !(*list).is_null() {
            let n = CStr::from_ptr(ggml_backend_buft_name(*list) as *const c_char);
            if n.to_bytes() == b"CPU_REPACK" {
                return *list;
            }
            list = list.add(1);
        }
        panic!("the pinned llama.cpp has no CPU_REPACK buffer type (GGML_CPU_REPACK off?)")
    }
}

/// A ggml context holding only tensor headers (and a graph).
struct Ctx(*mut ggml_context);

impl Ctx {
    fn new(tensors: usize) -> Ctx {
        // SAFETY: plain sizes; no_alloc contexts never touch tensor data.
        let ctx = unsafe {
            ggml_init(ggml_init_params {
                mem_size: ggml_tensor_overhead() * tensors + ggml_graph_overhead(),
                mem_buffer: ptr::null_mut(),
                no_alloc: true,
            })
        };
        assert!(!ctx.is_null(), "ggml_init failed");
        Ctx(ctx)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: created by ggml_init, freed once.
        unsafe { ggml_free(self.0) }
    }
}

/// A backend buffer, freed on drop.
struct Buffer(ggml_backend_buffer_t);

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated by ggml_backend_alloc_ctx_tensors_from_buft.
        unsafe { ggml_backend_buffer_free(self.0) }
    }
}

fn alloc(ctx: &Ctx, buft: ggml_backend_buffer_type_t) -> Buffer {
    // SAFETY: ctx is live; every tensor in it gets memory from buft.
    let b = unsafe { ggml_backend_alloc_ctx_tensors_from_buft(ctx.0, buft) };
    assert!(!b.is_null(), "ggml could not allocate the tensors");
    Buffer(b)
}

/// Whether ggml-cpu repacks a `ty` weight of `n_out` rows of `n_in`: its
/// repack buffer's `init_tensor` leaves `tensor->extra` null exactly when
/// `ggml_repack_get_optimal_repack_type` finds no repacked layout.
pub fn repacks(ty: GgmlType, n_out: usize, n_in: usize) -> bool {
    let buft = repack_buffer_type();
    let ctx = Ctx::new(1);
    // SAFETY: a 2-D tensor header in a live context.
    let w = unsafe { ggml_new_tensor_2d(ctx.0, ty.id() as ggml_type, n_in as i64, n_out as i64) };
    let _buffer = alloc(&ctx, buft);
    // SAFETY: w was just allocated (init_tensor ran).
    unsafe { !(*w).extra.is_null() }
}

/// ggml's `MUL_MAT` of one `ty` weight (repacked by ggml) with
/// `n_tokens` f32 rows, set up once and run as often as wanted (the
/// benchmark times [`MulMat::run`] alone).
pub struct MulMat {
    backend: ggml_backend_t,
    graph: *mut ggml_cgraph,
    x: *mut ggml_tensor,
    y: *mut ggml_tensor,
    _buffers: [Buffer; 2],
    _contexts: [Ctx; 2],
}

impl MulMat {
    /// The weight `w` (GGUF layout, `n_out` rows of `n_in`) set into a
    /// `CPU_REPACK` buffer, a one-node graph for `n_tokens` rows, a CPU
    /// backend on `n_threads` threads.
    pub fn new(
        ty: GgmlType,
        w: &[u8],
        n_out: usize,
        n_in: usize,
        n_tokens: usize,
        n_threads: i32,
    ) -> MulMat {
        assert!(
            repacks(ty, n_out, n_in),
            "ggml does not repack {ty} {n_out}x{n_in}"
        );
        let weights = Ctx::new(1);
        let graph_ctx = Ctx::new(4);
        // SAFETY: every tensor is created in a live context and allocated
        // before its data is set, with its own byte count; the graph has
        // one node.
        unsafe {
            let (ne0, ne1) = (n_in as i64, n_out as i64);
            let wt = ggml_new_tensor_2d(weights.0, ty.id() as ggml_type, ne0, ne1);
            let wbuf = alloc(&weights, repack_buffer_type());
            assert!(
                !(*wt).extra.is_null(),
                "the weight was not given repack traits"
            );
            assert_eq!(ggml_nbytes(wt), w.len());
            ggml_backend_tensor_set(wt, w.as_ptr().cast(), 0, w.len());

            let x = ggml_new_tensor_2d(graph_ctx.0, GGML_TYPE_F32, ne0, n_tokens as i64);
            let y = ggml_mul_mat(graph_ctx.0, wt, x);
            let graph = ggml_new_graph(graph_ctx.0);
            ggml_build_forward_expand(graph, y);
            let gbuf = alloc(&graph_ctx, ggml_backend_cpu_buffer_type());

            let backend = ggml_backend_cpu_init();
            assert!(!backend.is_null(), "no CPU backend");
            ggml_backend_cpu_set_n_threads(backend, n_threads);
            MulMat {
                backend,
                graph,
                x,
                y,
                _buffers: [wbuf, gbuf],
                _contexts: [weights, graph_ctx],
            }
        }
    }

    /// `out[t * n_out + r]` for the activation rows `x`.
    pub fn run(&self, x: &[f32]) -> Vec<f32> {
        // SAFETY: x and y were allocated in `new`; the byte counts are
        // checked against theirs.
        unsafe {
            assert_eq!(ggml_nbytes(self.x), std::mem::size_of_val(x));
            ggml_backend_tensor_set(self.x, x.as_ptr().cast(), 0, std::mem::size_of_val(x));
            let status = ggml_backend_graph_compute(self.backend, self.graph);
            assert_eq!(status, GGML_STATUS_SUCCESS, "graph compute failed");
            let mut out = vec![0f32; ggml_nbytes(self.y) / 4];
            ggml_backend_tensor_get(self.y, out.as_mut_ptr().cast(), 0, ggml_nbytes(self.y));
            out
        }
    }
}

impl Drop for MulMat {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_cpu_init, freed once.
        unsafe { ggml_backend_free(self.backend) }
    }
}

/// ggml's `MUL_MAT` of the `ty` weight `w` (GGUF layout, `n_out` rows of
/// `n_in`) with `n_tokens` f32 rows `x`, the weight repacked by ggml and
/// the product run by the CPU backend on `n_threads` threads:
/// `out[t * n_out + r]`.
pub fn mul_mat(
    ty: GgmlType,
    w: &[u8],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    n_tokens: usize,
    n_threads: i32,
) -> Vec<f32> {
    MulMat::new(ty, w, n_out, n_in, n_tokens, n_threads).run(x)
}
