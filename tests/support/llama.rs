//! The judge: real llama.cpp (the pinned `llama-cpp-sys-2 =0.1.161`),
//! wrapped just enough for tests to load a GGUF, tokenize and compute
//! logits. Every FFI call is checked; failures panic with the file name.

use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::sync::Once;

use llama_cpp_sys_2::*;

static INIT: Once = Once::new();

unsafe extern "C" fn quiet_log(level: ggml_log_level, text: *const c_char, _: *mut c_void) {
    // Keep llama.cpp's errors, drop its chatter (set KVANT_LLAMA_LOG to see all).
    if level == GGML_LOG_LEVEL_ERROR || std::env::var_os("KVANT_LLAMA_LOG").is_some() {
        // SAFETY: llama.cpp passes a NUL-terminated string.
        let s = unsafe { std::ffi::CStr::from_ptr(text) };
        eprint!("llama.cpp: {}", s.to_string_lossy());
    }
}

/// Initialises the backend once per process.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: plain initialisation calls with a valid callback.
        unsafe {
            llama_log_set(Some(quiet_log), std::ptr::null_mut());
            ggml_log_set(Some(quiet_log), std::ptr::null_mut());
            llama_backend_init();
        }
    });
}

/// A loaded model.
pub struct Model {
    model: *mut llama_model,
    path: String,
}

// The model is only used from one thread at a time in tests.
unsafe impl Send for Model {}

impl Model {
    /// Loads `path` (only the vocabulary when `vocab_only`). Panics with
    /// llama.cpp's complaint (on stderr) when it refuses the file.
    pub fn load(path: &Path, vocab_only: bool) -> Model {
        init();
        let c = CString::new(path.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: default params, a valid path; the result is checked.
        let model = unsafe {
            let mut p = llama_model_default_params();
            p.vocab_only = vocab_only;
            p.n_gpu_layers = 0;
            llama_model_load_from_file(c.as_ptr(), p)
        };
        assert!(
            !model.is_null(),
            "llama.cpp refused to load {}",
            path.display()
        );
        Model {
            model,
            path: path.display().to_string(),
        }
    }

    fn vocab(&self) -> *const llama_vocab {
        // SAFETY: the model pointer is valid while self lives.
        unsafe { llama_model_get_vocab(self.model) }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        // SAFETY: valid vocab pointer.
        unsafe { llama_vocab_n_tokens(self.vocab()) as usize }
    }

    /// llama.cpp's tokenization of `text`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<i32> {
        let mut out = vec![0i32; text.len() + 16];
        // SAFETY: buffers sized as passed; the count is checked.
        let n = unsafe {
            llama_tokenize(
                self.vocab(),
                text.as_ptr() as *const c_char,
                text.len() as i32,
                out.as_mut_ptr(),
                out.len() as i32,
                add_special,
                parse_special,
            )
        };
        assert!(n >= 0, "{}: tokenize needs {} slots", self.path, -n);
        out.truncate(n as usize);
        out
    }

