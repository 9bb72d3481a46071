//! The proof that a Go template writes exactly what the Jinja template
//! writes: both are rendered on the standard conversations and compared as
//! text, once as Ollama's `/api/chat` fills the template (`.Messages`,
//! `.System`) and, for single-turn conversations, also as `/api/generate`
//! fills it without `.Messages` (`.Prompt`, `.System`, `.Response`, which is
//! what old Ollama versions and the test emulator use).
//!
//! It must not know how the Go template was made. Invariant: a conversation
//! the Jinja template refuses (e.g. a system message for a template that
//! raises on one) is reported as refused, never counted as proven; the
//! conversations without a system message must all be proven.

use super::gotemplate::{GoTemplate, GoValue};
use super::jinja::JinjaTemplate;
use super::{Conversation, Message, OllamaTemplate, Specials, TemplateError};
use std::collections::BTreeMap;

/// What a successful proof covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProofReport {
    /// Checks whose texts were identical, as `conversation (endpoint)`.
    pub proven: Vec<String>,
    /// Conversations the Jinja template itself refuses, with its reason;
    /// the Go template's output for these is a convention, not a proof.
    pub refused_by_jinja: Vec<(String, String)>,
}

fn m(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

/// The standard conversations: system+user, user only, multi-turn
/// (user/assistant/user), each with the generation prompt; and assistant
/// prefills (ending in an assistant turn) without it.
pub fn proof_conversations() -> Vec<Conversation> {
    let sys = m("system", "Sən qısa və dəqiq cavab verən köməkçisən.");
    let u1 = m("user", "Salam! Bakı haqqında bir cümlə yaz.");
    let a1 = m(
        "assistant",
        "Bakı Xəzər dənizinin sahilində yerləşən paytaxtdır.",
    );
    let u2 = m("user", "İndi isə Gəncə haqqında \"qısa\" yaz: 2 söz.");
    let conv = |name: &str, messages: Vec<Message>, agp: bool| Conversation {
        name: name.into(),
        messages,
        add_generation_prompt: agp,
    };
    vec![
        conv("user", vec![u1.clone()], true),
        conv("system+user", vec![sys.clone(), u1.clone()], true),
        conv("multi-turn", vec![u1.clone(), a1.clone(), u2.clone()], true),
        conv(
            "system+multi-turn",
            vec![sys.clone(), u1.clone(), a1.clone(), u2.clone()],
            true,
        ),
        conv("assistant-prefill", vec![u1.clone(), a1.clone()], false),
        conv("system+assistant-prefill", vec![sys, u1, a1], false),
    ]
}

fn s(v: &str) -> GoValue {
    GoValue::Str(v.to_string())
}

/// The data Ollama's `/api/chat` passes: `template.Execute` collates
/// consecutive same-role messages and joins the system messages into `.System`.
pub fn chat_data(messages: &[Message]) -> GoValue {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let mut collated: Vec<(String, String)> = Vec::new();
    for msg in messages {
        match collated.last_mut() {
            Some((role, content)) if *role == msg.role && msg.role != "tool" => {
                content.push_str("\n\n");
                content.push_str(&msg.content);
            }
            _ => collated.push((msg.role.clone(), msg.content.clone())),
        }
    }
    let list = collated
        .into_iter()
        .map(|(r, c)| {
            GoValue::Map(BTreeMap::from([
                ("Role".into(), s(&r)),
                ("Content".into(), s(&c)),
            ]))
        })
        .collect();
    GoValue::Map(BTreeMap::from([
        ("System".into(), s(&system.join("\n\n"))),
        ("Messages".into(), GoValue::List(list)),
        ("Response".into(), s("")),
    ]))
}

/// The data of `/api/generate` without `.Messages` (prompt and system).
pub fn generate_data(prompt: &str, system: &str) -> GoValue {
    GoValue::Map(BTreeMap::from([
        ("Prompt".into(), s(prompt)),
        ("System".into(), s(system)),
        ("Suffix".into(), s("")),
        ("Response".into(), s("")),
    ]))
}

fn diff(expected: &str, actual: &str) -> String {
    let at = expected
        .char_indices()
        .zip(actual.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(expected.len().min(actual.len()));
    let snippet = |t: &str| {
        let mut lo = at.saturating_sub(40);
        while !t.is_char_boundary(lo) {
            lo -= 1;
        }
        let mut hi = (at + 40).min(t.len());
        while !t.is_char_boundary(hi) {
            hi += 1;
        }
        t.get(lo..hi).unwrap_or("").to_string()
    };
    format!(
        "at byte {at}: jinja …{:?}… vs go …{:?}…",
        snippet(expected),
        snippet(actual)
    )
}

/// The text the Jinja template produces for `conv`, as Ollama will see it
/// tokenized: minus a leading BOS the tokenizer adds itself, and cut after
/// the last message for a continued assistant turn.
fn expected(
    j: &JinjaTemplate,
    conv: &Conversation,
    sp: &Specials,
) -> Result<String, TemplateError> {
    let mut text = j.render(conv, conv.add_generation_prompt, sp)?;
    if !conv.add_generation_prompt {
        if let Some(last) = conv.messages.last() {
            match text.rfind(&last.content) {
                Some(i) => text.truncate(i + last.content.len()),
                None => {
                    return Err(TemplateError::Unsupported {
                        reason: format!(
                            "{}: the last message's content is not in the output",
                            conv.name
                        ),
                    })
                }
            }
        }
    }
    if sp.add_bos_token {
        if let Some(bos) = sp.bos.as_deref().filter(|b| !b.is_empty()) {
            if let Some(rest) = text.strip_prefix(bos) {
                text = rest.to_string();
            }
        }
    }
    Ok(text)
}

/// [`prove`] with the details of what was compared.
pub fn prove_report(
    jinja: &str,
    specials: &Specials,
    t: &OllamaTemplate,
) -> Result<ProofReport, TemplateError> {
    let j = JinjaTemplate::new(jinja)?;
    let go = GoTemplate::parse(&t.template)?;
    let mut report = ProofReport::default();
    for conv in proof_conversations() {
        let has_system = conv.messages.iter().any(|m| m.role == "system");
        let chat_out = go.execute(&chat_data(&conv.messages))?;
        let want = match expected(&j, &conv, specials) {
            Ok(w) => w,
            Err(TemplateError::Jinja { reason }) if has_system => {
                report.refused_by_jinja.push((conv.name.clone(), reason));
                continue;
            }
            Err(e) => return Err(e),
        };
        let check = |endpoint: &str, got: &str, report: &mut ProofReport| {
            if got != want {
                return Err(TemplateError::Mismatch {
                    conversation: format!("{} ({endpoint})", conv.name),
                    diff: diff(&want, got),
                });
            }
            report.proven.push(format!("{} ({endpoint})", conv.name));
            Ok(())
        };
        check("/api/chat", &chat_out, &mut report)?;
        let single_turn = conv.add_generation_prompt
            && conv.messages.iter().filter(|m| m.role != "system").count() == 1;
        if single_turn {
            let prompt = conv
                .messages
                .iter()
                .find(|m| m.role == "user")
                .map_or("", |m| m.content.as_str());
            let system = conv
                .messages
                .iter()
                .find(|m| m.role == "system")
                .map_or("", |m| m.content.as_str());
            let legacy = go.execute(&generate_data(prompt, system))?;
            check("/api/generate without .Messages", &legacy, &mut report)?;
        }
    }
    Ok(report)
}

/// Renders `jinja` and `t.template` on every [`proof_conversations`] entry
/// and requires identical text; `Err(Mismatch)` shows where they differ.
pub fn prove(jinja: &str, specials: &Specials, t: &OllamaTemplate) -> Result<(), TemplateError> {
    prove_report(jinja, specials, t).map(|_| ())
}
