//! Ollama Modelfile text: rendering (for the legacy < 0.5.5 create API and for humans) and a
//! parser following Ollama's parser/parser.go rules, so a rendered file provably parses back
//! to the same commands. Pure text; no I/O; knows nothing about HTTP.
//!
//! Representability (why `render` can refuse): a value is written bare when it is a single
//! line without surrounding whitespace and does not start with `"`; otherwise inside
//! `"""…"""`. Ollama has no escapes, so a value containing `"""`, or starting/ending with `"`
//! while needing quotes, or empty, cannot be written and is refused with [`ModelfileError`].

/// Longest Modelfile text [`parse`] accepts (hostile-input cap).
pub const MAX_MODELFILE_LEN: usize = 16 << 20;

/// Errors of rendering or parsing a Modelfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelfileError {
    /// A value Ollama's parser could not read back unchanged.
    #[error("Modelfile {field}: value cannot be represented: {reason}")]
    Unrepresentable {
        /// Which instruction.
        field: String,
        /// Why.
        reason: String,
    },
    /// Parse failure, with Ollama's wording where it has one.
    #[error("Modelfile line {line}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// Message.
        message: String,
    },
}

/// One parsed instruction, with arguments already unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `FROM <model|path|@sha256:..>`.
    From(String),
    /// `TEMPLATE`.
    Template(String),
    /// `SYSTEM`.
    System(String),
    /// `LICENSE`.
    License(String),
    /// `ADAPTER`.
    Adapter(String),
    /// `PARAMETER <name> <value>`.
    Parameter(String, String),
    /// `MESSAGE <role> <content>`.
    Message(String, String),
    /// `RENDERER`, `PARSER`, `REQUIRES`, `DRAFT` (lower-case name, value).
    Other(String, String),
}

/// What kvant writes for a model: a GGUF plus optional template, system, params, license.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modelfile {
    /// `FROM` target, e.g. `./model.gguf` or `@sha256:<hex>`.
    pub from: String,
    /// Go template; `{{ .Prompt }}` for base (non-chat) models.
    pub template: Option<String>,
    /// System prompt.
    pub system: Option<String>,
    /// `PARAMETER` lines in order (e.g. `num_ctx`, `stop`).
    pub parameters: Vec<(String, String)>,
    /// License text.
    pub license: Option<String>,
}

fn is_param_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Quote `value` the way Ollama's parser reads back unchanged, or refuse.
pub fn quote(field: &str, value: &str) -> Result<String, ModelfileError> {
    let bad = |reason: &str| ModelfileError::Unrepresentable {
        field: field.to_string(),
        reason: reason.to_string(),
    };
    if value.is_empty() {
        return Err(bad("empty value"));
    }
    let plain = !value.contains(['\n', '\r'])
        && value.trim() == value
        && !value.starts_with('"')
        && !value.starts_with('#');
    if plain {
        return Ok(value.to_string());
    }
    if value.contains("\"\"\"") {
        return Err(bad("contains \"\"\" (Ollama has no escapes)"));
    }
    if value.starts_with('"') || value.ends_with('"') {
        return Err(bad("starts or ends with \" and needs quoting"));
    }
    Ok(format!("\"\"\"{value}\"\"\""))
}

impl Modelfile {
    /// Base-model Modelfile: `{{ .Prompt }}` template, given context and stop token.
    pub fn base(from: &str, num_ctx: u32, stop: &str) -> Self {
        Modelfile {
            from: from.to_string(),
            template: Some("{{ .Prompt }}".to_string()),
            system: None,
            parameters: vec![
                ("num_ctx".into(), num_ctx.to_string()),
                ("stop".into(), format!("\"{stop}\"")),
            ],
            license: None,
        }
    }

    /// The commands this Modelfile stands for, in render order.
    pub fn commands(&self) -> Vec<Command> {
        let mut out = vec![Command::From(self.from.clone())];
        if let Some(t) = &self.template {
            out.push(Command::Template(t.clone()));
        }
        if let Some(s) = &self.system {
            out.push(Command::System(s.clone()));
        }
        for (k, v) in &self.parameters {
            out.push(Command::Parameter(k.clone(), unquote_simple(v)));
        }
        if let Some(l) = &self.license {
            out.push(Command::License(l.clone()));
        }
        out
    }

    /// Render to Modelfile text; refuses values Ollama's parser cannot read back.
    /// Parameter values are written as given (e.g. `"<|endoftext|>"` already quoted).
    pub fn render(&self) -> Result<String, ModelfileError> {
        let mut out = format!("FROM {}\n", quote("FROM", &self.from)?);
        if let Some(t) = &self.template {
            out += &format!("TEMPLATE {}\n", quote("TEMPLATE", t)?);
        }
        if let Some(s) = &self.system {
            out += &format!("SYSTEM {}\n", quote("SYSTEM", s)?);
        }
        for (k, v) in &self.parameters {
            if !is_param_name(k) {
                return Err(ModelfileError::Unrepresentable {
                    field: "PARAMETER".into(),
                    reason: format!("bad name {k:?}"),
                });
            }
            let v = if v.starts_with('"')
                && v.ends_with('"')
                && v.len() > 2
                && !v[1..v.len() - 1].contains('"')
                && !v.contains('\n')
            {
                v.clone()
            } else {
                quote("PARAMETER", v)?
            };
            out += &format!("PARAMETER {k} {v}\n");
        }
        if let Some(l) = &self.license {
            out += &format!("LICENSE {}\n", quote("LICENSE", l)?);
        }
        Ok(out)
    }
}

