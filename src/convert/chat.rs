//! The model's Ollama chat template, decided once per model: its Jinja
//! `chat_template` translated into a Go `TEMPLATE` and proven, or — when no
//! translation survives the proof — Ollama's raw `{{ .Prompt }}` with the
//! reason recorded. Never an unproven guess.
//!
//! A checkpoint's template is judged with the Hugging Face tokenizer's own
//! `bos_token`/`eos_token` (what its Jinja sees); a GGUF's from the
//! `tokenizer.*` keys inside it (`kvant quantize`, `kvant register`).

use crate::gguf::{GgufArray, GgufValue, Metadata};
use crate::tokenizer::chat_template::{translate, Specials, TemplateFamily};

/// The raw template Ollama uses for a base model.
pub const RAW_TEMPLATE: &str = "{{ .Prompt }}";

/// What the Modelfile's `TEMPLATE` (and its chat `stop`s) will be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChatTemplate {
    /// The tokenizer has no chat template (a base model): `{{ .Prompt }}`.
    None,
    /// Translated and proven identical to the Jinja on every probe
    /// conversation.
    Translated {
        /// The recognised family (a label).
        family: String,
        /// The Go template.
        template: String,
        /// End-of-turn stop strings.
        stop: Vec<String>,
    },
    /// The Jinja template could not be translated with proof; the model
    /// gets `{{ .Prompt }}` and this reason is logged and reported.
    Fallback {
        /// Why (the translator's message).
        reason: String,
    },
}

impl ChatTemplate {
    /// Translates `jinja` (if any) as rendered with `specials`.
    pub fn decide(jinja: Option<&str>, specials: &Specials) -> Self {
        let Some(jinja) = jinja.filter(|j| !j.trim().is_empty()) else {
            return ChatTemplate::None;
        };
        match translate(jinja, specials) {
            Ok(t) => ChatTemplate::Translated {
                family: family_label(t.family).to_owned(),
                template: t.template,
                stop: t.stop,
            },
            Err(e) => ChatTemplate::Fallback {
                reason: e.to_string(),
            },
        }
    }

    /// Decides from a GGUF's metadata: `tokenizer.chat_template`, the BOS
    /// and EOS token texts, and `tokenizer.ggml.add_bos_token`.
    pub fn from_gguf(md: &Metadata) -> Self {
        let jinja = md
            .get("tokenizer.chat_template")
            .and_then(GgufValue::as_str);
        ChatTemplate::decide(jinja, &specials_from_gguf(md))
    }

    /// The Go template for the Modelfile.
    pub fn template(&self) -> &str {
        match self {
            ChatTemplate::Translated { template, .. } => template,
            _ => RAW_TEMPLATE,
        }
    }

    /// Stop strings the chat format needs (none for the raw template).
    pub fn stop(&self) -> &[String] {
        match self {
            ChatTemplate::Translated { stop, .. } => stop,
            _ => &[],
        }
    }

    /// One line for logs and the command line.
    pub fn summary(&self) -> String {
        match self {
            ChatTemplate::None => "no chat template (base model): TEMPLATE {{ .Prompt }}".into(),
            ChatTemplate::Translated { family, .. } => {
                format!("chat template: {family}, translated and proven")
            }
            ChatTemplate::Fallback { reason } => {
                format!("{reason}; using the raw TEMPLATE {{{{ .Prompt }}}} instead")
            }
        }
    }
}

/// A GGUF's Jinja `tokenizer.chat_template`, if it has a non-empty one
/// (a chat model).
pub fn jinja_chat_template(md: &Metadata) -> Option<String> {
    md.get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
        .filter(|j| !j.trim().is_empty())
        .map(str::to_owned)
}

/// The Jinja variables a GGUF implies: `bos_token`/`eos_token` are the
/// texts of the BOS/EOS ids, and BOS is left to the tokenizer when
/// `add_bos_token` is set (llama.cpp's default when the key is absent:
/// SentencePiece vocabularies add it, BPE ones do not).
pub fn specials_from_gguf(md: &Metadata) -> Specials {
    let text = |key: &str| token_text(md, key).map(str::to_owned);
    let add_bos_token = match md.get("tokenizer.ggml.add_bos_token") {
        Some(GgufValue::Bool(b)) => *b,
        _ => md.get("tokenizer.ggml.model").and_then(GgufValue::as_str) == Some("llama"),
    };
    Specials {
        bos: text("tokenizer.ggml.bos_token_id"),
        eos: text("tokenizer.ggml.eos_token_id"),
        add_bos_token,
    }
}

