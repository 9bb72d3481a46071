//! A safe wrapper over the real llama.cpp's `llama_model_quantize` (the
//! judge kvant's quantizer is compared against), with llama-quantize's
//! command-line options as plain Rust values.
//!
//! An importance matrix is loaded with kvant's [`Imatrix`] loader (the
//! quantize tool's own loader is not part of the linked library) and passed
//! as the library's `llama_model_imatrix_data` list.

use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::sync::Once;

use kvant::quant::{FileType, GgmlType, Imatrix};
use llama_cpp_sys_2::*;

/// llama-quantize's options.
#[derive(Debug, Clone, Default)]
pub struct QuantizeOptions {
    /// `--imatrix`: entries (name, values) handed to llama.cpp.
    pub imatrix: Vec<(String, Vec<f32>)>,
    /// `--tensor-type PATTERN=TYPE`, in order.
    pub tensor_types: Vec<(String, GgmlType)>,
    /// `--output-tensor-type`.
    pub output_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--pure`.
    pub pure: bool,
    /// `--leave-output-tensor`.
    pub leave_output_tensor: bool,
}

unsafe extern "C" fn quiet(_level: ggml_log_level, _text: *const c_char, _user: *mut c_void) {}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| unsafe {
        if std::env::var_os("KVANT_LLAMA_LOG").is_none() {
            llama_log_set(Some(quiet), std::ptr::null_mut());
        }
        llama_backend_init();
    });
}

fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().expect("utf-8 path")).expect("no NUL in path")
}

/// Runs `llama_model_quantize(input → output)` with 2 threads; `Err` with
/// llama.cpp's return code when it refuses.
pub fn quantize_with(
    input: &Path,
    output: &Path,
    ftype: FileType,
    opts: &QuantizeOptions,
) -> Result<(), u32> {
    init();
    let inp = cpath(input);
    let out = cpath(output);

    let im_names: Vec<CString> = opts
        .imatrix
        .iter()
        .map(|(n, _)| CString::new(n.as_str()).unwrap())
        .collect();
    let mut im: Vec<llama_model_imatrix_data> = opts
        .imatrix
        .iter()
        .zip(&im_names)
        .map(|((_, v), n)| llama_model_imatrix_data {
            name: n.as_ptr(),
            data: v.as_ptr(),
            size: v.len(),
        })
        .collect();
    im.push(llama_model_imatrix_data {
        name: std::ptr::null(),
        data: std::ptr::null(),
        size: 0,
    });

    let tt_patterns: Vec<CString> = opts
        .tensor_types
        .iter()
        .map(|(p, _)| CString::new(p.as_str()).unwrap())
        .collect();
    let mut tt: Vec<llama_model_tensor_override> = opts
        .tensor_types
        .iter()
        .zip(&tt_patterns)
        .map(|((_, ty), p)| llama_model_tensor_override {
            pattern: p.as_ptr(),
            type_: ty.id() as ggml_type,
        })
        .collect();
    tt.push(llama_model_tensor_override {
        pattern: std::ptr::null(),
        type_: GGML_TYPE_COUNT,
    });

    // SAFETY: plain C constructor returning a value.
    let mut params = unsafe { llama_model_quantize_default_params() };
    params.nthread = 2;
    params.ftype = ftype.llama_ftype() as llama_ftype;
    params.pure_ = opts.pure;
    params.quantize_output_tensor = !opts.leave_output_tensor;
    if let Some(t) = opts.output_type {
        params.output_tensor_type = t.id() as ggml_type;
    }
    if let Some(t) = opts.token_embedding_type {
        params.token_embedding_type = t.id() as ggml_type;
    }
    if !opts.imatrix.is_empty() {
        params.imatrix = im.as_ptr();
    }
    if !opts.tensor_types.is_empty() {
        params.tt_overrides = tt.as_ptr();
    }
    // SAFETY: every pointer in `params` points into `inp`, `out`, `im`,
    // `im_names`, `opts.imatrix`, `tt` and `tt_patterns`, all alive until
    // the call returns; the lists end with the null entries llama.cpp
    // expects.
    let rc = unsafe { llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc == 0 {
        Ok(())
    } else {
        Err(rc)
    }
}

/// Entries of an importance-matrix file, as llama-quantize's `--imatrix`
/// hands them to the library.
pub fn imatrix_entries(path: &Path) -> Vec<(String, Vec<f32>)> {
    let m = Imatrix::load(path).unwrap_or_else(|e| panic!("loading imatrix: {e}"));
    let mut names: Vec<String> = m.names().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = m.values(&n).unwrap().to_vec();
            (n, v)
        })
        .collect()
}

/// `llama-quantize [--imatrix FILE] input output TYPE` with 2 threads;
/// panics (failing the test) when llama.cpp refuses.
pub fn llama_model_quantize(input: &Path, output: &Path, ftype: FileType, imatrix: Option<&Path>) {
    let opts = QuantizeOptions {
        imatrix: imatrix.map(imatrix_entries).unwrap_or_default(),
        ..Default::default()
    };
    quantize_with(input, output, ftype, &opts).unwrap_or_else(|rc| {
        panic!(
            "llama_model_quantize({} -> {}, {ftype}) failed with {rc}",
            input.display(),
            output.display()
        )
    });
}
