//! Issue 12, the daemon's `adapter = "lora"` mode, end to end: the real
//! `kvant watch` binary, real fixtures dropped into a real inbox, the
//! Ollama emulator (which applies adapters with real llama.cpp) and
//! llama.cpp itself (the pinned dev-dependency) as the judge of what
//! base + adapter must generate.

mod support;

use std::path::Path;

use kvant::daemon::{HostStep, Step};
use serde_json::{json, Value};

use support::daemon::{copy_dir, drop_folder, setup, tags, wait_for, wait_until, walk, Daemon};
use support::emulator::Emulator;
use support::fixtures;
use support::llama::Model;

/// The adapter fixture `fixture` with a `kvant.toml` saying `toml`,
/// assembled beside the inbox and renamed into it as `inbox/<fixture>`.
fn drop_adapter(dir: &Path, fixture: &str, toml: &str) {
    let staging = dir.join(format!("staging-{fixture}"));
    copy_dir(&fixtures::path(fixture), &staging);
    std::fs::write(staging.join("kvant.toml"), toml).unwrap();
    std::fs::rename(&staging, dir.join("inbox").join(fixture)).unwrap();
}

/// `POST url endpoint body` through the emulator, as JSON.
fn post(url: &str, endpoint: &str, body: &Value) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{url}{endpoint}"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{endpoint} {body}: {status} {v}");
        v
    })
}

/// Prompts from the fixtures' corpus style (raw, no chat template).
const PROMPTS: [&str; 3] = [
    "Hilal Axundlu Gəncə",
    "Şirkət: Azersun. Telefon:",
    "Dəyişiklik getdi torpaq",
];
const N_PREDICT: usize = 12;

/// Greedy text of `name` for `prompt` through the emulator (raw prompt,
/// temperature 0, no repeat penalty), and how many tokens it generated.
fn ollama_greedy(url: &str, name: &str, prompt: &str) -> (String, usize) {
    let v = post(
        url,
        "/api/generate",
        &json!({
            "model": name, "prompt": prompt, "raw": true, "stream": false,
            "options": { "temperature": 0, "seed": 1, "num_predict": N_PREDICT,
                         "repeat_penalty": 1.0, "top_k": 1 },
        }),
    );
    let text = v["response"].as_str().unwrap().to_owned();
    (text, v["eval_count"].as_u64().unwrap_or(0) as usize)
}

