//! The daemon's view of the work it schedules: convert a checkpoint,
//! register a GGUF, copy and delete names. A trait so the loop is tested
//! with a fake; [`RealPipeline`] wires [`crate::convert`] and
//! [`crate::ollama`].
//!
//! Must not schedule, retry or journal: one call is one attempt.

use std::future::Future;
use std::sync::atomic::AtomicBool;

use crate::convert::{ConvertError, ConvertReport, ConvertRequest};
use crate::ollama::{Client, OllamaError, Registered, Registration};

/// The work the daemon schedules.
pub trait Pipeline: Send + Sync + 'static {
    /// One conversion (blocking; run on a worker thread). `cancel` set
    /// means stop soon and leave nothing behind.
    fn convert(
        &self,
        req: &ConvertRequest,
        cancel: &AtomicBool,
    ) -> Result<ConvertReport, ConvertError>;

    /// One attempt at registering (upload, create, verify, smoke test).
    fn register(
        &self,
        reg: Registration,
    ) -> impl Future<Output = Result<Registered, OllamaError>> + Send;

    /// Points `destination` at the same model as `source` (`:latest`).
    fn copy(
        &self,
        source: String,
        destination: String,
    ) -> impl Future<Output = Result<(), OllamaError>> + Send;

    /// Removes a name (pruning old versions).
    fn delete(&self, name: String) -> impl Future<Output = Result<(), OllamaError>> + Send;
}

/// The real converter and a real Ollama server.
#[derive(Debug, Clone)]
pub struct RealPipeline {
    client: Client,
}

impl RealPipeline {
    /// Talks to Ollama at `url`.
    pub fn new(url: &str) -> RealPipeline {
        RealPipeline {
            client: Client::new(url),
        }
    }
}

/// Logs conversion progress at debug level, one line per tensor.
struct LogProgress;

impl crate::convert::Progress for LogProgress {
    fn start(&self, total_tensors: usize) {
        tracing::info!(total_tensors, "converting");
    }
    fn tensor_done(&self, name: &str) {
        tracing::debug!(tensor = name, "tensor written");
    }
}

impl Pipeline for RealPipeline {
    fn convert(
        &self,
        req: &ConvertRequest,
        cancel: &AtomicBool,
    ) -> Result<ConvertReport, ConvertError> {
        crate::convert::convert(req, &LogProgress, cancel)
    }

    async fn register(&self, reg: Registration) -> Result<Registered, OllamaError> {
        crate::ollama::register(&self.client, &reg).await
    }

    async fn copy(&self, source: String, destination: String) -> Result<(), OllamaError> {
        self.client.copy(&source, &destination).await
    }

    async fn delete(&self, name: String) -> Result<(), OllamaError> {
        self.client.delete(&name).await
    }
}
