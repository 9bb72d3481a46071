//! Merging an adapter into its base, tensor by tensor, with PEFT's
//! semantics (the model `PeftModel` computes with the adapter active):
//!
//! | module | base weight as stored | merged |
//! |---|---|---|
//! | `nn.Linear` | `(out, in)` | `W + s·B·A` |
//! | HF `Conv1D` (`fan_in_fan_out`) | `(in, out)` | `W + s·(B·A)ᵀ` |
//! | `nn.Embedding` | `(vocab, dim)` | `W + s·Aᵀ·Bᵀ` |
//! | DoRA Linear | `(out, in)` | `m / ‖W + s·B·A‖_row ⊙ (W + s·B·A)` |
//! | `lora_bias` | bias `(out,)` | `b + s·lora_B.bias` |
//!
//! A Conv1D is recognised by the base mapping transposing the tensor (the
//! GPT-2 family decides that from shapes), not by the config's
//! `fan_in_fan_out`, as PEFT's `dispatch_default` forces it from the layer
//! type. Whole saved modules replace the base's tensors before planning.
//! Merging happens in the checkpoint's own layout, before the family's
//! rearrangements (RoPE permutation, Conv1D transpose), so those apply to
//! the merged weight exactly as to a plain one.

use std::collections::BTreeMap;

use super::pieces::{ModuleAdapter, PairKind, Pieces};
use super::{AdapterConfig, AdapterError};
use crate::arch::{ArchPlan, PlannedTensor, Recipe};
use crate::source::{Checkpoint, SourceTensor};

/// Layout of a targeted base weight as the checkpoint stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `(out, in)`.
    OutIn,
    /// `(in, out)`: Conv1D weights and embeddings.
    InOut,
}

/// How one base tensor changes.
#[derive(Debug, Clone)]
enum Edit {
    /// Add the low-rank product (and rescale for DoRA).
    Pair {
        module: Box<ModuleAdapter>,
        layout: Layout,
        scale: f32,
    },
    /// Add `scale · lora_B.bias`.
    Bias { bias: SourceTensor, scale: f32 },
}

/// The edits an adapter makes, by source tensor name.
#[derive(Debug, Clone, Default)]
pub struct Merge {
    edits: BTreeMap<String, Edit>,
    /// Set when a tied head must be written on its own (`output.weight`
    /// from the unmodified embedding): the embedding changes, the head
    /// does not.
    untie_from: Option<String>,
}

/// Elements as f32 of an adapter tensor, errors naming it.
fn values(t: &SourceTensor, ck: &Checkpoint) -> Result<Vec<f32>, AdapterError> {
    t.to_f32().map_err(|e| AdapterError::Weights {
        path: ck.path.clone(),
        reason: e.to_string(),
    })
}

fn dims2(t: &SourceTensor) -> Option<[usize; 2]> {
    match t.shape.as_slice() {
        [a, b] => Some([*a, *b]),
        _ => None,
    }
}

/// The base tensor names of the embedding and head, per family layout.
const EMBEDDINGS: [&str; 3] = [
    "model.embed_tokens.weight",
    "transformer.wte.weight",
    "wte.weight",
];
const HEAD: &str = "lm_head.weight";

/// Puts the adapter's whole tensors into `base` (shape-checked), and adds
/// an alias of the unmodified embedding as the head when a tied head
/// would otherwise change with it. Call before planning.
pub fn replace_tensors(
    base: &mut Checkpoint,
    pieces: &Pieces,
    adapter_path: &std::path::Path,
) -> Result<bool, AdapterError> {
    let embed = EMBEDDINGS
        .iter()
        .find(|e| base.tensor(e).is_some())
        .copied();
    let changes = |name: &str| {
        pieces.replacements.contains_key(name)
            || pieces.modules.values().any(|m| m.weight_name() == name)
    };
    let head = base.tensor(HEAD);
    let embed_t = embed.and_then(|e| base.tensor(e));
    // Tied: no head saved (llama.cpp re-uses the embedding), or the same
    // bytes under both names.
    let tied = match (head, embed_t) {
        (None, Some(_)) => true,
        (Some(h), Some(e)) => h.same_bytes(e),
        _ => false,
    };
    // One side changes, the other must not follow it.
    let untie = tied && embed.is_some_and(|e| changes(e) != changes(HEAD));
    if untie && head.is_none() {
        if let Some(t) = embed_t.cloned() {
            base.tensors.push(t.renamed(HEAD.to_owned()));
        }
    }
    for (name, t) in &pieces.replacements {
        let target = match base.tensor(name) {
            Some(old) => Some(old.shape.clone()),
            // A head saved for a tied base takes the embedding's shape.
            None if name == HEAD => embed.and_then(|e| base.tensor(e)).map(|e| e.shape.clone()),
            None => None,
        };
        let Some(shape) = target else {
            return Err(AdapterError::Mismatch {
                adapter: adapter_path.to_owned(),
                tensor: name.clone(),
                reason: format!(
                    "the adapter saves it whole ({:?}) but the base has no such tensor",
                    t.shape
                ),
            });
        };
        if shape != t.shape {
            return Err(AdapterError::Mismatch {
                adapter: adapter_path.to_owned(),
                tensor: name.clone(),
                reason: format!("the adapter's is {:?}, the base's {shape:?}", t.shape),
            });
        }
        let new = t.clone().renamed(name.clone());
        match base.tensors.iter_mut().find(|x| &x.name == name) {
            Some(slot) => *slot = new,
            None => base.tensors.push(new),
        }
    }
    Ok(untie)
}

