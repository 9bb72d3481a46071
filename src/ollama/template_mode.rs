//! Which chat template a model is registered with on a given Ollama
//! version. Ollama 0.30 runs every GGUF in llama.cpp's `llama-server` and
//! can apply the GGUF's own Jinja `tokenizer.chat_template` ("native"
//! mode) when the model has no Go `TEMPLATE`; older servers only know Go
//! templates, so they get kvant's proven translation (or `{{ .Prompt }}`
//! with the reason, decided at conversion).

use serde::{Deserialize, Serialize};

use super::client::Version;

/// The first Ollama with native Jinja chat templates.
pub const NATIVE_JINJA: Version = (0, 30, 0);

/// The user's choice (`template_mode` in the config or a `kvant.toml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateMode {
    /// Native on Ollama ≥ 0.30 for a model with a Jinja template, the Go
    /// template before.
    #[default]
    Auto,
    /// Always the Go template (kvant's translation or the user's).
    Go,
    /// Native whenever the model has a Jinja template; a server older than
    /// 0.30 gets the Go template, and the reason is said.
    Native,
}

impl std::str::FromStr for TemplateMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(TemplateMode::Auto),
            "go" => Ok(TemplateMode::Go),
            "native" => Ok(TemplateMode::Native),
            _ => Err(format!("unknown template mode '{s}' (auto, go or native)")),
        }
    }
}

/// What one host gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateChoice {
    /// The Go `TEMPLATE` to send; `None` for native mode.
    pub template: Option<String>,
    /// `native` or `go`, for the report.
    pub mode: &'static str,
    /// Why native was not used although asked for (a warning).
    pub note: Option<String>,
}

/// Decides the template for a server of `version`. `go_template` is the
/// Modelfile's (translation, `{{ .Prompt }}`, or the user's), `has_jinja`
/// whether the GGUF carries a chat template, `user_template` whether the
/// user gave the Go template (it always wins).
pub fn choose_template(
    mode: TemplateMode,
    version: Version,
    go_template: Option<&str>,
    has_jinja: bool,
    user_template: bool,
) -> TemplateChoice {
    let go = |note: Option<String>| TemplateChoice {
        template: go_template.map(str::to_owned),
        mode: "go",
        note,
    };
    if user_template || !has_jinja || mode == TemplateMode::Go {
        return go(None);
    }
    if version >= NATIVE_JINJA {
        return TemplateChoice {
            template: None,
            mode: "native",
            note: None,
        };
    }
    match mode {
        TemplateMode::Native => go(Some(format!(
            "template_mode native: Ollama {}.{}.{} is older than 0.30 and has no native Jinja chat; \
             registered with the Go template",
            version.0, version.1, version.2
        ))),
        _ => go(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO: Option<&str> = Some("{{ .Prompt }}");

    #[test]
    fn auto_is_native_from_0_30_for_jinja_models_only() {
        let c = choose_template(TemplateMode::Auto, (0, 33, 0), GO, true, false);
        assert_eq!((c.template, c.mode), (None, "native"));
        let c = choose_template(TemplateMode::Auto, (0, 12, 6), GO, true, false);
        assert_eq!((c.template.as_deref(), c.mode), (GO, "go"));
        assert!(c.note.is_none());
        // A base model keeps {{ .Prompt }} everywhere.
        let c = choose_template(TemplateMode::Auto, (0, 33, 0), GO, false, false);
        assert_eq!(c.template.as_deref(), GO);
    }

    #[test]
    fn the_users_template_and_go_mode_always_send_the_go_template() {
        for (mode, user) in [(TemplateMode::Auto, true), (TemplateMode::Go, false)] {
            let c = choose_template(mode, (0, 33, 0), GO, true, user);
            assert_eq!((c.template.as_deref(), c.mode), (GO, "go"));
        }
    }

    #[test]
    fn native_on_an_old_server_says_why_it_is_not_native() {
        let c = choose_template(TemplateMode::Native, (0, 12, 6), GO, true, false);
        assert_eq!(c.mode, "go");
        assert!(c.note.unwrap_or_default().contains("0.12.6"));
    }
}
