//! A small safe wrapper over real llama.cpp (`llama-cpp-sys-2`, raw FFI) for
//! the integration tests: load a GGUF (vocab only or full), tokenize,
//! detokenize and evaluate logits at every position. llama.cpp is the judge
//! of every file kvant writes, so the tests ask it directly.
//!
//! Invariants: the backend is initialised once per process; every pointer
//! returned by llama.cpp is freed exactly once by `Drop`.

use std::ffi::CString;
use std::path::Path;
use std::sync::Once;

use llama_cpp_sys_2::*;

static INIT: Once = Once::new();

unsafe extern "C" fn quiet_log(
    level: ggml_log_level,
    text: *const std::os::raw::c_char,
    _user: *mut std::os::raw::c_void,
) {
    // Keep errors visible (they explain load failures); drop the chatter.
    if level == GGML_LOG_LEVEL_ERROR && !text.is_null() {
        let s = unsafe { std::ffi::CStr::from_ptr(text) };
        eprint!("llama.cpp: {}", s.to_string_lossy());
    }
}

fn init() {
    INIT.call_once(|| unsafe {
        llama_log_set(Some(quiet_log), std::ptr::null_mut());
        llama_backend_init();
    });
}

/// A model loaded by llama.cpp.
pub struct Model {
    model: *mut llama_model,
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { llama_model_free(self.model) }
    }
}

impl Model {
    /// Loads `path`; `vocab_only` skips the tensors (enough for tokenizer
    /// tests). Returns llama.cpp's refusal as an error string.
    pub fn load(path: &Path, vocab_only: bool) -> Result<Model, String> {
        init();
        let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
        let model = unsafe {
            let mut params = llama_model_default_params();
            params.vocab_only = vocab_only;
            params.n_gpu_layers = 0;
            llama_model_load_from_file(c.as_ptr(), params)
        };
        if model.is_null() {
            return Err(format!("llama.cpp refused to load {}", path.display()));
        }
        Ok(Model { model })
    }

    fn vocab(&self) -> *const llama_vocab {
        unsafe { llama_model_get_vocab(self.model) }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        unsafe { llama_vocab_n_tokens(self.vocab()) as usize }
    }

    /// llama.cpp's tokenization of `text`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<i32> {
        let bytes = text.as_bytes();
        let mut cap = bytes.len() + 8;
        loop {
            let mut out = vec![0i32; cap];
            let n = unsafe {
                llama_tokenize(
                    self.vocab(),
                    bytes.as_ptr() as *const std::os::raw::c_char,
                    bytes.len() as i32,
                    out.as_mut_ptr(),
                    cap as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return out;
            }
            assert!(n != i32::MIN, "llama_tokenize overflowed");
            cap = (-n) as usize;
        }
    }

    /// llama.cpp's detokenization of `ids` (special tokens rendered).
    pub fn detokenize(&self, ids: &[i32]) -> String {
        let mut cap = ids.len() * 16 + 16;
        loop {
            let mut buf = vec![0u8; cap];
            let n = unsafe {
                llama_detokenize(
                    self.vocab(),
                    ids.as_ptr(),
                    ids.len() as i32,
                    buf.as_mut_ptr() as *mut std::os::raw::c_char,
                    cap as i32,
                    false,
                    true,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return String::from_utf8_lossy(&buf).into_owned();
            }
            cap = (-n) as usize;
        }
    }

    /// The logits at every position of `ids`, evaluated in one batch on a
    /// fresh context (the model must be fully loaded).
    pub fn eval_logits(&self, ids: &[i32]) -> Vec<Vec<f32>> {
        assert!(!ids.is_empty(), "eval_logits needs at least one token");
        let n = ids.len();
        let n_vocab = self.n_vocab();
        unsafe {
            let mut cparams = llama_context_default_params();
            cparams.n_ctx = (n as u32).max(64);
            cparams.n_batch = cparams.n_ctx;
            cparams.n_ubatch = cparams.n_ctx;
            cparams.n_seq_max = 1;
            cparams.n_threads = 2;
            cparams.n_threads_batch = 2;
            cparams.no_perf = true;
            let ctx = llama_init_from_model(self.model, cparams);
            assert!(!ctx.is_null(), "llama_init_from_model failed");
            let mut batch = llama_batch_init(n as i32, 0, 1);
            for (i, &t) in ids.iter().enumerate() {
                *batch.token.add(i) = t;
                *batch.pos.add(i) = i as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)) = 0;
                *batch.logits.add(i) = 1;
            }
            batch.n_tokens = n as i32;
            let rc = llama_decode(ctx, batch);
            let mut out = Vec::with_capacity(n);
            if rc == 0 {
                for i in 0..n {
                    let p = llama_get_logits_ith(ctx, i as i32);
                    assert!(!p.is_null(), "no logits at position {i}");
                    out.push(std::slice::from_raw_parts(p, n_vocab).to_vec());
                }
            }
            llama_batch_free(batch);
            llama_free(ctx);
            assert_eq!(rc, 0, "llama_decode failed with {rc}");
            out
        }
    }
}
