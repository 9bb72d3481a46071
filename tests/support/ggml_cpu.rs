//! ggml-cpu's own dot-product kernels from the pinned llama.cpp, reached
//! through `ggml_get_type_traits_cpu` (declared in `ggml-cpu.h`, which the
//! bindings do not include): `from_float` for the activation partner and
//! `vec_dot` for the weight type, exactly the functions ggml's `mul_mat`
//! calls row by row on this CPU.

use std::ffi::{c_int, c_void};
use std::sync::Once;

use kvant::quant::GgmlType;
use llama_cpp_sys_2::ggml_type;

type FromFloat = unsafe extern "C" fn(*const f32, *mut c_void, i64);
type VecDot =
    unsafe extern "C" fn(c_int, *mut f32, usize, *const c_void, usize, *const c_void, usize, c_int);

/// `struct ggml_type_traits_cpu` (ggml-cpu.h).
#[repr(C)]
struct TypeTraitsCpu {
    from_float: Option<FromFloat>,
    vec_dot: Option<VecDot>,
    vec_dot_type: ggml_type,
    nrows: i64,
}

extern "C" {
    fn ggml_get_type_traits_cpu(t: ggml_type) -> *const TypeTraitsCpu;
    fn ggml_cpu_init();
}

fn traits(ty: GgmlType) -> &'static TypeTraitsCpu {
    static INIT: Once = Once::new();
    // SAFETY: ggml_cpu_init only fills ggml's static tables (f16 lookup).
    INIT.call_once(|| unsafe { ggml_cpu_init() });
    // SAFETY: the table is static and indexed by a valid type id.
    unsafe { &*ggml_get_type_traits_cpu(ty.id() as ggml_type) }
}

/// ggml-cpu's `vec_dot_type` id for a weight type.
pub fn vec_dot_type_id(weight: GgmlType) -> u32 {
    traits(weight).vec_dot_type
}

/// ggml-cpu's `from_float` of `dot_type` on one row, into a zeroed buffer.
pub fn from_float(dot_type: GgmlType, x: &[f32]) -> Vec<u8> {
    let size = dot_type.row_size(x.len()).expect("row fits the type");
    let mut out = vec![0u8; size];
    let f = traits(dot_type).from_float.expect("type has from_float");
    // SAFETY: x holds len floats; out is sized by ggml's row size.
    unsafe { f(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
    out
}

/// ggml-cpu's `vec_dot` of `weight` over `n` elements.
pub fn vec_dot(weight: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let t = traits(weight);
    assert_eq!(t.nrows, 1, "{weight}: only single-row kernels are driven");
    let f = t.vec_dot.expect("type has vec_dot");
    let mut s = 0f32;
    // SAFETY: w and a hold one row of n elements of their types; nrc = 1
    // reads one row of each and writes one float.
    unsafe {
        f(
            n as c_int,
            &mut s,
            0,
            w.as_ptr().cast(),
            0,
            a.as_ptr().cast(),
            0,
            1,
        )
    };
    s
}
