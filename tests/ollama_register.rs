//! Registration against the Ollama emulator (built from Ollama's source;
//! its runner is real llama.cpp, so the smoke generation really runs the
//! GGUF kvant wrote).

mod support;

use kvant::ollama::{register, Client, OllamaError, Registration};
use kvant::quant::FileType;

use support::emulator::Emulator;
use support::fixtures;
use support::logits::convert_to;

fn registration(dir: &std::path::Path, ft: FileType, name: &str) -> Registration {
    let (gguf, report) = convert_to(&fixtures::path("nanogpt-az/ckpt.pt"), ft, dir, None);
    Registration {
        gguf,
        sha256: report.outputs[0].sha256.clone(),
        name: name.into(),
        template: Some("{{ .Prompt }}".into()),
        num_ctx: Some(report.context_length),
        stop: report.stop_tokens.clone(),
        smoke_prompt: "Salam".into(),
        ..Default::default()
    }
}

/// Runs `kvant register GGUF --name NAME --ollama URL`.
fn kvant_register(gguf: &std::path::Path, name: &str, url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kvant"))
        .arg("register")
        .arg(gguf)
        .args(["--name", name, "--ollama", url])
        .output()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn registers_lists_shows_and_generates() {
    let emu = Emulator::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let reg = registration(dir.path(), FileType::Q8_0, "az-gpt:q8_0");
    let client = Client::new(&emu.url);
    let done = rt().block_on(register(&client, &reg)).unwrap();
    assert_eq!(done.family, "gpt2");
    assert_eq!(done.quantization_level, "Q8_0");
    assert!(done.uploaded);
    assert!(!done.smoke_output.is_empty());
    // A second registration finds the blob already there.
    let again = rt().block_on(register(&client, &reg)).unwrap();
    assert!(!again.uploaded);
    // latest, and delete
    rt().block_on(client.copy("az-gpt:q8_0", "az-gpt:latest"))
        .unwrap();
    let names: Vec<String> = rt()
        .block_on(client.tags())
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    assert!(names.contains(&"az-gpt:latest".to_owned()), "{names:?}");
    rt().block_on(client.delete("az-gpt:latest")).unwrap();
    rt().block_on(client.delete("az-gpt:latest")).unwrap(); // already gone: still fine
}

#[test]
fn injected_faults_are_retryable_and_the_retry_succeeds() {
    for fault in ["blob_reset_once", "create_500_once", "refuse_first=3"] {
        let emu = Emulator::start(&["--faults", fault]);
        let dir = tempfile::tempdir().unwrap();
        let reg = registration(dir.path(), FileType::Q8_0, "az-gpt:q8_0");
        let client = Client::new(&emu.url);
        let mut attempts = 0;
        let done = loop {
            attempts += 1;
            match rt().block_on(register(&client, &reg)) {
                Ok(d) => break d,
                Err(e) if e.is_retryable() && attempts < 6 => continue,
                Err(e) => panic!("{fault}: {e} after {attempts} attempts\n{}", emu.log()),
            }
        };
        assert!(attempts > 1, "{fault}: the fault was never hit");
        assert_eq!(done.family, "gpt2");
    }
}

#[test]
fn ollamas_own_error_message_comes_through() {
    let emu = Emulator::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut reg = registration(dir.path(), FileType::Q8_0, "az-gpt:q8_0");
    // A digest that does not match the file: Ollama refuses the upload.
    reg.sha256 = "0".repeat(64);
    let err = rt()
        .block_on(register(&Client::new(&emu.url), &reg))
        .unwrap_err();
    match &err {
        OllamaError::Api {
            status: 400,
            message,
            ..
        } => assert!(message.contains("digest mismatch"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
}

#[test]
fn a_server_that_is_down_is_a_retryable_error() {
    let client = Client::new("http://127.0.0.1:9");
    let err = rt().block_on(client.version()).unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[test]
fn kvant_register_cli_registers_and_fails_cleanly_when_ollama_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = convert_to(
        &fixtures::path("hf-gpt2-az"),
        FileType::Q8_0,
        dir.path(),
        None,
    );
    // Server down: exit 1, one line naming the cause.
    let down = kvant_register(&gguf, "hf-gpt2:q8_0", "http://127.0.0.1:9");
    let err = String::from_utf8_lossy(&down.stderr);
    assert_eq!(down.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach Ollama"), "{err}");
    // Server up: registered, and the server lists it.
    let emu = Emulator::start(&[]);
    let up = kvant_register(&gguf, "hf-gpt2:q8_0", &emu.url);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let listed = rt().block_on(Client::new(&emu.url).tags()).unwrap();
    assert!(
        listed.iter().any(|m| m["name"] == "hf-gpt2:q8_0"),
        "{listed:?}"
    );
}

/// A chat model (hf-qwen2-az, ChatML): `kvant register` gives Ollama the
/// proven Go translation of its Jinja template and the end-of-turn stop,
/// and a chat-style generation (system + user prompt through the
/// template) returns text from the real llama.cpp runner.
#[test]
fn qwen2_chat_model_registers_with_its_proven_template_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(
        &fixtures::path("hf-qwen2-az"),
        FileType::Q8_0,
        dir.path(),
        None,
    );
    let kvant::convert::ChatTemplate::Translated {
        family,
        template,
        stop,
    } = &report.chat_template
    else {
        panic!(
            "hf-qwen2-az's template was not translated: {:?}",
            report.chat_template
        )
    };
    assert_eq!(family, "ChatML");
    assert!(stop.contains(&"<|im_end|>".to_string()), "{stop:?}");

    let emu = Emulator::start(&[]);
    let out = kvant_register(&gguf, "az-qwen:q8_0", &emu.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = Client::new(&emu.url);
    let shown = rt().block_on(client.show("az-qwen:q8_0")).unwrap();
    assert_eq!(shown["template"].as_str(), Some(template.as_str()));
    let params = shown["parameters"].as_str().unwrap_or_default();
    assert!(
        params
            .lines()
            .any(|l| l.starts_with("stop") && l.contains("<|im_end|>")),
        "{params}"
    );
    assert_eq!(shown["details"]["family"], "qwen2");

    let url = format!("{}/api/generate", emu.url);
    let v: serde_json::Value = rt().block_on(async {
        reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({
                "model": "az-qwen:q8_0",
                "system": "Qısa cavab ver.",
                "prompt": "Salam! Necəsən?",
                "stream": false,
                "options": { "num_predict": 12, "seed": 1, "temperature": 0.7 },
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let text = v["response"].as_str().unwrap_or_default();
    assert!(!text.trim().is_empty(), "no text generated: {v}");
    assert!(v["eval_count"].as_u64().unwrap_or(0) > 0, "{v}");
}
