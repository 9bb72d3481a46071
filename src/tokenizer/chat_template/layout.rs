//! Infers a chat template's message layout from its output on probe
//! conversations (sentinel contents), and emits the equivalent Go template.
//!
//! The layout model: `head` (a BOS or nothing), a `default_system` text
//! written when the first message is not a system message, then per message
//! `prefix[role] + content + suffix[role]`, except that the last user turn is
//! followed by `user_last` (its suffix plus the generation prompt) and a last
//! assistant turn by nothing (Ollama continues it). Where the probes leave
//! the split between one turn's suffix and the next turn's prefix open,
//! several candidates are returned; the proof picks the first that holds.
//!
//! It must not know model names. Invariant: every string in a [`Layout`] was
//! read from the Jinja template's own output.

use super::jinja::JinjaTemplate;
use super::{Conversation, Message, OllamaTemplate, Specials, TemplateError, TemplateFamily};

const U1: &str = "KvProbeU1x";
const A1: &str = "KvProbeA1x";
const U2: &str = "KvProbeU2x";
const A2: &str = "KvProbeA2x";
const S1: &str = "KvProbeS1x";

/// How a system message is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemWrap {
    /// Its own turn: prefix, content, suffix.
    Turn {
        /// Text before the content.
        prefix: String,
        /// Text after the content.
        suffix: String,
    },
    /// The Jinja template refuses system messages; the Go template folds
    /// the system text into the first user turn as `system + "\n\n" + user`
    /// (the convention of Gemma's and Mistral's own templates). This part is
    /// not provable, because the Jinja side has no output to compare.
    FoldIntoFirstUser,
}

/// The text around messages, read from the Jinja template's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Written once at the start (BOS, or empty).
    pub head: String,
    /// Written when the first message is not a system message.
    pub default_system: String,
    /// Before a user turn.
    pub user_prefix: String,
    /// After a user turn that is followed by another message.
    pub user_suffix: String,
    /// After the last user turn: its suffix plus the generation prompt.
    pub user_last: String,
    /// Before an assistant turn.
    pub assistant_prefix: String,
    /// After an assistant turn that is followed by another message.
    pub assistant_suffix: String,
    /// System messages.
    pub system: SystemWrap,
}

/// Refuses Jinja templates whose behaviour depends on inputs the probes
/// and the Go template do not carry (tool definitions and tool calls).
pub fn refuse_unmappable(jinja: &str) -> Result<(), TemplateError> {
    for word in ["tools", "tool_calls", "documents"] {
        let found = jinja.match_indices(word).any(|(i, _)| {
            let before = jinja[..i].chars().next_back();
            let after = jinja[i + word.len()..].chars().next();
            let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !ident(before) && !ident(after)
        });
        if found {
            return Err(TemplateError::Unsupported {
                reason: format!("the template reads `{word}` (tool calling / retrieval), which the Go template would drop"),
            });
        }
    }
    Ok(())
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

fn render(
    j: &JinjaTemplate,
    msgs: &[Message],
    agp: bool,
    sp: &Specials,
) -> Result<String, TemplateError> {
    let conv = Conversation {
        name: "probe".into(),
        messages: msgs.to_vec(),
        add_generation_prompt: agp,
    };
    j.render(&conv, agp, sp)
}

/// Splits `text` at each sentinel (each must occur exactly once, in order).
fn segments(text: &str, sentinels: &[&str]) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = text;
    for s in sentinels {
        if text.matches(s).count() != 1 {
            return Err(TemplateError::Unsupported {
                reason: "message contents are not written verbatim exactly once (the template transforms or repeats them)".into(),
            });
        }
        let Some(i) = rest.find(s) else {
            return Err(TemplateError::Unsupported {
                reason: "messages are written out of order".into(),
            });
        };
        out.push(rest[..i].to_string());
        rest = &rest[i + s.len()..];
    }
    out.push(rest.to_string());
    Ok(out)
}

fn is_boundary(s: &str, p: usize) -> bool {
    if p == 0 || p == s.len() {
        return true;
    }
    let prev = s[..p].chars().next_back();
    let next = s[p..].chars().next();
    matches!(prev, Some('>' | '\n' | ']' | ' ')) || matches!(next, Some('<' | '['))
}

/// The longest common prefix of `a` and `b`, cut back to a token-ish boundary.
fn common_prefix(a: &str, b: &str) -> String {
    let mut n = 0;
    for ((i, ca), cb) in a.char_indices().zip(b.chars()) {
        if ca != cb {
            break;
        }
        n = i + ca.len_utf8();
    }
    while n > 0 && !(n == a.len() || n == b.len() || is_boundary(a, n)) {
        n -= a[..n].chars().next_back().map_or(1, char::len_utf8);
    }
    a[..n].to_string()
}

