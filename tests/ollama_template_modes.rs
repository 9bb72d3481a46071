//! Chat templates by server version: the same converted chat model
//! published (as the daemon does, from the Modelfile kvant wrote) on an
//! emulated Ollama 0.33.0 and 0.12.6. In auto mode 0.33.0 gets no Go
//! template (llama.cpp's native Jinja), 0.12.6 the proven Go translation;
//! a tool-calling template gives `tools` natively and falls back with the
//! reason before 0.30; chat smoke tests go through `/api/chat`.

mod support;

use std::path::{Path, PathBuf};

use kvant::convert::{ChatTemplate, ConvertReport};
use kvant::daemon::{modelfile_for, publish, ModelSettings, OutputRecord, PublishOptions};
use kvant::ollama::Client;
use kvant::quant::FileType;
use serde_json::{json, Value};

use support::emulator::Emulator;
use support::fixtures;
use support::logits::convert_to;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Converts `src` and writes its Modelfile as the daemon does.
fn converted(src: &Path, dir: &Path, model: &str) -> (OutputRecord, ConvertReport) {
    let (gguf, report) = convert_to(src, FileType::Q8_0, dir, None);
    let mf = modelfile_for(&gguf, &report, &ModelSettings::default());
    std::fs::write(gguf.with_extension("Modelfile"), mf.render().unwrap()).unwrap();
    let out = OutputRecord {
        file_type: "q8_0".into(),
        path: gguf,
        sha256: report.outputs[0].sha256.clone(),
        tags: vec![format!("{model}:q8_0"), format!("{model}:q8_0-v1")],
        registered: false,
        held_back: None,
    };
    (out, report)
}

fn manifest_layers(emu: &Emulator, model: &str) -> Vec<String> {
    let p: PathBuf = emu
        .models
        .join("manifests/registry.ollama.ai/library")
        .join(model)
        .join("q8_0");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_owned())
        .collect()
}

/// hf-qwen2-az's Jinja chat template, as the fixture has it.
fn qwen_jinja() -> String {
    std::fs::read_to_string(fixtures::path("hf-qwen2-az/chat_template.jinja")).unwrap()
}

