//! The daemon loop end to end with a fake pipeline (real watcher, real
//! journal, real files): slow copies, bursts, failures, crashes, Ollama
//! outages and retries.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvant::convert::{ConvertError, ConvertReport, ConvertRequest, OutputReport};
use kvant::daemon::worker::Tuning;
use kvant::daemon::{run_with, status, DaemonConfig, LogFormat, Pipeline, Step};
use kvant::ollama::retry::Backoff;
use kvant::ollama::{OllamaError, Registered, Registration};
use kvant::quant::FileType;
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Fake {
    /// (source, bytes it held when converted)
    converted: Mutex<Vec<(PathBuf, usize)>>,
    registered: Mutex<Vec<String>>,
    copies: Mutex<Vec<(String, String)>>,
    deleted: Mutex<Vec<String>>,
    connect_failures: AtomicU32,
    block_convert: AtomicBool,
    release: AtomicBool,
    hang_register: AtomicBool,
}

impl Pipeline for Fake {
    fn convert(
        &self,
        req: &ConvertRequest,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<ConvertReport, ConvertError> {
        let bytes = std::fs::read(&req.source).map_err(|e| ConvertError::Other(e.to_string()))?;
        if self.block_convert.load(Ordering::SeqCst) {
            // Half-written output, as a killed converter leaves it.
            let tmp = kvant::durable::temp_path_for(&req.outputs[0].path);
            std::fs::write(&tmp, b"half").unwrap();
            while !self.release.load(Ordering::SeqCst) && !cancel.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Err(ConvertError::Cancelled);
        }
        self.converted
            .lock()
            .unwrap()
            .push((req.source.clone(), bytes.len()));
        if bytes.starts_with(b"BAD") {
            return Err(ConvertError::Other(format!(
                "{}: bad checkpoint",
                req.source.display()
            )));
        }
        let mut outputs = Vec::new();
        for o in &req.outputs {
            let mut content = bytes.clone();
            content.extend_from_slice(o.file_type.name().as_bytes());
            kvant::durable::write_atomic(&o.path, &content).unwrap();
            outputs.push(OutputReport {
                path: o.path.clone(),
                file_type: o.file_type.name(),
                sha256: hex::encode(Sha256::digest(&content)),
                size: content.len() as u64,
                type_counts: BTreeMap::new(),
                tensor_types: vec![],
                bits_per_weight: 4.5,
            });
        }
        Ok(ConvertReport {
            model_name: req.name.clone().unwrap_or_default(),
            arch: "gpt2".into(),
            n_params: 1,
            context_length: 64,
            stop_tokens: vec!["<|endoftext|>".into()],
            hparams: serde_json::json!({}),
            version: None,
            outputs,
            seconds: 0.0,
        })
    }

    async fn register(&self, reg: Registration) -> Result<Registered, OllamaError> {
        if self.hang_register.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self
            .connect_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.registered
                .lock()
                .unwrap()
                .push(format!("DOWN {}", reg.name));
            return Err(OllamaError::Connect {
                endpoint: "/api/version".into(),
                url: "http://127.0.0.1:1".into(),
                reason: "connection refused".into(),
            });
        }
        self.registered.lock().unwrap().push(reg.name.clone());
        Ok(Registered {
            name: reg.name,
            server_version: "0.9.0".into(),
            family: "gpt2".into(),
            quantization_level: "Q4_K_M".into(),
            uploaded: true,
            smoke_output: "hi".into(),
        })
    }

    async fn copy(&self, source: String, destination: String) -> Result<(), OllamaError> {
        self.copies.lock().unwrap().push((source, destination));
        Ok(())
    }

