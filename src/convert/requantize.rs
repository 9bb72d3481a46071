//! Re-quantizing a GGUF file (`kvant quantize`, or an F32/F16/BF16 GGUF
//! dropped into the inbox): the tokenizer, template and hyper-parameters
//! are already inside; only the tensor types change.
//!
//! Like llama-quantize, a tensor whose type does not change is copied
//! byte for byte, and re-quantizing an already quantized tensor is refused
//! unless asked for (it compounds the error).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::chat::end_of_text_tokens;
use super::mix::{load_imatrix, policy_model, stamp_file_type, types_for};
use super::report::build_report;
use super::stream::{write_outputs, JobTensor, OutputPlan, TensorData};
use super::{ChatTemplate, ConvertError, ConvertReport, ConvertRequest, ModelPaths, Progress};
use crate::gguf::{GgufFile, GgufValue};
use crate::quant::dequantize;
// A band of a tensor is released as a tensor of its own.
use crate::gguf::GgufTensor;

pub(super) fn run(
    req: &ConvertRequest,
    paths: &ModelPaths,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    let input = GgufFile::open(&paths.checkpoint)?;
    let md = &input.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| {
            ConvertError::Other(format!(
                "{}: no general.architecture key: not a model GGUF",
                paths.checkpoint.display()
            ))
        })?
        .to_owned();
    let tensors: Vec<JobTensor> = input
        .tensors
        .iter()
        .map(|t| JobTensor {
            name: t.info.name.clone(),
            ne: t.info.ne.clone(),
        })
        .collect();
    let model = policy_model(md, &tensors);
    let imatrix = load_imatrix(req.imatrix.as_deref())?;
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for spec in &req.outputs {
        let mut types = types_for(
            spec.file_type,
            &model,
            &req.type_overrides,
            imatrix.as_ref(),
        )?;
        for (ty, t) in types.iter_mut().zip(&input.tensors) {
            // Tensors the policy leaves unquantized keep their input type.
            if !ty.is_quantized() && t.info.ne.len() < 2 {
                *ty = t.info.ty;
            }
            if t.info.ty.is_quantized() && *ty != t.info.ty && !req.allow_requantize {
                return Err(ConvertError::Tensor {
                    path: paths.checkpoint.clone(),
                    tensor: t.info.name.clone(),
                    reason: format!(
                        "is already {}; re-quantizing to {ty} compounds the error (pass --allow-requantize to do it anyway, or start from an F32/F16/BF16 GGUF)",
                        t.info.ty
                    ),
                });
            }
        }
        let mut out_md = md.clone();
        stamp_file_type(&mut out_md, spec.file_type);
        outputs.push(OutputPlan {
            spec,
            metadata: out_md,
            types,
        });
    }
    let all_types: Vec<_> = outputs.iter().map(|o| o.types.clone()).collect();
    let file = &input;
    let written = write_outputs(
        &tensors,
        outputs,
        &paths.checkpoint,
        imatrix.as_ref(),
        progress,
        cancel,
        |i| {
            let t = &file.tensors[i];
            Ok(TensorData::Mapped {
                ty: t.info.ty,
                bytes: file.tensor_data(t),
                check_finite: false,
                // Dropping the pages of what has been read keeps resident
                // memory to a band of the largest tensor, not the file.
                release: Box::new(move |r| {
                    file.release_pages(&GgufTensor {
                        info: t.info.clone(),
                        offset: t.offset + r.start as u64,
                        nbytes: r.len() as u64,
                    })
                }),
            })
        },
        |ty, bytes, n| {
            let v = dequantize(ty, bytes, n).map_err(|e| e.to_string())?;
            match v.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(format!("element {i} is not finite")),
                None => Ok(v),
            }
        },
    )?;

    let u = |k: &str| md.get(&format!("{arch}.{k}")).and_then(GgufValue::as_u64);
    let context_length = u("context_length").unwrap_or(0) as u32;
    let name = req.name.clone().unwrap_or_else(|| {
        md.get("general.name")
            .and_then(GgufValue::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| super::default_name(&paths.checkpoint))
    });
    let stop_tokens = end_of_text_tokens(md);
    let hparams = serde_json::json!({
        "n_layer": u("block_count"),
        "n_embd": u("embedding_length"),
        "n_head": u("attention.head_count"),
        "n_ctx": context_length,
    });
    Ok(build_report(
        name,
        arch,
        context_length,
        stop_tokens,
        hparams,
        None,
        ChatTemplate::from_gguf(md),
        &tensors,
        &req.outputs,
        &all_types,
        written,
        started,
    ))
}