/// The longest common suffix of all `items`, optionally cut to a boundary.
fn common_suffix(items: &[&str], snap: bool) -> String {
    let Some(first) = items.first() else {
        return String::new();
    };
    let mut n = first.len();
    for it in &items[1..] {
        let common = first
            .chars()
            .rev()
            .zip(it.chars().rev())
            .take_while(|(a, b)| a == b);
        n = n.min(common.map(|(a, _)| a.len_utf8()).sum());
    }
    let mut start = first.len() - n;
    if snap {
        while start < first.len()
            && !items
                .iter()
                .all(|it| is_boundary(it, it.len() - (first.len() - start)))
        {
            start += first[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    first[start..].to_string()
}

/// Renders the probes and returns the candidate layouts, most readable first.
pub fn infer(j: &JinjaTemplate, sp: &Specials) -> Result<Vec<Layout>, TemplateError> {
    let multi = [
        msg("user", U1),
        msg("assistant", A1),
        msg("user", U2),
        msg("assistant", A2),
    ];
    let g = segments(&render(j, &multi, false, sp)?, &[U1, A1, U2, A2])?;
    let (head_u, u_to_a, a_to_u, after_a) = (&g[0], &g[1], &g[2], &g[4]);
    if g[1] != g[3] {
        return Err(TemplateError::Unsupported {
            reason: "the text between a user and an assistant turn depends on the turn's position"
                .into(),
        });
    }
    let single_open = segments(&render(j, &[msg("user", U1)], false, sp)?, &[U1])?;
    let single_gen = segments(&render(j, &[msg("user", U1)], true, sp)?, &[U1])?;
    if &single_open[0] != head_u || &single_gen[0] != head_u {
        return Err(TemplateError::Unsupported {
            reason: "the text before the first user turn depends on the rest of the conversation"
                .into(),
        });
    }
    let user_last = single_gen[1].clone();
    let user_suffix = common_prefix(u_to_a, &single_open[1]);
    let assistant_prefix = u_to_a[user_suffix.len()..].to_string();

    // System messages: their own turn, or refused by the template.
    let sys = render(
        j,
        &[msg("system", S1), msg("user", U1), msg("assistant", A1)],
        false,
        sp,
    );
    let sys_parts = match sys {
        Ok(text) => {
            let s = segments(&text, &[S1, U1, A1])?;
            if &s[2] != u_to_a {
                return Err(TemplateError::Unsupported {
                    reason: "a system message changes how later turns are written".into(),
                });
            }
            Some((s[0].clone(), s[1].clone()))
        }
        Err(TemplateError::Jinja { .. }) => None,
        Err(e) => return Err(e),
    };

    let mut user_prefixes = vec![a_to_u[common_prefix(after_a, a_to_u).len()..].to_string()];
    let mut ends: Vec<&str> = vec![a_to_u, head_u];
    if let Some((_, s_to_u)) = &sys_parts {
        ends.push(s_to_u);
    }
    user_prefixes.push(common_suffix(&ends, true));
    user_prefixes.push(common_suffix(&ends, false));
    user_prefixes.dedup();

    let bos = sp.bos.clone().unwrap_or_default();
    let mut layouts = Vec::new();
    for user_prefix in user_prefixes {
        if !ends.iter().all(|e| e.ends_with(&user_prefix)) {
            continue;
        }
        let before_first = &head_u[..head_u.len() - user_prefix.len()];
        let head_is_bos = !bos.is_empty()
            && before_first.starts_with(&bos)
            && sys_parts
                .as_ref()
                .is_none_or(|(head_s, _)| head_s.starts_with(&bos));
        let head = if head_is_bos {
            bos.clone()
        } else {
            String::new()
        };
        let system = match &sys_parts {
            Some((head_s, s_to_u)) => SystemWrap::Turn {
                prefix: head_s[head.len()..].to_string(),
                suffix: s_to_u[..s_to_u.len() - user_prefix.len()].to_string(),
            },
            None => SystemWrap::FoldIntoFirstUser,
        };
        layouts.push(Layout {
            default_system: before_first[head.len()..].to_string(),
            head,
            assistant_suffix: a_to_u[..a_to_u.len() - user_prefix.len()].to_string(),
            user_prefix,
            user_suffix: user_suffix.clone(),
            user_last: user_last.clone(),
            assistant_prefix: assistant_prefix.clone(),
            system,
        });
    }
    if layouts.is_empty() {
        return Err(TemplateError::Unsupported {
            reason: "no user-turn prefix is shared by every position a user turn appears in".into(),
        });
    }
    Ok(layouts)
}

/// Literal text for a Go template: as is, unless it contains `{{`.
fn go_text(s: &str) -> String {
    if !s.contains("{{") {
        return s.to_string();
    }
    let mut q = String::from("{{ \"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push_str("\" }}");
    q
}

impl Layout {
    /// The family label, from the markers in the wrappers.
    pub fn family(&self, sp: &Specials) -> TemplateFamily {
        let all = format!(
            "{}{}{}{}",
            self.user_prefix, self.user_last, self.assistant_suffix, self.default_system
        );
        if all.contains("<|im_start|>") {
            TemplateFamily::ChatMl
        } else if all.contains("<|start_header_id|>") {
            TemplateFamily::Llama3
        } else if all.contains("[INST]") {
            TemplateFamily::Llama2Inst
        } else if all.contains("<start_of_turn>") {
            TemplateFamily::Gemma
        } else if all.contains("<|user|>") && all.contains("<|end|>") {
            TemplateFamily::Phi3
        } else if all.contains("<|user|>") && sp.eos.as_deref().is_some_and(|e| all.contains(e)) {
            TemplateFamily::Zephyr
        } else if all.contains("### Instruction") {
            TemplateFamily::Alpaca
        } else {
            TemplateFamily::Custom
        }
    }

    /// The Go template and stop strings for this layout. With
    /// `add_bos_token` a BOS head is left to the tokenizer.
    pub fn emit(&self, sp: &Specials) -> Result<OllamaTemplate, TemplateError> {
        let bos = sp.bos.clone().unwrap_or_default();
        let head = if sp.add_bos_token && self.head == bos {
            ""
        } else {
            self.head.as_str()
        };
        if sp.add_bos_token
            && !bos.is_empty()
            && head.is_empty()
            && self.head.is_empty()
            && (self.default_system.starts_with(&bos) || self.user_prefix.starts_with(&bos))
        {
            return Err(TemplateError::Unsupported {
                reason: "the template writes BOS inside the first turn, where the tokenizer's own BOS cannot replace it".into(),
            });
        }
        let (up, us, ul) = (
            go_text(&self.user_prefix),
            go_text(&self.user_suffix),
            go_text(&self.user_last),
        );
        let (ap, asuf) = (
            go_text(&self.assistant_prefix),
            go_text(&self.assistant_suffix),
        );
        let ds = go_text(&self.default_system);
        let head = go_text(head);
        let mut t = String::new();
        t.push_str("{{ if .Messages }}");
        t.push_str(&head);
        t.push_str(
            "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}",
        );
        let fold = matches!(self.system, SystemWrap::FoldIntoFirstUser);
        if !ds.is_empty() {
            if fold {
                t.push_str(&format!("{{{{ if eq $i 0 }}}}{ds}{{{{ end }}}}"));
            } else {
                t.push_str(&format!(
                    "{{{{ if and (eq $i 0) (ne .Role \"system\") }}}}{ds}{{{{ end }}}}"
                ));
            }
        }
        t.push_str(&format!("{{{{ if eq .Role \"user\" }}}}{up}"));
        if fold {
            t.push_str("{{ if and $.System (le $i 1) }}{{ $.System }}\n\n{{ end }}");
        }
        if ul == us {
            t.push_str(&format!("{{{{ .Content }}}}{ul}"));
        } else {
            t.push_str(&format!(
                "{{{{ .Content }}}}{{{{ if $last }}}}{ul}{{{{ else }}}}{us}{{{{ end }}}}"
            ));
        }
        t.push_str(&format!(
            "{{{{ else if eq .Role \"assistant\" }}}}{ap}{{{{ .Content }}}}{{{{ if not $last }}}}{asuf}{{{{ end }}}}"
        ));
        if let SystemWrap::Turn { prefix, suffix } = &self.system {
            t.push_str(&format!(
                "{{{{ else if eq .Role \"system\" }}}}{}{{{{ .Content }}}}{}",
                go_text(prefix),
                go_text(suffix)
            ));
        }
        t.push_str("{{ end }}{{ end }}{{ else }}");
        // Without .Messages (the emulator, old Ollama): one system + prompt turn.
        t.push_str(&head);
        match &self.system {
            SystemWrap::Turn { prefix, suffix } => t.push_str(&format!(
                "{{{{ if .System }}}}{}{{{{ .System }}}}{}{}{{{{ end }}}}{up}",
                go_text(prefix),
                go_text(suffix),
                if ds.is_empty() {
                    String::new()
                } else {
                    format!("{{{{ else }}}}{ds}")
                }
            )),
            SystemWrap::FoldIntoFirstUser => t.push_str(&format!(
                "{ds}{up}{{{{ if .System }}}}{{{{ .System }}}}\n\n{{{{ end }}}}"
            )),
        }
        t.push_str(&format!(
            "{{{{ .Prompt }}}}{ul}{{{{ .Response }}}}{{{{ end }}}}"
        ));

        let mut stop = Vec::new();
        let mut add = |s: &str| {
            let s = s.trim();
            if !s.is_empty() && !stop.iter().any(|x: &String| x == s) {
                stop.push(s.to_string());
            }
        };
        if let Some(eos) = &sp.eos {
            add(eos);
        }
        add(&self.assistant_suffix);
        add(&self.user_prefix);
        Ok(OllamaTemplate {
            family: self.family(sp),
            template: t,
            stop,
        })
    }
}
