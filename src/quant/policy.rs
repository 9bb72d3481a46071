//! The per-tensor type policy: which ggml type each tensor of a model gets
//! for a given file type, decided exactly as the pinned llama.cpp's
//! `llama_model_quantize` decides it (`src/llama-quant.cpp`:
//! `tensor_allows_quantization`, `llama_tensor_get_type`,
//! `llama_tensor_get_type_impl`, `tensor_type_fallback`).
//!
//! This is a pure function of names, shapes and a few hyper-parameters. It
//! must not know about files, tensor data or how rows are quantized.
//!
//! Invariants:
//! - The answer is in the caller's tensor order, but the "use more bits"
//!   counters advance in llama.cpp's iteration order (its `weights_map` is
//!   sorted by layer number, then by name), because that order decides
//!   which `attn_v`/`attn_qkv` tensor counts as the first, second, ….
//! - Input tensors are F32: a tensor that is not quantized keeps F32.
//! - A type the rules or the user pick that a row length cannot hold is
//!   demoted exactly as llama.cpp demotes it; an explicit
//!   `--output-tensor-type`/`--token-embedding-type` is never demoted by
//!   llama.cpp, so one that does not fit is an error here (llama.cpp
//!   would abort while quantizing).

use std::cmp::Ordering;

use super::{FileType, GgmlType};

/// One tensor as the policy sees it: its GGUF name and ggml shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTensor {
    /// GGUF tensor name (`blk.0.attn_qkv.weight`).
    pub name: String,
    /// Shape in ggml order (`ne[0]` is the row length).
    pub ne: Vec<u64>,
}

/// The model facts the policy depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyModel {
    /// `general.architecture` (`gpt2`, `llama`, …): Falcon and the
    /// 70B-class models have their own rules.
    pub arch: String,
    /// `{arch}.block_count`: the denominator of the layer rules.
    pub n_layer: u32,
    /// `{arch}.attention.head_count`.
    pub n_head: u32,
    /// `{arch}.attention.head_count_kv` (equal to `n_head` without GQA).
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: u32,
    /// The tensors, in file order.
    pub tensors: Vec<PolicyTensor>,
}

