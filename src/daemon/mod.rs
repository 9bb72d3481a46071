//! The unattended service: configuration, the crash-safe journal of drops,
//! the loop that watches, converts one drop at a time and registers with
//! Ollama concurrently, signal handling and service-file installation.
//!
//! The daemon knows *when* and *in what order*; [`crate::convert`] and
//! [`crate::ollama`] know *how* (reached through [`pipeline::Pipeline`] so
//! the loop is testable with a fake). Invariant: every state change is
//! journaled atomically before the step it announces is acted on.

pub mod config;
pub mod error;
pub mod model_settings;
pub mod pipeline;
pub mod service;
pub mod signals;
pub mod state;
pub mod worker;

pub use config::{load_config, ConfigOverrides, DaemonConfig, LogFormat};
pub use error::DaemonError;
pub use model_settings::ModelSettings;
pub use pipeline::{Pipeline, RealPipeline};
pub use service::{
    install_service, render_launchd_plist, render_systemd_unit, InstallOutcome, ServiceOptions,
};
pub use state::{render_status_table, retry, status, DropStatus, Step};
pub use worker::{run, run_with};
