//! Chat templates: a Hugging Face Jinja `chat_template` becomes an Ollama Go
//! `TEMPLATE` plus `stop` parameters, and the translation is *proven* by
//! rendering both templates on the standard conversations and requiring
//! identical text.
//!
//! How: [`layout`] renders the Jinja template on probe conversations whose
//! contents are sentinels and reads off the text around each message (the
//! per-role wrappers, the generation prompt, a default system prompt, a
//! leading BOS); it emits a Go template from that layout; [`proof`] renders
//! the Jinja template (minijinja, [`jinja`]) and the Go text (our
//! `text/template` subset renderer, [`gotemplate`]) on
//! [`proof_conversations`] and compares. Recognition is by structure, never
//! by model name; the [`TemplateFamily`] is only a label derived from the
//! recognised markers.
//!
//! This module must not know about tensors, GGUF or HTTP. Invariant:
//! [`translate`] never returns a template that failed its proof.

pub mod gotemplate;
pub mod jinja;
pub mod layout;
pub mod proof;

pub use proof::{proof_conversations, prove, prove_report, ProofReport};

/// The chat family a translated template belongs to: a label for logs and
/// Modelfile comments, derived from the markers the layout found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateFamily {
    /// `<|im_start|>role … <|im_end|>` (Qwen, many fine-tunes).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|> … <|eot_id|>`.
    Llama3,
    /// `[INST] … [/INST]` (Llama-2 chat and Mistral instruct).
    Llama2Inst,
    /// `<start_of_turn>user … <end_of_turn>`.
    Gemma,
    /// `<|user|> … <|end|>`.
    Phi3,
    /// `<|user|> … </s>` (Zephyr).
    Zephyr,
    /// `### Instruction: … ### Response:`.
    Alpaca,
    /// Some other per-role wrapping (e.g. the `<|endoftext|>role` template
    /// of the hf-llama-az fixture); still proven like the others.
    Custom,
}

/// What kvant writes into the Modelfile for a chat model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaTemplate {
    /// The recognised family (a label only).
    pub family: TemplateFamily,
    /// The Go template for the Modelfile `TEMPLATE` (works for `/api/chat`,
    /// `/api/generate`, and Ollama versions without `.Messages`).
    pub template: String,
    /// `PARAMETER stop` values: the end-of-turn text and the next user
    /// turn's opener, so generation ends at the turn boundary.
    pub stop: Vec<String>,
}

/// The tokenizer facts the Jinja template is rendered with.
///
/// BOS policy: llama.cpp (and so Ollama) prepends BOS at tokenization when
/// the GGUF's `tokenizer.ggml.add_bos_token` is true, whereas Hugging Face's
/// `apply_chat_template` tokenizes the rendered text without adding
/// specials. So when `add_bos_token` is true the generated Go template does
/// *not* write a leading `bos_token`, and the proof compares the Jinja output
/// minus that leading BOS; when it is false the BOS text stays in the Go
/// template (llama.cpp parses it as the special token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Specials {
    /// Jinja's `bos_token`.
    pub bos: Option<String>,
    /// Jinja's `eos_token`.
    pub eos: Option<String>,
    /// Whether the GGUF tokenizer adds BOS itself (`tokenizer.ggml.add_bos_token`).
    pub add_bos_token: bool,
}

impl Specials {
    /// Reads `bos_token`/`eos_token` (a string or `{"content": …}`) from
    /// `tokenizer_config.json`, and whether BOS is added: the config's
    /// `add_bos_token`, else whether `tokenizer.json`'s post-processor
    /// starts the single-sequence template with the BOS special token.
    pub fn from_hf(
        tokenizer_config: &serde_json::Value,
        tokenizer_json: Option<&serde_json::Value>,
    ) -> Self {
        let token = |key: &str| match tokenizer_config.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            None => None,
        };
        let bos = token("bos_token");
        let eos = token("eos_token");
        let add_bos_token = match tokenizer_config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
        {
            Some(b) => b,
            None => tokenizer_json
                .and_then(|t| t.get("post_processor"))
                .and_then(|p| p.get("single"))
                .and_then(|s| s.get(0))
                .and_then(|first| first.get("SpecialToken"))
                .and_then(|st| st.get("id"))
                .and_then(|id| id.as_str())
                .is_some_and(|id| Some(id) == bos.as_deref()),
        };
        Specials {
            bos,
            eos,
            add_bos_token,
        }
    }
}

/// One chat message, as both template languages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A conversation the proof renders, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// A short name used in mismatch reports.
    pub name: String,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Jinja's `add_generation_prompt`. Ollama has no such switch: a
    /// conversation ending in a user turn is answered (generation prompt
    /// on), one ending in an assistant turn is continued (HF's
    /// `continue_final_message`: generation prompt off and the text cut
    /// right after the last message's content).
    pub add_generation_prompt: bool,
}

/// Why a chat template could not be translated or proven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The Jinja template did not compile or failed to render.
    #[error("chat template: jinja error: {reason}")]
    Jinja {
        /// minijinja's message.
        reason: String,
    },
    /// The template text is larger than kvant accepts.
    #[error("chat template: {bytes} bytes is larger than accepted")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The template does something the Go template cannot reproduce.
    #[error("chat template: cannot translate: {reason}")]
    Unsupported {
        /// What it does.
        reason: String,
    },
    /// The generated Go template did not parse or execute.
    #[error("chat template: go template error: {reason}")]
    Go {
        /// The renderer's message.
        reason: String,
    },
    /// Jinja and Go rendered different text for a conversation.
    #[error("chat template: proof failed on {conversation:?}: {diff}")]
    Mismatch {
        /// The conversation's name (and endpoint).
        conversation: String,
        /// Where the texts first differ, both sides quoted.
        diff: String,
    },
}

impl From<gotemplate::GoTemplateError> for TemplateError {
    fn from(e: gotemplate::GoTemplateError) -> Self {
        TemplateError::Go { reason: e.0 }
    }
}

/// Recognises the Jinja template's structure, emits the Ollama template and
/// proves it on [`proof_conversations`]. `Err` when it cannot be proven: the
/// caller then keeps Ollama's raw `{{ .Prompt }}` template and logs the
/// error's message.
pub fn translate(jinja: &str, specials: &Specials) -> Result<OllamaTemplate, TemplateError> {
    let compiled = jinja::JinjaTemplate::new(jinja)?;
    layout::refuse_unmappable(jinja)?;
    let candidates = layout::infer(&compiled, specials)?;
    let mut last_err = TemplateError::Unsupported {
        reason: "no consistent message layout found".into(),
    };
    for candidate in candidates {
        let t = candidate.emit(specials)?;
        match prove(jinja, specials, &t) {
            Ok(()) => return Ok(t),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}
