//! Special-token ids and the add-BOS/EOS flags, decided as llama.cpp's
//! converter (`gguf.SpecialVocab`) decides them: names from
//! `tokenizer_config.json` looked up among the tokenizer's tokens, then
//! `*_token_id` from the model's `config.json`, then the GPT-2 convention
//! (`<|endoftext|>` as BOS and EOS). Must not know about file formats.

use serde_json::Value;

/// The special token ids a GGUF vocabulary names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    /// End of turn (`<|eot_id|>`, `<|im_end|>`) when it differs from EOS.
    pub eot: Option<u32>,
}

/// The text of a special-token entry: a string or `{"content": ...}`.
pub(crate) fn entry_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// Resolves the special ids. `lookup` maps a token text to its id.
pub(crate) fn resolve(
    tokenizer_config: Option<&Value>,
    model_config: Option<&Value>,
    n_tokens: usize,
    lookup: &dyn Fn(&str) -> Option<u32>,
) -> SpecialIds {
    let valid = |id: u32| (id as usize) < n_tokens;
    let from_tc = |name: &str| {
        tokenizer_config
            .and_then(|c| c.get(format!("{name}_token")))
            .and_then(entry_text)
            .and_then(lookup)
            .filter(|&id| valid(id))
    };
    let from_cfg = |name: &str| {
        model_config
            .and_then(|c| c.get(format!("{name}_token_id")))
            .and_then(|v| match v {
                Value::Array(a) => a.first().and_then(Value::as_u64),
                v => v.as_u64(),
            })
            .and_then(|id| u32::try_from(id).ok())
            .filter(|&id| valid(id))
    };
    let pick = |name: &str| from_tc(name).or_else(|| from_cfg(name));
    let mut ids = SpecialIds {
        bos: pick("bos"),
        eos: pick("eos"),
        unk: pick("unk"),
        sep: pick("sep"),
        pad: pick("pad"),
        eot: None,
    };
    if ids.bos.is_none() && ids.eos.is_none() {
        if let Some(id) = lookup("<|endoftext|>").filter(|&id| valid(id)) {
            ids.bos = Some(id);
            ids.eos = Some(id);
        }
    }
    for eot in [
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|eot|>",
    ] {
        if let Some(id) = lookup(eot).filter(|&id| valid(id)) {
            if Some(id) != ids.eos {
                ids.eot = Some(id);
            }
            break;
        }
    }
    ids
}

/// Whether the tokenizer adds BOS / EOS: `add_bos_token`/`add_eos_token`
/// in `tokenizer_config.json` win; otherwise a `TemplateProcessing`
/// post-processor's single template decides (a leading special token means
/// BOS, a trailing one EOS); otherwise `default`.
pub(crate) fn add_flags(
    tokenizer_json: Option<&Value>,
    tokenizer_config: Option<&Value>,
    default: (bool, bool),
) -> (bool, bool) {
    let (mut bos, mut eos) = default;
    if let Some(single) = tokenizer_json
        .and_then(|t| t.get("post_processor"))
        .and_then(template_single)
    {
        let is_special = |v: Option<&Value>| v.is_some_and(|v| v.get("SpecialToken").is_some());
        bos = is_special(single.first());
        eos = single.len() > 1 && is_special(single.last());
    }
    let flag = |k: &str| {
        tokenizer_config
            .and_then(|c| c.get(k))
            .and_then(Value::as_bool)
    };
    if let Some(b) = flag("add_bos_token") {
        bos = b;
    }
    if let Some(b) = flag("add_eos_token") {
        eos = b;
    }
    (bos, eos)
}

/// The `single` template of a TemplateProcessing post-processor, also
/// inside a `Sequence`.
fn template_single(pp: &Value) -> Option<&Vec<Value>> {
    match pp.get("type").and_then(Value::as_str)? {
        "TemplateProcessing" => pp.get("single").and_then(Value::as_array),
        "Sequence" => pp
            .get("processors")
            .and_then(Value::as_array)?
            .iter()
            .take(16)
            .find_map(template_single),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_with_leading_special_adds_bos_only() {
        let t = json!({"post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}]}});
        assert_eq!(add_flags(Some(&t), None, (false, false)), (true, false));
        let cfg = json!({"add_bos_token": false, "add_eos_token": true});
        assert_eq!(
            add_flags(Some(&t), Some(&cfg), (false, false)),
            (false, true)
        );
    }

    #[test]
    fn specials_fall_back_to_config_then_endoftext() {
        let lookup = |s: &str| match s {
            "<|endoftext|>" => Some(0),
            "<|im_end|>" => Some(2),
            _ => None,
        };
        let ids = resolve(None, None, 10, &lookup);
        assert_eq!((ids.bos, ids.eos, ids.eot), (Some(0), Some(0), Some(2)));
        let cfg = json!({"eos_token_id": 2});
        let ids = resolve(None, Some(&cfg), 10, &lookup);
        assert_eq!((ids.bos, ids.eos, ids.eot), (None, Some(2), None));
        let tc = json!({"eos_token": {"content": "<|endoftext|>"}});
        let ids = resolve(Some(&tc), Some(&cfg), 10, &lookup);
        assert_eq!(ids.eos, Some(0));
    }
}