    async fn delete(&self, name: String) -> Result<(), OllamaError> {
        self.deleted.lock().unwrap().push(name);
        Ok(())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    cfg: DaemonConfig,
}

fn env(settle: f64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let cfg = DaemonConfig {
        inbox: root.join("inbox"),
        output: root.join("models"),
        state_dir: root.join("state"),
        ollama_url: "http://127.0.0.1:1".into(),
        types: vec![FileType::Q4_K_M],
        settle: Duration::from_secs_f64(settle),
        keep: 0,
        log_format: LogFormat::Text,
    };
    std::fs::create_dir_all(&cfg.inbox).unwrap();
    Env { _dir: dir, cfg }
}

fn tuning() -> Tuning {
    Tuning {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            factor: 2.0,
            jitter: 0.2,
        },
        max_register_attempts: 3,
        tick: Duration::from_millis(100),
        smoke_prompt: "Hello".into(),
    }
}

struct Running {
    handle: tokio::task::JoinHandle<Result<(), kvant::daemon::DaemonError>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn start(cfg: &DaemonConfig, fake: &Arc<Fake>) -> Running {
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(run_with(cfg.clone(), fake.clone(), tuning(), rx));
    Running { handle, stop }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    r.handle.await.unwrap().unwrap();
}

/// Polls the journal until `pred` holds (fails the test after 60 s).
async fn wait_for(state: &Path, what: &str, pred: impl Fn(&[kvant::daemon::DropStatus]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = status(state).unwrap_or_default();
        if pred(&rows) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn steps(rows: &[kvant::daemon::DropStatus]) -> Vec<Step> {
    rows.iter().map(|r| r.step).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_copy_is_processed_once_after_it_ends() {
    let e = env(3.0);
    let fake = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake);
    let path = e.cfg.inbox.join("slow.pt");
    let mut f = std::fs::File::create(&path).unwrap();
    for _ in 0..3 {
        f.write_all(&[7u8; 1000]).unwrap();
        f.sync_all().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(f);
    wait_for(&e.cfg.state_dir, "registered", |rows| {
        steps(rows) == [Step::Registered]
    })
    .await;
    // Another full settle period: nothing more happens.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop(r).await;
    let converted = fake.converted.lock().unwrap().clone();
    assert_eq!(converted, vec![(path, 3000)]);
    let rows = status(&e.cfg.state_dir).unwrap();
    assert_eq!(rows.len(), 1);
    let id = &rows[0].id;
    let tag = id.strip_prefix("slow-").unwrap();
    assert_eq!(
        *fake.registered.lock().unwrap(),
        vec![format!("slow:q4_k_m-{tag}")]
    );
    assert_eq!(
        rows[0].ollama_names,
        vec![
            format!("slow:q4_k_m-{tag}"),
            "slow:q4_k_m".to_owned(),
            "slow:latest".to_owned()
        ]
    );
    // Modelfile and report beside the GGUF.
    let out = e.cfg.output.join("slow").join(id);
    let mf = std::fs::read_to_string(out.join("slow-q4_k_m.Modelfile")).unwrap();
    let cmds = kvant::modelfile::parse(&mf).unwrap();
    assert_eq!(cmds[0].args, "./slow-q4_k_m.gguf");
    assert!(cmds.iter().any(|c| c.args == "num_ctx 64"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("slow.report.json")).unwrap()).unwrap();
    assert_eq!(report["context_length"], 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_drops_is_processed_in_arrival_order() {
    let e = env(1.0);
    let fake = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names = ["zeta.pt", "mid.safetensors", "alpha.bin", "q.gguf"];
    for (i, n) in names.iter().enumerate() {
        std::fs::write(e.cfg.inbox.join(n), vec![i as u8 + 1; 100]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Noise that is never a drop.
    std::fs::write(e.cfg.inbox.join("x.pt.part"), b"partial").unwrap();
    std::fs::write(e.cfg.inbox.join("notes.txt"), b"hello").unwrap();
    wait_for(&e.cfg.state_dir, "4 registered", |rows| {
        rows.len() == 4 && rows.iter().all(|r| r.step == Step::Registered)
    })
    .await;
    stop(r).await;
    let order: Vec<PathBuf> = fake
        .converted
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    let expected: Vec<PathBuf> = names.iter().map(|n| e.cfg.inbox.join(n)).collect();
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_drop_fails_and_the_next_good_one_works_then_retry() {
    let e = env(0.5);
    let fake = Arc::new(Fake::default());
    let bad = e.cfg.inbox.join("bad.pt");
    std::fs::write(&bad, b"BAD data").unwrap();
    let r = start(&e.cfg, &fake);
    wait_for(&e.cfg.state_dir, "bad failed", |rows| {
        steps(rows) == [Step::Failed]
    })
    .await;
    std::fs::write(e.cfg.inbox.join("good.pt"), b"good data").unwrap();
    wait_for(&e.cfg.state_dir, "good registered", |rows| {
        steps(rows) == [Step::Failed, Step::Registered]
    })
    .await;
    let rows = status(&e.cfg.state_dir).unwrap();
    assert!(
        rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("bad.pt: bad checkpoint"),
        "{rows:?}"
    );
    let table = kvant::daemon::render_status_table(&rows);
    assert!(
        table.contains("failed") && table.contains("registered"),
        "{table}"
    );
    // The unchanged failed drop is not tried again on its own...
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.converted.lock().unwrap().len(), 2);
    // ...but `kvant retry` while the daemon runs queues it again.
    kvant::daemon::retry(&e.cfg.state_dir, bad.to_str().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.converted.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "retry was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&e.cfg.state_dir, "bad failed again", |rows| {
        steps(rows) == [Step::Failed, Step::Registered]
    })
    .await;
    stop(r).await;
    // Changed content is a new version and converts again.
    std::fs::write(&bad, b"now it is fine").unwrap();
    let fake2 = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake2);
    wait_for(&e.cfg.state_dir, "fixed drop registered", |rows| {
        steps(rows) == [Step::Failed, Step::Registered, Step::Registered]
    })
    .await;
    stop(r).await;
    assert_eq!(fake2.converted.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_conversion_resumes_exactly_once() {
    let e = env(0.3);
    std::fs::write(e.cfg.inbox.join("run.pt"), b"weights").unwrap();
    // Run 1 is killed while converting.
    let fake1 = Arc::new(Fake::default());
    fake1.block_convert.store(true, Ordering::SeqCst);
    let r = start(&e.cfg, &fake1);
    wait_for(&e.cfg.state_dir, "converting", |rows| {
        steps(rows) == [Step::Converting]
    })
    .await;
    r.handle.abort();
    let _ = r.handle.await;
    fake1.release.store(true, Ordering::SeqCst);
    let rows = status(&e.cfg.state_dir).unwrap();
    let out_dir = e.cfg.output.join("run").join(&rows[0].id);
    let leftovers = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().ends_with(".kvant-tmp"))
            .count()
    };
    assert_eq!(leftovers(&out_dir), 1);

    // Run 2 converts and registers once; the stale temp is swept.
    let fake2 = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake2);
    wait_for(&e.cfg.state_dir, "registered", |rows| {
        steps(rows) == [Step::Registered]
    })
    .await;
    stop(r).await;
    assert_eq!(fake2.converted.lock().unwrap().len(), 1);
    assert_eq!(fake2.registered.lock().unwrap().len(), 1);
    assert_eq!(leftovers(&out_dir), 0);

    // Run 3: nothing to do.
    let fake3 = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(r).await;
    assert!(fake3.converted.lock().unwrap().is_empty());
    assert!(fake3.registered.lock().unwrap().is_empty());
    assert_eq!(
        steps(&status(&e.cfg.state_dir).unwrap()),
        [Step::Registered]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_registration_registers_again_without_converting() {
    let e = env(0.3);
    std::fs::write(e.cfg.inbox.join("reg.pt"), b"weights").unwrap();
    let fake1 = Arc::new(Fake::default());
    fake1.hang_register.store(true, Ordering::SeqCst);
    let r = start(&e.cfg, &fake1);
    wait_for(&e.cfg.state_dir, "registering", |rows| {
        steps(rows) == [Step::Registering]
    })
    .await;
    r.handle.abort();
    let _ = r.handle.await;
    assert_eq!(fake1.converted.lock().unwrap().len(), 1);

    let fake2 = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake2);
    wait_for(&e.cfg.state_dir, "registered", |rows| {
        steps(rows) == [Step::Registered]
    })
    .await;
    stop(r).await;
    assert!(fake2.converted.lock().unwrap().is_empty());
    assert_eq!(fake2.registered.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_output_found_on_restart_is_converted_again() {
    let e = env(0.3);
    std::fs::write(e.cfg.inbox.join("dmg.pt"), b"weights").unwrap();
    let fake1 = Arc::new(Fake::default());
    fake1.hang_register.store(true, Ordering::SeqCst);
    let r = start(&e.cfg, &fake1);
    wait_for(&e.cfg.state_dir, "registering", |rows| {
        steps(rows) == [Step::Registering]
    })
    .await;
    r.handle.abort();
    let _ = r.handle.await;
    let id = status(&e.cfg.state_dir).unwrap()[0].id.clone();
    let gguf = e.cfg.output.join("dmg").join(&id).join("dmg-q4_k_m.gguf");
    std::fs::write(&gguf, b"corrupted").unwrap();

    let fake2 = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake2);
    wait_for(&e.cfg.state_dir, "registered", |rows| {
        steps(rows) == [Step::Registered]
    })
    .await;
    stop(r).await;
    assert_eq!(fake2.converted.lock().unwrap().len(), 1);
    assert_ne!(std::fs::read(&gguf).unwrap(), b"corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_waits_out_an_ollama_outage() {
    let e = env(0.3);
    let fake = Arc::new(Fake::default());
    fake.connect_failures.store(5, Ordering::SeqCst);
    std::fs::write(e.cfg.inbox.join("down.pt"), b"weights").unwrap();
    let r = start(&e.cfg, &fake);
    wait_for(&e.cfg.state_dir, "registered", |rows| {
        steps(rows) == [Step::Registered]
    })
    .await;
    stop(r).await;
    let calls = fake.registered.lock().unwrap().clone();
    // Five refused connections (more than max_register_attempts) and then success.
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert!(calls[..5].iter().all(|c| c.starts_with("DOWN ")));
    assert_eq!(status(&e.cfg.state_dir).unwrap()[0].attempts, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_checkpoint_is_a_new_version_and_keep_prunes() {
    let mut e = env(0.3);
    e.cfg.keep = 1;
    let fake = Arc::new(Fake::default());
    let p = e.cfg.inbox.join("ver.pt");
    std::fs::write(&p, b"version one").unwrap();
    let r = start(&e.cfg, &fake);
    wait_for(&e.cfg.state_dir, "v1", |rows| {
        steps(rows) == [Step::Registered]
    })
    .await;
    std::fs::write(&p, b"version two!").unwrap();
    wait_for(&e.cfg.state_dir, "v2", |rows| {
        steps(rows) == [Step::Registered, Step::Registered]
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.deleted.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "old version not pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(r).await;
    let rows = status(&e.cfg.state_dir).unwrap();
    let old_tag = rows[0].id.strip_prefix("ver-").unwrap();
    assert_eq!(
        *fake.deleted.lock().unwrap(),
        vec![format!("ver:q4_k_m-{old_tag}")]
    );
    let latest: Vec<(String, String)> = fake
        .copies
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, d)| d == "ver:latest")
        .cloned()
        .collect();
    assert_eq!(latest.len(), 2);
    let new_tag = rows[1].id.strip_prefix("ver-").unwrap();
    assert_eq!(latest[1].0, format!("ver:q4_k_m-{new_tag}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_the_same_state_dir_is_refused() {
    let e = env(0.3);
    let fake = Arc::new(Fake::default());
    let r = start(&e.cfg, &fake);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = run_with(e.cfg.clone(), fake.clone(), tuning(), async {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, kvant::daemon::DaemonError::Locked { .. }),
        "{err}"
    );
    stop(r).await;
}
