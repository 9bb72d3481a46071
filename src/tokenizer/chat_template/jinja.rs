//! Renders a Hugging Face Jinja chat template with minijinja the way
//! `transformers`' `apply_chat_template` does: `messages`, `bos_token`,
//! `eos_token`, `add_generation_prompt`, `raise_exception`, and the Python
//! string methods chat templates commonly call (`strip`, `lstrip`, `rstrip`,
//! `title`, `upper`, `lower`, `startswith`, `endswith`).
//!
//! It must not know about Go templates. Invariant: a hostile template
//! cannot exhaust the process: the source is size-capped, minijinja's
//! parser caps nesting (150 levels) and `range()` lengths, and kvant sets
//! its recursion limit, an instruction budget (fuel) and a cap on the
//! rendered text.

use super::{Conversation, Specials, TemplateError};
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};

/// Longest Jinja template accepted.
const MAX_JINJA_BYTES: usize = 256 * 1024;

/// Longest line accepted. minijinja counts columns in a saturating u16 and
/// its error span then adds one, which overflows (a panic in a debug
/// build) on a line of 65 535 characters; found by `kvant-fuzz
/// chat-template`. Real templates' lines are a few hundred bytes.
const MAX_LINE_BYTES: usize = 60_000;

/// Instructions one render may execute. A real chat template spends a few
/// hundred per message; nested `range()` loops would spend billions.
const FUEL: u64 = 1_000_000;

/// Deepest macro/include recursion (minijinja's own cap is 500).
const RECURSION_LIMIT: usize = 64;

/// Longest rendered prompt (the proof's conversations render to a few
/// hundred bytes).
const MAX_RENDER_BYTES: usize = 4 << 20;

/// A writer that refuses to grow past [`MAX_RENDER_BYTES`] (and remembers
/// that it did: minijinja reports only "failed to write output").
#[derive(Default)]
struct Capped {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDER_BYTES {
            self.overflowed = true;
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn py_method(value: &Value, method: &str, args: &[Value]) -> Result<Value, minijinja::Error> {
    let Some(s) = value.as_str() else {
        return Err(minijinja::Error::new(
            ErrorKind::UnknownMethod,
            format!("no method {method}"),
        ));
    };
    let arg = |i: usize| args.get(i).and_then(|v| v.as_str().map(str::to_string));
    let strip_set = arg(0);
    let is_strip = |c: char| match &strip_set {
        Some(set) => set.contains(c),
        None => c.is_whitespace(),
    };
    Ok(match method {
        "strip" => Value::from(s.trim_matches(is_strip)),
        "lstrip" => Value::from(s.trim_start_matches(is_strip)),
        "rstrip" => Value::from(s.trim_end_matches(is_strip)),
        "upper" => Value::from(s.to_uppercase()),
        "lower" => Value::from(s.to_lowercase()),
        "startswith" => Value::from(arg(0).is_some_and(|p| s.starts_with(&p))),
        "endswith" => Value::from(arg(0).is_some_and(|p| s.ends_with(&p))),
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::UnknownMethod,
                format!("string has no method {method}"),
            ))
        }
    })
}

/// A compiled Jinja chat template.
pub struct JinjaTemplate {
    env: Environment<'static>,
}

impl JinjaTemplate {
    /// Compiles the template; a syntax error is [`TemplateError::Jinja`].
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_JINJA_BYTES {
            return Err(TemplateError::TooLarge {
                bytes: source.len(),
            });
        }
        if let Some(line) = source.lines().position(|l| l.len() > MAX_LINE_BYTES) {
            return Err(TemplateError::Jinja {
                reason: format!("line {} is longer than {MAX_LINE_BYTES} bytes", line + 1),
            });
        }
        let mut env = Environment::new();
        // transformers compiles chat templates with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(|_state, value, method, args| {
            py_method(value, method, args)
        });
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Jinja {
                reason: e.to_string(),
            })?;
        Ok(JinjaTemplate { env })
    }

    /// Renders `conv` as `apply_chat_template(..., tokenize=False)` would.
    pub fn render(
        &self,
        conv: &Conversation,
        add_generation_prompt: bool,
        specials: &Specials,
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Jinja {
                reason: e.to_string(),
            })?;
        let messages: Vec<Value> = conv
            .messages
            .iter()
            .map(|m| {
                Value::from_iter([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            bos_token => specials.bos.clone().unwrap_or_default(),
            eos_token => specials.eos.clone().unwrap_or_default(),
            add_generation_prompt => add_generation_prompt,
        };
        let mut out = Capped::default();
        let rendered = tmpl.render_captured_to(ctx, &mut out);
        if out.overflowed {
            return Err(TemplateError::Jinja {
                reason: format!("the rendered text exceeds {MAX_RENDER_BYTES} bytes"),
            });
        }
        rendered.map_err(|e| TemplateError::Jinja {
            reason: e.to_string(),
        })?;
        String::from_utf8(out.text).map_err(|_| TemplateError::Jinja {
            reason: "the rendered text is not UTF-8".into(),
        })
    }
}
