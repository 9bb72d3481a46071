//! The daemon: watch the inbox, convert each finished drop, write its
//! Modelfile and report, register it with Ollama — unattended, crash-safe
//! and exactly once.
//!
//! * `config` — the TOML configuration and its flag overrides;
//! * `settings` — per-model `kvant.toml`;
//! * `state` — the journal (and its recovery rules) and the lock;
//! * `run` — the loop: intake, one conversion at a time, registrations
//!   with retries (where a retry happens: `run::finish_registration`);
//! * `job` / `publish` — converting one drop, registering its outputs;
//! * `quality_settings` — the held-out text and budget a drop is gated by
//!   (the measuring itself is `crate::measure`);
//! * `adapter_job` — a LoRA adapter drop registered as its base plus an
//!   adapter layer (`adapter = "lora"`);
//! * `isolate` — each conversion in a child process, with limits, so a
//!   crash or hang fails one drop, never the daemon;
//! * `notify` — systemd readiness, status and watchdog;
//! * `status`, `service` — `kvant status` and `kvant service install`.
//!
//! It parses no formats itself: it calls `convert` and `ollama` like any
//! other caller.

mod adapter_job;
mod config;
mod error;
mod history;
mod host_state;
mod hosts;
mod hosts_config;
mod isolate;
mod job;
mod journal;
mod notify;
mod publish;
mod quality_settings;
mod reconcile;
mod report;
mod run;
mod service;
mod settings;
mod state;
mod status;

pub use config::{default_config_path, load_config, parse_size, ConfigOverrides, DaemonConfig};
pub use error::DaemonError;
pub use hosts::request_forget;
pub use hosts_config::{HostConfig, HostFileSettings, OneOrMany};
pub use isolate::{run_convert_job, TEST_FAULT_ENV};
pub use job::modelfile_for;
pub use publish::{publish, registration_from_modelfile, PublishOptions, Published};
pub use quality_settings::QualitySettings;
pub use report::render_quality_report;
pub use run::{request_retry, run};
pub use service::{
    install_service, render_launchd_plist, render_system_unit, render_user_unit, InstallOutcome,
    ServiceOptions,
};
pub use settings::ModelSettings;
pub use state::{DropRecord, HostModel, HostRecord, HostStep, OutputRecord, State, Step};
pub use status::render_status;