/// Checks every targeted module against the base and plan, and returns
/// the edits. `untie` comes from [`replace_tensors`].
pub fn plan_merge(
    base: &Checkpoint,
    plan: &ArchPlan,
    pieces: &Pieces,
    cfg: &AdapterConfig,
    adapter: &Checkpoint,
    untie: bool,
) -> Result<Merge, AdapterError> {
    let mismatch = |tensor: &str, reason: String| AdapterError::Mismatch {
        adapter: adapter.path.clone(),
        tensor: tensor.to_owned(),
        reason,
    };
    let mut edits = BTreeMap::new();
    for m in pieces.modules.values() {
        let wname = m.weight_name();
        let Some(w) = base.tensor(&wname) else {
            return Err(mismatch(
                &wname,
                "the adapter targets it but the base has no such tensor (another architecture?)"
                    .into(),
            ));
        };
        let transposed = plan
            .tensors
            .iter()
            .any(|t| matches!(&t.recipe, Recipe::Transpose { source } if *source == wname));
        let layout = match (m.kind, transposed) {
            (PairKind::Embedding, _) | (PairKind::Linear, true) => Layout::InOut,
            (PairKind::Linear, false) => Layout::OutIn,
        };
        let (Some([r, a_in]), Some([b_out, rb])) = (dims2(&m.a), dims2(&m.b)) else {
            return Err(mismatch(
                &wname,
                format!(
                    "factors {:?} and {:?} are not matrices",
                    m.a.shape, m.b.shape
                ),
            ));
        };
        if r != rb {
            return Err(mismatch(
                &wname,
                format!(
                    "lora_A is {:?} but lora_B is {:?}: ranks differ",
                    m.a.shape, m.b.shape
                ),
            ));
        }
        let want = match layout {
            Layout::OutIn => vec![b_out, a_in],
            Layout::InOut => vec![a_in, b_out],
        };
        if w.shape != want {
            return Err(mismatch(&wname, format!(
                "the adapter's factors ({:?}, {:?}) need a base weight of {want:?}, the base's is {:?}",
                m.a.shape, m.b.shape, w.shape
            )));
        }
        let (cfg_r, scale) = cfg.rank_and_scale(&m.module);
        if cfg_r != r as f64 {
            return Err(mismatch(
                &wname,
                format!(
                    "adapter_config.json gives rank {cfg_r} for '{}', the factors have rank {r}",
                    m.module
                ),
            ));
        }
        if let Some(mag) = &m.magnitude {
            if m.kind == PairKind::Embedding {
                return Err(mismatch(
                    &wname,
                    "DoRA on an embedding is not supported".into(),
                ));
            }
            if mag.shape != [b_out] {
                return Err(mismatch(
                    &wname,
                    format!(
                        "DoRA magnitude is {:?}, the module has {b_out} outputs",
                        mag.shape
                    ),
                ));
            }
        }
        if let Some(bias) = &m.bias {
            let bname = format!("{}.bias", m.module);
            match base.tensor(&bname) {
                Some(bb) if bb.shape == bias.shape => {}
                Some(bb) => {
                    return Err(mismatch(
                        &bname,
                        format!(
                            "lora_B.bias is {:?}, the base's bias {:?}",
                            bias.shape, bb.shape
                        ),
                    ))
                }
                None => {
                    return Err(mismatch(
                        &bname,
                        "lora_bias needs a base bias, which the base does not have".into(),
                    ))
                }
            }
            edits.insert(
                bname,
                Edit::Bias {
                    bias: bias.clone(),
                    scale: scale as f32,
                },
            );
        }
        edits.insert(
            wname,
            Edit::Pair {
                module: Box::new(m.clone()),
                layout,
                scale: scale as f32,
            },
        );
    }
    let embed = EMBEDDINGS
        .iter()
        .find(|e| base.tensor(e).is_some())
        .map(|e| (*e).to_owned());
    Ok(Merge {
        edits,
        untie_from: if untie { embed } else { None },
    })
}