/// `"x"` → `x` for already-quoted single-line parameter values.
fn unquote_simple(v: &str) -> String {
    if v.len() >= 2
        && v.starts_with('"')
        && v.ends_with('"')
        && !v[1..v.len() - 1].contains('"')
        && !v.contains('\n')
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// Parse Modelfile text into commands following Ollama's rules: case-insensitive
/// instructions, `#` comment lines, values to end of line (trimmed), `"…"` and `"""…"""`
/// spanning lines, BOM skipped, `FROM` required.
pub fn parse(text: &str) -> Result<Vec<Command>, ModelfileError> {
    if text.len() > MAX_MODELFILE_LEN {
        return Err(ModelfileError::Parse {
            line: 0,
            message: "Modelfile too large".into(),
        });
    }
    let s = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut i = 0usize;
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let line_at = |pos: usize| s[..pos].matches('\n').count() + 1;
    let err = |pos: usize, m: &str| ModelfileError::Parse {
        line: line_at(pos),
        message: m.to_string(),
    };
    let skip_blank = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] == b' ' || bytes[*i] == b'\t') {
            *i += 1;
        }
    };
    let word = |i: &mut usize| -> String {
        let st = *i;
        while *i < bytes.len() && !bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
        s[st..*i].to_string()
    };
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if bytes[i] == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let name = word(&mut i).to_ascii_lowercase();
        let known = [
            "from",
            "license",
            "template",
            "system",
            "adapter",
            "parameter",
            "message",
            "renderer",
            "parser",
            "requires",
            "draft",
        ];
        if !known.contains(&name.as_str()) {
            return Err(err(start, "command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"renderer\", \"parser\", \"parameter\", \"message\", or \"requires\""));
        }
        skip_blank(&mut i);
        let mut sub = String::new();
        if name == "parameter" || name == "message" {
            sub = word(&mut i);
            if name == "parameter" && !is_param_name(&sub) {
                return Err(err(start, "invalid parameter name"));
            }
            if name == "message"
                && !["system", "user", "assistant"].contains(&sub.to_ascii_lowercase().as_str())
            {
                return Err(err(
                    start,
                    "message role must be one of \"system\", \"user\", or \"assistant\"",
                ));
            }
            skip_blank(&mut i);
        }
        let value = if s[i..].starts_with("\"\"\"") {
            let body = i + 3;
            let end = s[body..]
                .find("\"\"\"")
                .ok_or_else(|| err(start, "unexpected EOF"))?;
            i = body + end + 3;
            s[body..body + end].to_string()
        } else if s[i..].starts_with('"') {
            let body = i + 1;
            let end = s[body..]
                .find('"')
                .ok_or_else(|| err(start, "unexpected EOF"))?;
            i = body + end + 1;
            s[body..body + end].to_string()
        } else {
            let st = i;
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            s[st..i].trim().to_string()
        };
        if value.is_empty() {
            return Err(err(start, "missing value"));
        }
        out.push(match name.as_str() {
            "from" => Command::From(value),
            "template" => Command::Template(value),
            "system" => Command::System(value),
            "license" => Command::License(value),
            "adapter" => Command::Adapter(value),
            "parameter" => Command::Parameter(sub, value),
            "message" => Command::Message(sub.to_ascii_lowercase(), value),
            _ => Command::Other(name, value),
        });
    }
    if !out.iter().any(|c| matches!(c, Command::From(_))) {
        return Err(ModelfileError::Parse {
            line: line_at(s.len()),
            message: "no FROM line".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_renders_and_parses() {
        let m = Modelfile::base("./az-gpt.gguf", 1024, "<|endoftext|>");
        let text = m.render().unwrap();
        assert_eq!(
            text,
            "FROM ./az-gpt.gguf\nTEMPLATE {{ .Prompt }}\nPARAMETER num_ctx 1024\nPARAMETER stop \"<|endoftext|>\"\n"
        );
        assert_eq!(parse(&text).unwrap(), m.commands());
    }

    #[test]
    fn parser_rules() {
        let cmds =
            parse("\u{feff}# c\nfrom x\nSystem \"\"\"a \"q\"\nb\"\"\"\nparameter stop \"<s>\"\n")
                .unwrap();
        assert_eq!(
            cmds,
            vec![
                Command::From("x".into()),
                Command::System("a \"q\"\nb".into()),
                Command::Parameter("stop".into(), "<s>".into())
            ]
        );
        assert!(parse("SYSTEM hi\n")
            .unwrap_err()
            .to_string()
            .contains("no FROM line"));
        assert!(parse("FROM x\nSYSTEM \"\"\"open")
            .unwrap_err()
            .to_string()
            .contains("unexpected EOF"));
        assert!(parse("FROM x\nBOGUS y")
            .unwrap_err()
            .to_string()
            .contains("command must be one of"));
        assert!(parse("FROM x\nMESSAGE bot hi")
            .unwrap_err()
            .to_string()
            .contains("message role"));
    }

    #[test]
    fn refuses_unrepresentable() {
        let mut m = Modelfile {
            from: "x".into(),
            ..Default::default()
        };
        m.system = Some("a\n\"\"\"b".into());
        assert!(m.render().is_err());
        m.system = Some("\"x ".into());
        assert!(m.render().is_err());
        m.system = Some(String::new());
        assert!(m.render().is_err());
    }

    proptest::proptest! {
        #[test]
        fn round_trip(system in "(?s).{0,40}", template in "(?s).{0,40}", lic in "[ -~\n\"]{0,30}") {
            let m = Modelfile {
                from: "./m.gguf".into(),
                template: Some(template),
                system: Some(system),
                parameters: vec![("num_ctx".into(), "2048".into())],
                license: Some(lic),
            };
            if let Ok(text) = m.render() {
                proptest::prop_assert_eq!(parse(&text).unwrap(), m.commands());
            }
        }

        #[test]
        fn parse_never_panics(s in "(?s).{0,200}") {
            let _ = parse(&s);
        }
    }
}