/// User overrides, as llama-quantize's `--tensor-type`,
/// `--output-tensor-type`, `--token-embedding-type`, `--pure` and
/// `--leave-output-tensor` give them.
#[derive(Debug, Clone, Default)]
pub struct TypeOverrides {
    /// `--tensor-type PATTERN=TYPE`: the first pattern found anywhere in a
    /// tensor's name (a regex search, not a full match) sets its type.
    pub tensor_types: Vec<(regex::Regex, GgmlType)>,
    /// `--output-tensor-type`.
    pub output_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--pure`: no per-tensor mixing rules, the default type everywhere
    /// (still subject to the shape fallback).
    pub pure: bool,
    /// `--leave-output-tensor`: `output.weight` keeps its input type.
    pub leave_output_tensor: bool,
}

/// Why no type list could be decided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A user-chosen type cannot hold the tensor's rows.
    #[error("tensor {tensor}: row length {ncols} is not a multiple of {ty}'s block size")]
    IncompatibleShape {
        /// The tensor.
        tensor: String,
        /// The type that does not fit.
        ty: GgmlType,
        /// Its row length.
        ncols: u64,
    },
    /// A mixture-of-experts tensor name without a valid layer number.
    #[error("tensor {tensor}: cannot determine its layer (block_count {n_layer})")]
    BadLayer {
        /// The tensor.
        tensor: String,
        /// The model's layer count.
        n_layer: u32,
    },
    /// A tensor without dimensions.
    #[error("tensor {tensor}: has no dimensions")]
    NoDimensions {
        /// The tensor.
        tensor: String,
    },
}

/// Broad tensor roles (llama.cpp's `tensor_category`), found by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            Category::Output
        } else if is_token_embd(name) {
            Category::TokenEmbd
        } else if name.contains("attn_qkv.weight") {
            Category::AttnQkv
        } else if name.contains("attn_kv_b.weight") {
            Category::AttnKvB
        } else if name.contains("attn_v.weight") {
            Category::AttnV
        } else if name.contains("attn_k.weight") {
            Category::AttnK
        } else if name.contains("attn_q.weight") {
            Category::AttnQ
        } else if name.contains("attn_output.weight") {
            Category::AttnOutput
        } else if name.contains("ffn_up") {
            Category::FfnUp
        } else if name.contains("ffn_gate") {
            Category::FfnGate
        } else if name.contains("ffn_down") {
            Category::FfnDown
        } else {
            Category::Other
        }
    }

    /// The value-projection-like tensors, the most sensitive to bits.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

/// The layer number C's `sscanf(name, "blk.%d.", &n)` reads, if any.
fn scan_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return None;
    }
    // Longer digit runs overflow C's int; no real name has them.
    let value: i64 = digits[..len].parse().ok()?;
    Some(if neg { -value } else { value })
}

/// llama.cpp's `weight_name_comparer`: layer number first (names without
/// one count as layer -1), then byte order of the names.
fn weight_order(a: &str, b: &str) -> Ordering {
    let la = scan_layer(a).unwrap_or(-1);
    let lb = scan_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// ggml's `ggml_n_dims`: trailing dimensions of size 1 do not count.
fn n_dims(ne: &[u64]) -> usize {
    (1..ne.len())
        .rev()
        .find(|&i| ne[i] > 1)
        .map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization` for the names kvant's architectures and
/// their neighbours use.
fn allows_quantization(overrides: &TypeOverrides, t: &PolicyTensor) -> bool {
    if n_dims(&t.ne) < 2 {
        return false;
    }
    let name = t.name.as_str();
    // llama.cpp compares `rfind("weight")` with `size() - 6`; for a
    // five-byte name both sides are `npos`, so such names count as weights.
    let mut quantize = name.ends_with("weight") || name.len() == 5;
    quantize &= !name.contains("_norm.weight");
    quantize &= !overrides.leave_output_tensor || name != "output.weight";
    const NEVER: &[&str] = &[
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    // (llama.cpp's glm5-next-only exclusions are left out: kvant never
    // sees that architecture.)
    quantize &= !NEVER.iter().any(|s| name.contains(s));
    quantize &= name != "position_embd.weight";
    quantize &= name != "token_types.weight";
    quantize
}

/// `use_more_bits`: the first and last eighth of the layers and every
/// third one in between.
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// True when llama.cpp labels the model `LLM_TYPE_70B` (the only size
/// label the policy looks at).
fn is_70b(m: &PolicyModel) -> bool {
    match m.arch.as_str() {
        "llama" => m.n_expert != 8 && m.n_layer == 80 && m.n_head != m.n_head_kv,
        "qwen2" | "deci" | "olmo" => m.n_layer == 80,
        "jais2" => m.n_layer == 68,
        _ => false,
    }
}

/// Counters llama.cpp carries across tensors while choosing types.
struct State<'a> {
    model: &'a PolicyModel,
    overrides: &'a TypeOverrides,
    ftype: FileType,
    has_imatrix: bool,
    has_tied_embeddings: bool,
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
}

impl State<'_> {
    fn n_gqa(&self) -> u32 {
        // llama.cpp answers 0 for a model without KV heads.
        self.model
            .n_head
            .checked_div(self.model.n_head_kv)
            .unwrap_or(0)
    }

    fn is_falcon(&self) -> bool {
        self.model.arch == "falcon"
    }

    /// `layer_info`: the counter itself for dense models; for MoE models
    /// the layer number parsed from the name.
    fn layer_info(&self, counter: i64, name: &str) -> Result<(i64, i64), PolicyError> {
        let n_layer = i64::from(self.model.n_layer);
        if self.model.n_expert.max(1) > 1 {
            let bad = || PolicyError::BadLayer {
                tensor: name.to_string(),
                n_layer: self.model.n_layer,
            };
            let i = scan_layer(name).ok_or_else(bad)?;
            if i < 0 || i >= n_layer {
                return Err(bad());
            }
            return Ok((i, n_layer));
        }
        Ok((counter, n_layer))
    }