impl Merge {
    /// True when the adapter changes the source tensor `name` (it must
    /// then be read through [`Merge::apply`], not copied in place).
    pub fn touches(&self, name: &str) -> bool {
        self.edits.contains_key(name)
    }

    /// Number of base tensors changed.
    pub fn n_edits(&self) -> usize {
        self.edits.len()
    }

    /// Writes the head on its own when a tied head must stay as it was
    /// while the embedding changes (PEFT's forward uses the original
    /// weight for the head). Call after planning.
    pub fn untie(&self, plan: &mut ArchPlan) {
        if self.untie_from.is_none() || plan.tensors.iter().any(|t| t.name == "output.weight") {
            return;
        }
        if let Some(embd) = plan.tensors.iter().find(|t| t.name == "token_embd.weight") {
            let ne = embd.ne.clone();
            plan.tensors.push(PlannedTensor {
                name: "output.weight".into(),
                ne,
                recipe: Recipe::Copy {
                    source: HEAD.into(),
                },
                keep_f32: false,
            });
        }
    }

    /// Applies the edits for source tensor `name` to its elements (row
    /// major, the checkpoint's layout), in f32.
    pub fn apply(
        &self,
        name: &str,
        w: &mut [f32],
        adapter: &Checkpoint,
    ) -> Result<(), AdapterError> {
        match self.edits.get(name) {
            None => Ok(()),
            Some(Edit::Bias { bias, scale }) => {
                let b = values(bias, adapter)?;
                for (x, d) in w.iter_mut().zip(&b) {
                    *x += scale * d;
                }
                Ok(())
            }
            Some(Edit::Pair {
                module,
                layout,
                scale,
            }) => {
                let a = values(&module.a, adapter)?;
                let b = values(&module.b, adapter)?;
                let r = module.a.shape[0];
                let (n_in, n_out) = (module.a.shape[1], module.b.shape[0]);
                match layout {
                    Layout::OutIn => add_out_in(w, &a, &b, r, n_in, *scale),
                    Layout::InOut => add_in_out(w, &a, &b, r, n_out, *scale),
                }
                if let Some(m) = &module.magnitude {
                    dora_rescale(w, &values(m, adapter)?, *layout, n_in, n_out);
                }
                Ok(())
            }
        }
    }
}

/// `W (out, in) += s · B (out, r) · A (r, in)`.
fn add_out_in(w: &mut [f32], a: &[f32], b: &[f32], r: usize, n_in: usize, s: f32) {
    for (o, row) in w.chunks_exact_mut(n_in).enumerate() {
        for k in 0..r {
            let c = s * b[o * r + k];
            for (x, &ak) in row.iter_mut().zip(&a[k * n_in..(k + 1) * n_in]) {
                *x += c * ak;
            }
        }
    }
}

/// `W (in, out) += s · Aᵀ (in, r) · Bᵀ (r, out)`: Conv1D weights and
/// embeddings (A's columns are W's rows).
fn add_in_out(w: &mut [f32], a: &[f32], b: &[f32], r: usize, n_out: usize, s: f32) {
    let n_in = a.len() / r.max(1);
    let mut bt = vec![0f32; r * n_out];
    for o in 0..n_out {
        for k in 0..r {
            bt[k * n_out + o] = b[o * r + k];
        }
    }
    for (i, row) in w.chunks_exact_mut(n_out).enumerate().take(n_in) {
        for k in 0..r {
            let c = s * a[k * n_in + i];
            for (x, &bk) in row.iter_mut().zip(&bt[k * n_out..(k + 1) * n_out]) {
                *x += c * bk;
            }
        }
    }
}