/// The end-of-text token texts (EOS, then EOT) of a GGUF's vocabulary:
/// Ollama `stop` parameters for any model, chat or not.
pub fn end_of_text_tokens(md: &Metadata) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        if let Some(t) = token_text(md, key).filter(|t| !out.iter().any(|o| o == t)) {
            out.push(t.to_owned());
        }
    }
    out
}

/// The text of the token whose id is stored under `id_key`.
fn token_text<'a>(md: &'a Metadata, id_key: &str) -> Option<&'a str> {
    let Some(GgufArray::String(tokens)) = md
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array)
    else {
        return None;
    };
    let id = md.get(id_key).and_then(GgufValue::as_u64)?;
    tokens.get(usize::try_from(id).ok()?).map(String::as_str)
}

fn family_label(f: TemplateFamily) -> &'static str {
    match f {
        TemplateFamily::ChatMl => "ChatML",
        TemplateFamily::Llama3 => "Llama-3",
        TemplateFamily::Llama2Inst => "Llama-2/Mistral [INST]",
        TemplateFamily::Gemma => "Gemma",
        TemplateFamily::Phi3 => "Phi-3",
        TemplateFamily::Zephyr => "Zephyr",
        TemplateFamily::Alpaca => "Alpaca",
        _ => "custom",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    fn md_with(template: Option<&str>) -> Metadata {
        let mut md = Metadata::new();
        md.set("tokenizer.ggml.model", "gpt2");
        md.set(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::String(vec![
                "<|endoftext|>".into(),
                "<|im_start|>".into(),
                "<|im_end|>".into(),
            ])),
        );
        md.set("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
        md.set("tokenizer.ggml.bos_token_id", GgufValue::U32(0));
        if let Some(t) = template {
            md.set("tokenizer.chat_template", t);
        }
        md
    }

    #[test]
    fn a_chatml_gguf_gets_a_proven_template_and_its_stop() {
        let c = ChatTemplate::from_gguf(&md_with(Some(CHATML)));
        assert!(
            matches!(&c, ChatTemplate::Translated { family, .. } if family == "ChatML"),
            "{c:?}"
        );
        assert!(c.template().contains("<|im_start|>"));
        assert!(c.stop().contains(&"<|im_end|>".to_string()), "{c:?}");
    }

    #[test]
    fn no_template_is_a_base_model() {
        let c = ChatTemplate::from_gguf(&md_with(None));
        assert_eq!(c, ChatTemplate::None);
        assert_eq!(c.template(), RAW_TEMPLATE);
        assert!(c.stop().is_empty());
    }

    #[test]
    fn an_untranslatable_template_falls_back_with_its_reason() {
        let tools = "{% if tools %}{{ tools }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}";
        let c = ChatTemplate::from_gguf(&md_with(Some(tools)));
        let ChatTemplate::Fallback { reason } = &c else {
            panic!("{c:?}")
        };
        assert!(reason.contains("tools"), "{reason}");
        assert_eq!(c.template(), RAW_TEMPLATE);
        assert!(c.summary().contains("{{ .Prompt }}"), "{}", c.summary());
    }

    #[test]
    fn specials_follow_the_ids_and_the_vocabulary_kind() {
        let mut md = md_with(None);
        let s = specials_from_gguf(&md);
        assert_eq!(s.bos.as_deref(), Some("<|endoftext|>"));
        assert_eq!(s.eos.as_deref(), Some("<|im_end|>"));
        assert!(!s.add_bos_token, "BPE vocabularies add no BOS by default");
        md.set("tokenizer.ggml.model", "llama");
        assert!(specials_from_gguf(&md).add_bos_token);
        md.set("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
        assert!(!specials_from_gguf(&md).add_bos_token);
    }
}