    /// `llama_tensor_get_type`: the outer wrapper (overrides, then the
    /// mixing rules, then the shape fallback).
    fn get_type(&mut self, t: &PolicyTensor, cat: Category) -> Result<GgmlType, PolicyError> {
        let ncols = t.ne[0];
        let fits = |ty: GgmlType| -> Result<GgmlType, PolicyError> {
            if ncols % ty.block_size() as u64 == 0 {
                Ok(ty)
            } else {
                Err(PolicyError::IncompatibleShape {
                    tensor: t.name.clone(),
                    ty,
                    ncols,
                })
            }
        };
        if let (Some(ty), Category::TokenEmbd) = (self.overrides.token_embedding_type, cat) {
            // per_layer_token_embd may instead be named by a --tensor-type.
            let named = t.name == "per_layer_token_embd.weight"
                && self
                    .overrides
                    .tensor_types
                    .iter()
                    .any(|(re, _)| re.is_match(&t.name));
            if !named {
                return fits(ty);
            }
        }
        if let (Some(ty), Category::Output) = (self.overrides.output_type, cat) {
            return fits(ty);
        }
        let default_type = self.ftype.default_type();
        if !default_type.is_quantized() {
            return Ok(default_type);
        }
        let mut new_type = default_type;
        let manual = self
            .overrides
            .tensor_types
            .iter()
            .find(|(re, _)| re.is_match(&t.name));
        if let Some((_, ty)) = manual {
            new_type = *ty;
        } else if !self.overrides.pure {
            new_type = self.mix(new_type, t, cat)?;
        }
        Ok(fallback(new_type, ncols))
    }

    /// `llama_tensor_get_type_impl`, restricted to the file types kvant
    /// offers (the IQ*, TQ* and MXFP4 branches never apply).
    fn mix(
        &mut self,
        mut new_type: GgmlType,
        t: &PolicyTensor,
        cat: Category,
    ) -> Result<GgmlType, PolicyError> {
        use FileType as F;
        use GgmlType as G;
        let ftype = self.ftype;
        let n_expert = self.model.n_expert;
        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            if let Some(ty) = self.overrides.output_type {
                new_type = ty;
            } else if self.is_falcon() || t.ne[0] % new_type.block_size() as u64 != 0 {
                new_type = G::Q8_0;
            } else if new_type != G::Q8_0 {
                new_type = G::Q6K;
            }
        } else if cat == Category::TokenEmbd {
            // Only IQ*/TQ* file types change an untied token embedding.
        } else if cat.is_attn_v() {
            let i = self.i_attention_wv;
            let n = self.n_attention_wv;
            match ftype {
                F::Q2_K => new_type = if self.n_gqa() >= 4 { G::Q4K } else { G::Q3K },
                F::Q3_K_M => new_type = if i < 2 { G::Q5K } else { G::Q4K },
                F::Q3_K_L => new_type = G::Q5K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => new_type = G::Q6K,
                F::Q4_K_S if i < 4 => new_type = G::Q5K,
                _ => {}
            }
            if is_70b(self.model) && matches!(new_type, G::Q3K | G::Q4K) {
                new_type = G::Q5K;
            }
            if n_expert == 8 {
                new_type = G::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if n_expert == 8 {
                new_type = G::Q8_0;
            }
        } else if cat == Category::AttnQ {
            // Only IQ3 file types change attn_q.
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, &t.name)?;
            let falcon = self.is_falcon();
            match ftype {
                F::Q2_K => new_type = G::Q3K,
                F::Q3_K_M => {
                    new_type = if i < n / 16 {
                        G::Q5K
                    } else if !falcon || use_more_bits(i, n) {
                        G::Q4K
                    } else {
                        G::Q3K
                    }
                }
                F::Q3_K_L => new_type = if falcon { G::Q4K } else { G::Q5K },
                F::Q4_K_M => {
                    if falcon {
                        new_type = if i < n / 16 {
                            G::Q6K
                        } else if use_more_bits(i, n) {
                            G::Q5K
                        } else {
                            G::Q4K
                        };
                    } else if use_more_bits(i, n) {
                        new_type = G::Q6K;
                    }
                }
                F::Q5_K_M if use_more_bits(i, n) => new_type = G::Q6K,
                F::Q4_K_S if !falcon && i < n / 8 => new_type = G::Q5K,
                F::Q4_0 if self.has_imatrix && i < n / 8 => new_type = G::Q4_1,
                F::Q5_0 if self.has_imatrix && i < n / 8 => new_type = G::Q5_1,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if !self.is_falcon() {
                if n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M
                    ) {
                        new_type = G::Q5K;
                    }
                } else {
                    match ftype {
                        F::Q2_K => new_type = G::Q3K,
                        F::Q3_K_M => new_type = G::Q4K,
                        F::Q3_K_L => new_type = G::Q5K,
                        _ => {}
                    }
                }
            } else if ftype == F::Q3_K_L {
                new_type = G::Q4K;
            }
        } else if cat == Category::FfnGate {
            // Only IQ3_XS changes ffn_gate, but the layer is still checked.
            self.layer_info(self.i_ffn_gate, &t.name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, &t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(new_type)
    }
}