#[test]
fn a_chat_model_is_native_on_0_33_and_the_proven_go_translation_on_0_12() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = converted(&fixtures::path("hf-qwen2-az"), dir.path(), "az-qwen");
    let ChatTemplate::Translated { template, .. } = &report.chat_template else {
        panic!("not translated: {:?}", report.chat_template)
    };
    let new = Emulator::start(&["--emulate-version", "0.33.0"]);
    let old = Emulator::start(&["--emulate-version", "0.12.6"]);
    let rt = rt();
    let options = PublishOptions::default();

    let c = Client::new(&new.url);
    let p = rt
        .block_on(publish(&c, "az-qwen", std::slice::from_ref(&out), &options))
        .unwrap_or_else(|e| panic!("{e}\n{}", new.log()));
    let r = &p.registered[0];
    assert_eq!(r.server_version, "0.33.0");
    assert_eq!(r.template_mode, "native");
    let layers = manifest_layers(&new, "az-qwen");
    assert!(
        !layers.iter().any(|l| l.ends_with(".template")),
        "no template layer in native mode: {layers:?}"
    );
    assert!(r.capabilities.contains(&"completion".to_owned()), "{r:?}");
    let shown = rt.block_on(c.show("az-qwen:q8_0")).unwrap();
    assert_eq!(shown["template"].as_str(), Some(qwen_jinja().as_str()));
    // The smoke test chatted; the done_reason was read and judged.
    assert_eq!(r.smoke_endpoint, "/api/chat");
    let reason = r.done_reason.clone().unwrap();
    assert_eq!(
        reason != "stop",
        r.warnings
            .iter()
            .any(|w| w.contains("did not end its turn")),
        "{r:?}"
    );
    // The conversation is rendered by the GGUF's own Jinja (llama.cpp).
    let url = format!("{}/api/chat", new.url);
    let v: Value = rt.block_on(async {
        reqwest::Client::new()
            .post(url)
            .json(&json!({
                "model": "az-qwen:q8_0",
                "messages": [{ "role": "user", "content": "Salam" }],
                "stream": false,
                "_debug_render_only": true,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let rendered = v["_debug_info"]["rendered_template"]
        .as_str()
        .unwrap_or_default();
    assert!(
        rendered.contains("<|im_start|>user\nSalam<|im_end|>")
            && rendered.ends_with("<|im_start|>assistant\n"),
        "{v}"
    );

    let c = Client::new(&old.url);
    let p = rt
        .block_on(publish(&c, "az-qwen", std::slice::from_ref(&out), &options))
        .unwrap_or_else(|e| panic!("{e}\n{}", old.log()));
    let r = &p.registered[0];
    assert_eq!(r.template_mode, "go");
    let shown = rt.block_on(c.show("az-qwen:q8_0")).unwrap();
    assert_eq!(shown["template"].as_str(), Some(template.as_str()));
    assert!(manifest_layers(&old, "az-qwen")
        .iter()
        .any(|l| l.ends_with(".template")));
    assert_eq!(r.smoke_endpoint, "/api/chat");
}

#[test]
fn a_tool_calling_template_has_tools_natively_and_falls_back_with_the_reason_before_0_30() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("az-tools");
    std::fs::create_dir_all(&src).unwrap();
    for e in std::fs::read_dir(fixtures::path("hf-gpt2-az")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    let cfg_path = src.join("tokenizer_config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = Value::from(
        "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}<|endoftext|>{{ m.role }}\n{{ m.content }}{% endfor %}",
    );
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let (out, report) = converted(&src, dir.path(), "az-tools");
    let ChatTemplate::Fallback { reason } = &report.chat_template else {
        panic!(
            "a tools template cannot be proven: {:?}",
            report.chat_template
        )
    };
    assert!(reason.contains("tools"), "{reason}");
    let rt = rt();

    let new = Emulator::start(&["--emulate-version", "0.33.0"]);
    let p = rt
        .block_on(publish(
            &Client::new(&new.url),
            "az-tools",
            std::slice::from_ref(&out),
            &PublishOptions::default(),
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", new.log()));
    let r = &p.registered[0];
    assert_eq!(r.template_mode, "native");
    assert!(r.capabilities.contains(&"tools".to_owned()), "{r:?}");
    assert!(!r.warnings.iter().any(|w| w.contains("'tools'")), "{r:?}");

    let old = Emulator::start(&["--emulate-version", "0.12.6"]);
    let p = rt
        .block_on(publish(
            &Client::new(&old.url),
            "az-tools",
            &[out],
            &PublishOptions::default(),
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", old.log()));
    let r = &p.registered[0];
    assert_eq!(r.template_mode, "go");
    assert!(!r.capabilities.contains(&"tools".to_owned()), "{r:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("lists no 'tools' capability") && w.contains("0.12.6")),
        "{r:?}"
    );
    let shown = rt
        .block_on(Client::new(&old.url).show("az-tools:q8_0"))
        .unwrap();
    assert_eq!(shown["template"], "{{ .Prompt }}");
}

/// `kvant register --template` with a template that is wrong for the
/// model: the chat smoke test sees the answer run to the token limit and
/// says so; under `--chat-smoke block` the registration fails with it.
#[test]
fn a_wrong_template_that_never_stops_is_caught_by_the_chat_smoke_test() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = convert_to(
        &fixtures::path("hf-qwen2-az"),
        FileType::Q8_0,
        dir.path(),
        None,
    );
    let emu = Emulator::start(&["--emulate-version", "0.33.0"]);
    let run = |policy: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kvant"))
            .arg("register")
            .arg(&gguf)
            .args(["--name", "az-wrong:q8_0", "--ollama", &emu.url])
            .args(["--template", "{{ .Prompt }} ->", "--chat-smoke", policy])
            .output()
            .unwrap()
    };
    let out = run("block");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("az-wrong:q8_0")
            && lines[0].contains("did not end its turn")
            && lines[0].contains("\"length\""),
        "{stderr}"
    );
    let out = run("warn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("did not end its turn"),
        "{stderr}"
    );
}