/// DoRA: each output's weights (a row of `(out, in)`, a column of
/// `(in, out)`) scaled to norm `m[o]`: PEFT's `get_weight_norm` (L2 over
/// the inputs) of the updated weight, then `m / norm`.
fn dora_rescale(w: &mut [f32], m: &[f32], layout: Layout, n_in: usize, n_out: usize) {
    let mut norms = vec![0f64; n_out];
    let at = |o: usize, i: usize| match layout {
        Layout::OutIn => o * n_in + i,
        Layout::InOut => i * n_out + o,
    };
    for (o, norm) in norms.iter_mut().enumerate() {
        *norm = (0..n_in)
            .map(|i| (w[at(o, i)] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
    }
    for (o, norm) in norms.iter().enumerate() {
        let f = (m[o] as f64 / norm) as f32;
        for i in 0..n_in {
            w[at(o, i)] *= f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive definition, for checking the loops.
    fn delta(a: &[f32], b: &[f32], r: usize, n_in: usize, n_out: usize) -> Vec<f32> {
        let mut d = vec![0f32; n_out * n_in];
        for o in 0..n_out {
            for i in 0..n_in {
                d[o * n_in + i] = (0..r).map(|k| b[o * r + k] * a[k * n_in + i]).sum();
            }
        }
        d
    }

    #[test]
    fn linear_and_conv1d_add_the_same_delta_in_their_layouts() {
        let (r, n_in, n_out) = (2, 3, 4);
        let a: Vec<f32> = (0..r * n_in).map(|x| x as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..n_out * r).map(|x| 1.0 - x as f32 * 0.25).collect();
        let d = delta(&a, &b, r, n_in, n_out);
        let mut lin = vec![1f32; n_out * n_in];
        add_out_in(&mut lin, &a, &b, r, n_in, 2.0);
        let mut conv = vec![1f32; n_in * n_out];
        add_in_out(&mut conv, &a, &b, r, n_out, 2.0);
        for o in 0..n_out {
            for i in 0..n_in {
                let want = 1.0 + 2.0 * d[o * n_in + i];
                assert!((lin[o * n_in + i] - want).abs() < 1e-6);
                assert!((conv[i * n_out + o] - want).abs() < 1e-6);
            }
        }
    }

    fn tensor(name: &str, shape: &[usize], v: f32) -> SourceTensor {
        let n: usize = shape.iter().product();
        let bytes: Vec<u8> = (0..n).flat_map(|_| v.to_le_bytes()).collect();
        SourceTensor::owned(
            name.into(),
            crate::source::DType::F32,
            shape.to_vec(),
            bytes.into(),
        )
        .expect("tensor")
    }

    fn checkpoint(tensors: Vec<SourceTensor>) -> Checkpoint {
        Checkpoint {
            path: "base".into(),
            format: crate::source::SourceFormat::Safetensors,
            tensors,
            config: None,
            extra: Default::default(),
        }
    }

    fn embedding_lora() -> Pieces {
        let mut p = Pieces::default();
        p.modules.insert(
            "model.embed_tokens".into(),
            ModuleAdapter {
                module: "model.embed_tokens".into(),
                kind: PairKind::Embedding,
                a: tensor("a", &[2, 6], 0.1),
                b: tensor("b", &[4, 2], 0.1),
                magnitude: None,
                bias: None,
            },
        );
        p
    }

    #[test]
    fn a_tied_head_keeps_the_unmodified_embedding_when_only_the_embedding_changes() {
        let mut base = checkpoint(vec![tensor("model.embed_tokens.weight", &[6, 4], 1.0)]);
        let untie = replace_tensors(&mut base, &embedding_lora(), "ft".as_ref()).expect("fits");
        assert!(untie);
        let head = base.tensor(HEAD).expect("the head, aliased");
        assert_eq!(head.to_f32().expect("f32"), vec![1.0; 24]);
        // Saved twice with the same bytes counts as tied too.
        let mut base = checkpoint(vec![
            tensor("model.embed_tokens.weight", &[6, 4], 1.0),
            tensor(HEAD, &[6, 4], 1.0),
        ]);
        assert!(replace_tensors(&mut base, &embedding_lora(), "ft".as_ref()).expect("fits"));
    }

    #[test]
    fn a_saved_head_on_a_tied_base_is_written_and_an_untied_base_is_left_alone() {
        let mut saved = Pieces::default();
        saved.replacements.insert(
            HEAD.into(),
            tensor("base_model.model.lm_head.weight", &[6, 4], 2.0),
        );
        let mut base = checkpoint(vec![tensor("model.embed_tokens.weight", &[6, 4], 1.0)]);
        assert!(replace_tensors(&mut base, &saved, "ft".as_ref()).expect("fits"));
        assert_eq!(
            base.tensor(HEAD).expect("head").to_f32().expect("f32"),
            vec![2.0; 24]
        );
        let mut untied = checkpoint(vec![
            tensor("model.embed_tokens.weight", &[6, 4], 1.0),
            tensor(HEAD, &[6, 4], 3.0),
        ]);
        assert!(!replace_tensors(&mut untied, &embedding_lora(), "ft".as_ref()).expect("fits"));
        // A saved tensor of another shape names both shapes.
        saved
            .replacements
            .insert(HEAD.into(), tensor("x", &[5, 4], 2.0));
        let e = replace_tensors(&mut untied, &saved, "ft".as_ref())
            .expect_err("shape")
            .to_string();
        assert!(
            e.contains("[5, 4]") && e.contains("[6, 4]") && e.contains(HEAD),
            "{e}"
        );
    }

    #[test]
    fn dora_rows_take_the_magnitudes_norm() {
        let mut w = vec![3f32, 4., 0., 2.];
        dora_rescale(&mut w, &[10., 1.], Layout::OutIn, 2, 2);
        assert_eq!(w, vec![6., 8., 0., 1.]);
        let mut w = vec![3f32, 0., 4., 2.]; // the same as (in, out)
        dora_rescale(&mut w, &[10., 1.], Layout::InOut, 2, 2);
        assert_eq!(w, vec![6., 0., 8., 1.]);
    }
}