/// `tensor_type_fallback`: a type whose block does not divide the row
/// length is replaced by a 32-block type of similar size, and by F16 when
/// even that does not fit.
fn fallback(target: GgmlType, ncols: u64) -> GgmlType {
    use GgmlType as G;
    let fits = |ty: GgmlType| ncols % ty.block_size() as u64 == 0;
    if fits(target) {
        return target;
    }
    let demoted = match target {
        G::Q2K | G::Q3K => G::Q4_0,
        G::Q4K => G::Q5_0,
        G::Q5K => G::Q5_1,
        G::Q6K => G::Q8_0,
        other => other,
    };
    if fits(demoted) {
        demoted
    } else {
        G::F16
    }
}

/// Each tensor's type, exactly as the pinned `llama_model_quantize`
/// decides it for `ftype` (with `has_imatrix` when an importance matrix is
/// given), in the order of `model.tensors`. Input tensors are assumed F32,
/// so a tensor that is not quantized is F32.
pub fn choose_types(
    ftype: FileType,
    model: &PolicyModel,
    overrides: &TypeOverrides,
    has_imatrix: bool,
) -> Result<Vec<GgmlType>, PolicyError> {
    if let Some(t) = model.tensors.iter().find(|t| t.ne.is_empty()) {
        return Err(PolicyError::NoDimensions {
            tensor: t.name.clone(),
        });
    }
    let categories: Vec<Category> = model
        .tensors
        .iter()
        .map(|t| Category::of(&t.name))
        .collect();
    let mut state = State {
        model,
        overrides,
        ftype,
        has_imatrix,
        has_tied_embeddings: !categories.contains(&Category::Output),
        n_attention_wv: categories.iter().filter(|c| c.is_attn_v()).count() as i64,
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
    };
    let mut order: Vec<usize> = (0..model.tensors.len()).collect();
    order.sort_by(|&a, &b| weight_order(&model.tensors[a].name, &model.tensors[b].name));
    let mut types = vec![GgmlType::F32; model.tensors.len()];
    for i in order {
        let t = &model.tensors[i];
        if allows_quantization(overrides, t) {
            types[i] = state.get_type(t, categories[i])?;
        }
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_order_sorts_by_layer_number_then_name() {
        let mut names = vec![
            "blk.10.attn_v.weight",
            "blk.2.attn_v.weight",
            "output.weight",
            "blk.2.attn_k.weight",
            "token_embd.weight",
        ];
        names.sort_by(|a, b| weight_order(a, b));
        assert_eq!(
            names,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.attn_v.weight",
                "blk.10.attn_v.weight",
            ]
        );
    }

    #[test]
    fn trailing_unit_dimensions_do_not_count() {
        assert_eq!(n_dims(&[128]), 1);
        assert_eq!(n_dims(&[128, 1]), 1);
        assert_eq!(n_dims(&[128, 4]), 2);
        assert_eq!(n_dims(&[128, 1, 3]), 3);
    }

    #[test]
    fn fallback_follows_llama_cpp_table() {
        assert_eq!(fallback(GgmlType::Q4K, 128), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q6K, 128), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q2K, 128), GgmlType::Q4_0);
        assert_eq!(fallback(GgmlType::Q5K, 100), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q8_0, 100), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q4K, 512), GgmlType::Q4K);
    }
}
