//! Registration against the emulator behaving like Ollama 0.5.4, whose create endpoint only
//! takes a Modelfile (`FROM @sha256:<hex>`): proves the version gate picks the legacy form and
//! the result is listed, shown and generates like on a current server.

mod support;

use kvant::ollama::{register, Client, Registration};
use kvant::quant::FileType;

use support::emulator::Emulator;
use support::fixtures;
use support::logits::convert_to;

#[test]
fn legacy_modelfile_create_on_0_5_4() {
    let emu = Emulator::start(&["--emulate-version", "0.5.4"]);
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::Q8_0,
        dir.path(),
        None,
    );
    let reg = Registration {
        gguf,
        sha256: report.outputs[0].sha256.clone(),
        name: "az-gpt:q8_0-legacy".into(),
        template: Some("{{ .Prompt }}".into()),
        num_ctx: Some(report.context_length),
        stop: report.stop_tokens.clone(),
        smoke_prompt: "Salam".into(),
        ..Default::default()
    };
    let client = Client::new(&emu.url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = rt
        .block_on(register(&client, &reg))
        .unwrap_or_else(|e| panic!("{e}\n{}", emu.log()));
    assert_eq!(done.server_version.to_string(), "0.5.4");
    assert_eq!(done.family, "gpt2");
    assert_eq!(done.quantization_level, "Q8_0");
    assert!(done.uploaded);
    assert!(!done.smoke_output.is_empty());
    // The server stored the parameters the legacy Modelfile carried.
    let shown = rt.block_on(client.show("az-gpt:q8_0-legacy")).unwrap();
    let params = shown["parameters"].as_str().unwrap_or_default();
    assert!(params.contains("num_ctx"), "{shown}");
}