    /// The text of `ids` (special tokens rendered).
    pub fn detokenize(&self, ids: &[i32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let mut buf = [0 as c_char; 256];
            // SAFETY: buffer length passed; the count is checked.
            let n = unsafe {
                llama_token_to_piece(
                    self.vocab(),
                    id,
                    buf.as_mut_ptr(),
                    buf.len() as i32,
                    0,
                    true,
                )
            };
            assert!(n >= 0, "token piece too long");
            bytes.extend(buf[..n as usize].iter().map(|&c| c as u8));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Decodes `ids` in one batch on a fresh context (CPU, 2 threads,
    /// logits requested from position `first_output` on, as
    /// llama-perplexity requests them from `n_ctx/2`), with `cb_eval` set
    /// and a LoRA adapter applied at a scale when given. The caller frees
    /// the context.
    ///
    /// # Safety
    /// `eval`'s user data must outlive the returned context.
    unsafe fn decode(
        &self,
        ids: &[i32],
        first_output: usize,
        eval: Option<(ggml_backend_sched_eval_callback, *mut c_void)>,
        lora: Option<(*mut llama_adapter_lora, f32)>,
    ) -> *mut llama_context {
        let n = ids.len() as i32;
        assert!(n > 0 && first_output < ids.len());
        // SAFETY: context and batch are created, used within their sizes
        // and the batch freed here; every pointer is checked.
        unsafe {
            let mut cp = llama_context_default_params();
            cp.n_ctx = (n as u32).max(64);
            cp.n_batch = cp.n_ctx;
            cp.n_ubatch = cp.n_ctx;
            cp.n_seq_max = 1;
            cp.n_threads = 2;
            cp.n_threads_batch = 2;
            cp.no_perf = true;
            if let Some((cb, user)) = eval {
                cp.cb_eval = cb;
                cp.cb_eval_user_data = user;
            }
            let ctx = llama_init_from_model(self.model, cp);
            assert!(!ctx.is_null(), "{}: cannot create a context", self.path);
            if let Some((adapter, scale)) = lora {
                let mut adapters = [adapter];
                let mut scales = [scale];
                let rc =
                    llama_set_adapters_lora(ctx, adapters.as_mut_ptr(), 1, scales.as_mut_ptr());
                assert_eq!(rc, 0, "{}: llama_set_adapters_lora failed", self.path);
            }
            let batch = llama_batch_init(n, 0, 1);
            for (i, &tok) in ids.iter().enumerate() {
                *batch.token.add(i) = tok;
                *batch.pos.add(i) = i as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)).add(0) = 0;
                *batch.logits.add(i) = i8::from(i >= first_output);
            }
            let mut b = batch;
            b.n_tokens = n;
            let rc = llama_decode(ctx, b);
            assert_eq!(rc, 0, "{}: llama_decode failed", self.path);
            llama_batch_free(batch);
            ctx
        }
    }

    /// The logits at every position of `ids`, one vector of n_vocab per
    /// position, computed in one batch on a fresh context (CPU, 2 threads).
    pub fn eval_logits(&self, ids: &[i32]) -> Vec<Vec<f32>> {
        self.logits(ids, 0, None)
    }

    /// The logits at positions `first..` of `ids`, the only ones
    /// requested (llama.cpp's graph then drops the other rows after the
    /// last layer's attention).
    pub fn eval_logits_from(&self, ids: &[i32], first: usize) -> Vec<Vec<f32>> {
        self.logits(ids, first, None)
    }

    /// Loads a GGUF LoRA adapter for this model with llama.cpp's
    /// `llama_adapter_lora_init`. Panics (llama.cpp's reason on stderr)
    /// when llama.cpp refuses it.
    pub fn load_lora(&self, path: &Path) -> Lora<'_> {
        let c = CString::new(path.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: a valid model and path; the result is checked.
        let ptr = unsafe { llama_adapter_lora_init(self.model, c.as_ptr()) };
        assert!(
            !ptr.is_null(),
            "llama.cpp refused the LoRA adapter {} for {}",
            path.display(),
            self.path
        );
        Lora { ptr, _model: self }
    }

    /// [`Model::eval_logits`] with `lora` applied at `scale`
    /// (`llama_set_adapters_lora`).
    pub fn eval_logits_with_lora(&self, ids: &[i32], lora: &Lora<'_>, scale: f32) -> Vec<Vec<f32>> {
        self.logits(ids, 0, Some((lora.ptr, scale)))
    }

    fn logits(
        &self,
        ids: &[i32],
        first: usize,
        lora: Option<(*mut llama_adapter_lora, f32)>,
    ) -> Vec<Vec<f32>> {
        // SAFETY: no callback; the adapter (if any) lives as long as the
        // model; the context is read within its outputs and freed here.
        unsafe {
            let ctx = self.decode(ids, first, None, lora);
            let n_vocab = self.n_vocab();
            let mut out = Vec::with_capacity(ids.len());
            for i in first as i32..ids.len() as i32 {
                let p = llama_get_logits_ith(ctx, i);
                assert!(!p.is_null(), "no logits at {i}");
                out.push(std::slice::from_raw_parts(p, n_vocab).to_vec());
            }
            llama_free(ctx);
            out
        }
    }
}

/// What `llama-imatrix`'s `cb_eval` sees: each `MUL_MAT`'s weight name
/// and its f32 input (`src1`), `n_tokens` rows of `n_in`.
pub type MatmulInputs = Vec<(String, usize, Vec<f32>)>;

unsafe extern "C" fn collect_matmul(t: *mut ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: llama.cpp hands a valid tensor; `user` is the MatmulInputs
    // passed by eval_matmul_inputs, alive for the whole decode.
    unsafe {
        if (*t).op != GGML_OP_MUL_MAT {
            return !ask;
        }
        if ask {
            return true;
        }
        let (w, x) = ((*t).src[0], (*t).src[1]);
        assert_eq!((*x).type_, GGML_TYPE_F32, "src1 of a MUL_MAT is f32");
        let name = std::ffi::CStr::from_ptr((*w).name.as_ptr())
            .to_string_lossy()
            .into_owned();
        let (n_in, rows) = (
            (*x).ne[0] as usize,
            ((*x).ne[1] * (*x).ne[2] * (*x).ne[3]) as usize,
        );
        let mut values = Vec::with_capacity(n_in * rows);
        for r in 0..rows {
            let row = ((*x).data as *const u8).add(r * (*x).nb[1]) as *const f32;
            values.extend_from_slice(std::slice::from_raw_parts(row, n_in));
        }
        (*(user as *mut MatmulInputs)).push((name, n_in, values));
        true
    }
}

impl Model {
    /// Runs `ids` as `eval_logits` does, with a `cb_eval` that records
    /// every matrix multiplication's weight name and input.
    pub fn eval_matmul_inputs(&self, ids: &[i32]) -> MatmulInputs {
        self.eval_matmul_inputs_from(ids, 0)
    }

    /// [`Model::eval_matmul_inputs`] with logits requested from position
    /// `first` on only.
    pub fn eval_matmul_inputs_from(&self, ids: &[i32], first: usize) -> MatmulInputs {
        let mut seen: MatmulInputs = Vec::new();
        let user = &mut seen as *mut MatmulInputs as *mut c_void;
        // SAFETY: `seen` outlives the context, freed right after decoding.
        unsafe { llama_free(self.decode(ids, first, Some((Some(collect_matmul), user)), None)) };
        seen
    }
}

/// A LoRA adapter loaded for a model (freed with it).
pub struct Lora<'m> {
    ptr: *mut llama_adapter_lora,
    _model: &'m Model,
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file.
        unsafe { llama_model_free(self.model) }
    }
}