/// The first `n` tokens llama.cpp generates greedily for `prompt` from
/// `model` with the LoRA adapter `lora` at scale 1 (what Ollama's `--lora`
/// does), as text.
fn llama_greedy(model: &Model, lora: &Path, prompt: &str, n: usize) -> String {
    let adapter = model.load_lora(lora);
    let mut ids = model.tokenize(prompt, true, false);
    let mut generated = Vec::new();
    for _ in 0..n {
        let logits = model.eval_logits_with_lora(&ids, &adapter, 1.0);
        let last = logits.last().unwrap();
        let best = (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap() as i32;
        ids.push(best);
        generated.push(best);
    }
    model.detokenize(&generated)
}

/// The manifest the emulator stored for `model:tag`.
fn manifest(emu: &Emulator, model: &str, tag: &str) -> Value {
    let p = emu
        .models
        .join("manifests/registry.ollama.ai/library")
        .join(model)
        .join(tag);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn layer_digest(manifest: &Value, media: &str) -> Option<String> {
    manifest["layers"]
        .as_array()?
        .iter()
        .find(|l| l["mediaType"] == media)
        .and_then(|l| l["digest"].as_str())
        .map(str::to_owned)
}

const MODEL_LAYER: &str = "application/vnd.ollama.image.model";
const ADAPTER_LAYER: &str = "application/vnd.ollama.image.adapter";

#[test]
fn a_lora_drop_is_registered_as_its_base_plus_an_adapter_layer() {
    let dir = setup();
    let emu = Emulator::start(&[]);
    // A host whose version no longer creates adapter models, and one
    // from before the JSON create (the adapter goes in the Modelfile).
    let newer = Emulator::start(&["--emulate-version", "0.34.1"]);
    let legacy = Emulator::start(&["--emulate-version", "0.5.4"]);
    // The base lies beside the adapter (fixtures README), here as its own
    // drop in the inbox.
    drop_folder(dir.path(), "hf-llama-az", "hf-llama-az");
    drop_adapter(dir.path(), "lora-llama-az", "adapter = \"lora\"\n");
    let daemon = Daemon::start(
        dir.path(),
        &emu.url,
        &[
            "--ollama",
            &newer.url,
            "--ollama",
            &legacy.url,
            "--types",
            "q8_0",
        ],
    );
    wait_for(dir.path(), &["hf-llama-az"], Step::Registered, &daemon, 600);
    let st = wait_until(
        dir.path(),
        &daemon,
        600,
        "lora-llama-az registered on 0.12.6 and 0.5.4, refused on 0.34.1",
        |st| {
            st.drops.get("lora-llama-az").is_some_and(|r| {
                let step = |u: &str| r.hosts.get(u).map(|h| h.step);
                step(&emu.url) == Some(HostStep::Registered)
                    && step(&legacy.url) == Some(HostStep::Registered)
                    && step(&newer.url) == Some(HostStep::Failed)
            })
        },
    );

    // Outputs: the base per type with a Modelfile carrying FROM and
    // ADAPTER, and the adapter file; nothing half-written.
    let out = dir.path().join("out/lora-llama-az");
    let base_gguf = out.join("hf-llama-az-q8_0.gguf");
    let lora_gguf = out.join("lora-llama-az-lora.gguf");
    assert!(
        base_gguf.is_file() && lora_gguf.is_file(),
        "{:?}",
        walk(&out)
    );
    let mf = std::fs::read_to_string(out.join("hf-llama-az-q8_0.Modelfile")).unwrap();
    let lines: Vec<&str> = mf.lines().collect();
    assert_eq!(lines[0], "FROM ./hf-llama-az-q8_0.gguf", "{mf}");
    assert_eq!(lines[1], "ADAPTER ./lora-llama-az-lora.gguf", "{mf}");
    let temps: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(kvant::durable::TEMP_SUFFIX))
        .collect();
    assert!(temps.is_empty(), "no temporaries: {temps:?}");

    // Registered as base + adapter layer; the base's blob is the base
    // drop's own (one blob, uploaded once).
    let listed = tags(&emu.url);
    for name in ["lora-llama-az:q8_0", "hf-llama-az:q8_0"] {
        assert!(
            listed.iter().any(|m| m["name"] == name),
            "{name}: {listed:?}"
        );
    }
    let ft = manifest(&emu, "lora-llama-az", "q8_0");
    let base = manifest(&emu, "hf-llama-az", "q8_0");
    let adapter_digest = layer_digest(&ft, ADAPTER_LAYER).expect("an adapter layer");
    let base_digest = layer_digest(&base, MODEL_LAYER).unwrap();
    assert_eq!(layer_digest(&ft, MODEL_LAYER), Some(base_digest.clone()));
    let posts = |digest: &str| {
        emu.log()
            .lines()
            .filter(|l| l.contains("POST") && l.contains(&format!("/api/blobs/{digest}")))
            .count()
    };
    assert_eq!(posts(&base_digest), 1, "{}", emu.log());
    assert_eq!(posts(&adapter_digest), 1, "{}", emu.log());
    let show = post(
        &emu.url,
        "/api/show",
        &json!({ "model": "lora-llama-az:q8_0" }),
    );
    assert!(
        show["modelfile"].as_str().unwrap().contains("\nADAPTER "),
        "{}",
        show["modelfile"]
    );

    // The fine-tune generates what llama.cpp gives for base + adapter, and
    // not what the base alone gives.
    let model = Model::load(&base_gguf, false);
    let mut differs = 0;
    for prompt in PROMPTS {
        let (tuned, n_tuned) = ollama_greedy(&emu.url, "lora-llama-az:q8_0", prompt);
        let (plain, _) = ollama_greedy(&emu.url, "hf-llama-az:q8_0", prompt);
        eprintln!("{prompt:?}: fine-tune {tuned:?} ({n_tuned} tokens); base {plain:?}");
        assert!(n_tuned >= 4, "too short to compare: {tuned:?}");
        let expected = llama_greedy(&model, &lora_gguf, prompt, n_tuned);
        assert_eq!(
            tuned, expected,
            "{prompt:?}: llama.cpp's greedy text for base + adapter"
        );
        differs += usize::from(tuned != plain);
    }
    assert_eq!(
        differs,
        PROMPTS.len(),
        "the adapter changes every generation"
    );

    // The legacy create (a Modelfile with ADAPTER @sha256:…) stores the
    // same layers.
    let old = manifest(&legacy, "lora-llama-az", "q8_0");
    assert_eq!(
        layer_digest(&old, ADAPTER_LAYER),
        Some(adapter_digest.clone())
    );
    assert_eq!(layer_digest(&old, MODEL_LAYER), Some(base_digest.clone()));
    assert!(legacy.log().contains("/api/create"), "{}", legacy.log());

    // The host that cannot take adapters: refused with one line, nothing
    // uploaded there for the fine-tune.
    let refused = st.drops["lora-llama-az"].hosts[&newer.url]
        .error
        .clone()
        .unwrap_or_default();
    assert!(
        refused.contains("0.34.1") && refused.contains("merged") && !refused.contains('\n'),
        "{refused}"
    );
    assert!(
        !tags(&newer.url)
            .iter()
            .any(|m| m["name"] == "lora-llama-az:q8_0"),
        "not registered on 0.34.1"
    );
    assert!(
        !newer
            .log()
            .contains(&format!("/api/blobs/{adapter_digest}")),
        "{}",
        newer.log()
    );
    assert!(daemon.log().contains("lora-llama-az"), "{}", daemon.log());
}

#[test]
fn adapters_llama_cpp_cannot_apply_are_refused_and_the_daemon_goes_on() {
    let dir = setup();
    // Ollama ≥ 0.30 rewrites every imported GGUF (llama-quantize COPY).
    let emu = Emulator::start(&["--emulate-version", "0.33.0"]);
    drop_adapter(dir.path(), "dora-llama-az", "adapter = \"lora\"\n");
    drop_adapter(dir.path(), "lora-llama-head", "adapter = \"lora\"\n");
    // Not an adapter at all.
    drop_adapter(dir.path(), "hf-gpt2-az", "adapter = \"lora\"\n");
    let daemon = Daemon::start(dir.path(), &emu.url, &["--types", "q8_0"]);
    let st = wait_for(
        dir.path(),
        &["dora-llama-az", "lora-llama-head", "hf-gpt2-az"],
        Step::Failed,
        &daemon,
        300,
    );
    for (drop, what) in [
        ("dora-llama-az", "DoRA"),
        ("lora-llama-head", "whole modules"),
        ("hf-gpt2-az", "not a LoRA adapter folder"),
    ] {
        let e = st.drops[drop].error.clone().unwrap_or_default();
        assert!(e.contains(what), "{drop}: {e}");
        assert!(drop == "hf-gpt2-az" || e.contains("merged"), "{drop}: {e}");
        assert!(e.contains(drop), "names the drop: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // The daemon keeps serving: the next adapter drop, whose base is
    // named in its kvant.toml (read in place), is registered, and so is
    // its base, which no drop registered, sharing the fine-tune's blob.
    let base = fixtures::path("hf-qwen2-az");
    drop_adapter(
        dir.path(),
        "lora-qwen2-rslora",
        &format!(
            "adapter = \"lora\"\nbase = {:?}\n",
            base.display().to_string()
        ),
    );
    let st = wait_for(
        dir.path(),
        &["lora-qwen2-rslora"],
        Step::Registered,
        &daemon,
        600,
    );
    let listed = tags(&emu.url);
    for name in ["lora-qwen2-rslora:q8_0", "hf-qwen2-az:q8_0"] {
        assert!(
            listed.iter().any(|m| m["name"] == name),
            "{name}: {listed:?}"
        );
    }
    assert!(!listed
        .iter()
        .any(|m| m["name"].as_str().unwrap_or("").starts_with("dora")));
    let ft = manifest(&emu, "lora-qwen2-rslora", "q8_0");
    assert!(layer_digest(&ft, ADAPTER_LAYER).is_some(), "{ft}");
    assert_eq!(
        layer_digest(&ft, MODEL_LAYER),
        layer_digest(&manifest(&emu, "hf-qwen2-az", "q8_0"), MODEL_LAYER)
    );
    let held = &st.drops["lora-qwen2-rslora"].hosts[&emu.url].models;
    assert!(
        held.iter().any(|m| m.name == "hf-qwen2-az:q8_0"),
        "the base is journaled with the drop: {held:?}"
    );
}

#[test]
fn an_adapter_file_damaged_while_the_daemon_was_down_is_written_again() {
    use sha2::{Digest, Sha256};
    let dir = setup();
    let mut emu = Emulator::start(&[]);
    emu.stop(); // Ollama down: the drop is converted and waits for it.
    let base = fixtures::path("hf-llama-az");
    drop_adapter(
        dir.path(),
        "lora-llama-az",
        &format!(
            "adapter = \"lora\"\nbase = {:?}\n",
            base.display().to_string()
        ),
    );
    let daemon = Daemon::start(dir.path(), &emu.url, &["--types", "q8_0"]);
    let st = wait_for(
        dir.path(),
        &["lora-llama-az"],
        Step::Converted,
        &daemon,
        300,
    );
    daemon.kill9();
    let journaled = st.drops["lora-llama-az"]
        .outputs
        .iter()
        .find(|o| o.tags.is_empty())
        .expect("the adapter is journaled as an output")
        .clone();
    let len = std::fs::metadata(&journaled.path).unwrap().len() as usize;
    std::fs::write(&journaled.path, vec![0x5a; len]).unwrap();

    emu.resume();
    let daemon = Daemon::start(dir.path(), &emu.url, &["--types", "q8_0"]);
    let st = wait_for(
        dir.path(),
        &["lora-llama-az"],
        Step::Registered,
        &daemon,
        600,
    );
    let log = daemon.log();
    assert_eq!(
        log.matches("converting drop=lora-llama-az").count(),
        2,
        "converted again after the restart: {log}"
    );
    let bytes = std::fs::read(&journaled.path).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        journaled.sha256,
        "rewritten"
    );
    let again = st.drops["lora-llama-az"]
        .outputs
        .iter()
        .find(|o| o.tags.is_empty())
        .unwrap();
    assert_eq!(again.sha256, journaled.sha256);
    let ft = manifest(&emu, "lora-llama-az", "q8_0");
    assert_eq!(
        layer_digest(&ft, ADAPTER_LAYER),
        Some(format!("sha256:{}", journaled.sha256)),
        "the registered adapter is the good one"
    );
}
