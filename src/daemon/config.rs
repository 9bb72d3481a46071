//! The daemon's configuration: a TOML file (default
//! `<config dir>/config.toml`, e.g. `~/.config/kvant/config.toml` on Linux),
//! every key overridable by a command-line flag, every key optional.
//! Starting with no file at all works.
//!
//! Example `config.toml`:
//!
//! ```toml
//! inbox = "/srv/kvant/inbox"          # where checkpoints are dropped
//! output = "/srv/kvant/models"        # where GGUF files are written
//! state_dir = "/var/lib/kvant"        # journal and lock
//! ollama = "http://127.0.0.1:11434"   # Ollama server (default: $OLLAMA_HOST)
//! types = ["q4_k_m", "q8_0"]          # quantizations to produce
//! settle_seconds = 10                 # stillness before a drop is read
//! keep = 3                            # versions kept per model in Ollama
//! log_format = "text"                 # or "json"
//! ```
//!
//! Must not know about watching or Ollama's protocol; it only resolves paths
//! and values.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::DaemonError;
use crate::quant::FileType;

/// Largest config file read (it is a handful of keys).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for journald/Loki/Vector.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format '{other}' (text or json)")),
        }
    }
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// `inbox`: the folder watched for drops (a checkpoint file or one
    /// folder per model). Default `<data dir>/inbox`; created if missing.
    pub inbox: PathBuf,
    /// `output`: where GGUF files, Modelfiles and reports are written, one
    /// sub-folder per model and version. Default `<data dir>/models`.
    pub output: PathBuf,
    /// `state_dir`: the journal (`state.json`) and the lock file; one daemon
    /// per state directory. Default `<state dir>` (`~/.local/state/kvant`).
    pub state_dir: PathBuf,
    /// `ollama`: the Ollama server's URL. Default: `$OLLAMA_HOST` parsed as
    /// Ollama parses it, else `http://127.0.0.1:11434`.
    pub ollama_url: String,
    /// `types`: quantizations written for every drop (`q4_k_m`, `q8_0`,
    /// `f16`, …). Default `["q4_k_m"]`. A drop's `kvant.toml` may override.
    pub types: Vec<FileType>,
    /// `settle_seconds`: how long a drop's size and mtime must stay still
    /// before it is read (a `*.done` marker or a rename skips the wait).
    /// Default 10.
    pub settle: Duration,
    /// `keep`: versions per model kept registered in Ollama; older
    /// immutable tags are deleted. 0 keeps all (default).
    pub keep: usize,
    /// `log_format`: `text` (default) or `json`.
    pub log_format: LogFormat,
}

/// Values from command-line flags; each `Some` replaces the file's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigOverrides {
    /// `--inbox`.
    pub inbox: Option<PathBuf>,
    /// `--output`.
    pub output: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--ollama`.
    pub ollama_url: Option<String>,
    /// `--type` (repeatable), names like `q4_k_m`.
    pub types: Option<Vec<String>>,
    /// `--settle-seconds`.
    pub settle_seconds: Option<f64>,
    /// `--keep`.
    pub keep: Option<usize>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// The file's keys, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    inbox: Option<PathBuf>,
    output: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    ollama: Option<String>,
    types: Option<Vec<String>>,
    settle_seconds: Option<f64>,
    keep: Option<usize>,
    log_format: Option<LogFormat>,
}

/// Where defaults live: the platform's directories for kvant, and the
/// environment's `OLLAMA_HOST`. Separate so tests need no real HOME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultDirs {
    /// Holds `config.toml`.
    pub config_dir: PathBuf,
    /// Holds `inbox/` and `models/`.
    pub data_dir: PathBuf,
    /// The journal's directory.
    pub state_dir: PathBuf,
    /// `$OLLAMA_HOST`, if set.
    pub ollama_host: Option<String>,
}

impl DefaultDirs {
    /// The platform's directories (`directories::ProjectDirs`) and the
    /// process environment.
    pub fn from_env() -> Result<DefaultDirs, DaemonError> {
        let dirs =
            directories::ProjectDirs::from("io.github", "kvant", "kvant").ok_or_else(|| {
                DaemonError::Config {
                    path: PathBuf::from("$HOME"),
                    reason: "no home directory: set HOME or pass --inbox, --output and --state-dir"
                        .into(),
                }
            })?;
        let data_dir = dirs.data_dir().to_path_buf();
        let state_dir = dirs
            .state_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join("state"));
        Ok(DefaultDirs {
            config_dir: dirs.config_dir().to_path_buf(),
            data_dir,
            state_dir,
            ollama_host: std::env::var("OLLAMA_HOST").ok(),
        })
    }

    /// The default config file path.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
}

/// Loads the configuration: `path` (must exist) or the default file (may be
/// missing), then the flags on top, then defaults. Creates the inbox.
pub fn load_config(
    path: Option<&Path>,
    overrides: ConfigOverrides,
) -> Result<DaemonConfig, DaemonError> {
    load_config_with(path, overrides, &DefaultDirs::from_env()?)
}

/// [`load_config`] with explicit default directories.
pub fn load_config_with(
    path: Option<&Path>,
    overrides: ConfigOverrides,
    dirs: &DefaultDirs,
) -> Result<DaemonConfig, DaemonError> {
    let (file, file_path) = match path {
        Some(p) => (read_file(p)?, p.to_path_buf()),
        None => {
            let p = dirs.config_file();
            if p.is_file() {
                (read_file(&p)?, p)
            } else {
                (FileConfig::default(), p)
            }
        }
    };
    let bad = |path: &Path, reason: String| DaemonError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let flags = PathBuf::from("<command line>");

    let types_raw = overrides
        .types
        .clone()
        .map(|t| (t, &flags))
        .or(file.types.map(|t| (t, &file_path)));
    let types = match types_raw {
        Some((list, origin)) => {
            if list.is_empty() {
                return Err(bad(origin, "types: at least one type is needed".into()));
            }
            list.iter()
                .map(|t| FileType::from_str(t).map_err(|e| bad(origin, format!("types: {e}"))))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => vec![FileType::Q4_K_M],
    };
    let settle_seconds = overrides
        .settle_seconds
        .or(file.settle_seconds)
        .unwrap_or(10.0);
    if !settle_seconds.is_finite() || !(0.0..=86_400.0).contains(&settle_seconds) {
        return Err(bad(
            &file_path,
            format!("settle_seconds: {settle_seconds} is not between 0 and 86400"),
        ));
    }
    let ollama_url = match overrides.ollama_url.or(file.ollama) {
        Some(u) => crate::ollama::parse_host(Some(&u)).base_url(),
        None => crate::ollama::parse_host(dirs.ollama_host.as_deref()).base_url(),
    };
    let inbox = overrides
        .inbox
        .or(file.inbox)
        .unwrap_or_else(|| dirs.data_dir.join("inbox"));
    std::fs::create_dir_all(&inbox).map_err(DaemonError::io(&inbox))?;
    Ok(DaemonConfig {
        inbox,
        output: overrides
            .output
            .or(file.output)
            .unwrap_or_else(|| dirs.data_dir.join("models")),
        state_dir: overrides
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| dirs.state_dir.clone()),
        ollama_url,
        types,
        settle: Duration::from_secs_f64(settle_seconds),
        keep: overrides.keep.or(file.keep).unwrap_or(0),
        log_format: overrides.log_format.or(file.log_format).unwrap_or_default(),
    })
}

fn read_file(path: &Path) -> Result<FileConfig, DaemonError> {
    let meta = std::fs::metadata(path).map_err(DaemonError::io(path))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(DaemonError::Config {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(DaemonError::io(path))?;
    toml::from_str(&text).map_err(|e| DaemonError::Config {
        path: path.to_path_buf(),
        reason: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path, host: Option<&str>) -> DefaultDirs {
        DefaultDirs {
            config_dir: root.join("cfg"),
            data_dir: root.join("data"),
            state_dir: root.join("state"),
            ollama_host: host.map(str::to_owned),
        }
    }

    #[test]
    fn no_file_no_flags_gives_defaults_and_creates_the_inbox() {
        let t = tempfile::tempdir().unwrap();
        let c = load_config_with(None, ConfigOverrides::default(), &dirs(t.path(), None)).unwrap();
        assert_eq!(c.inbox, t.path().join("data/inbox"));
        assert!(c.inbox.is_dir());
        assert_eq!(c.output, t.path().join("data/models"));
        assert_eq!(c.state_dir, t.path().join("state"));
        assert_eq!(c.ollama_url, "http://127.0.0.1:11434");
        assert_eq!(c.types, vec![FileType::Q4_K_M]);
        assert_eq!(c.settle, Duration::from_secs(10));
        assert_eq!(c.keep, 0);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn ollama_host_env_is_parsed_like_ollama() {
        let t = tempfile::tempdir().unwrap();
        let c = load_config_with(
            None,
            ConfigOverrides::default(),
            &dirs(t.path(), Some("0.0.0.0:9999")),
        )
        .unwrap();
        assert_eq!(c.ollama_url, "http://127.0.0.1:9999");
    }

    #[test]
    fn file_values_then_flags_win() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("k.toml");
        std::fs::write(
            &f,
            "inbox = \"IN\"\ntypes = [\"q8_0\", \"F16\"]\nsettle_seconds = 2.5\nkeep = 3\nlog_format = \"json\"\nollama = \"http://h:1\"\n",
        )
        .unwrap();
        let inbox = t.path().join("in2");
        let c = load_config_with(
            Some(&f),
            ConfigOverrides {
                inbox: Some(inbox.clone()),
                keep: Some(1),
                ..Default::default()
            },
            &dirs(t.path(), Some("other:1")),
        )
        .unwrap();
        assert_eq!(c.inbox, inbox);
        assert_eq!(c.types, vec![FileType::Q8_0, FileType::F16]);
        assert_eq!(c.settle, Duration::from_millis(2500));
        assert_eq!(c.keep, 1);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.ollama_url, "http://h:1");
    }

    #[test]
    fn bad_files_name_the_file_and_key() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("k.toml");
        let d = dirs(t.path(), None);
        std::fs::write(&f, "typo = 1\n").unwrap();
        let e = load_config_with(Some(&f), ConfigOverrides::default(), &d).unwrap_err();
        assert!(
            e.to_string().contains("k.toml") && e.to_string().contains("typo"),
            "{e}"
        );
        std::fs::write(&f, "types = [\"q9\"]\n").unwrap();
        let e = load_config_with(Some(&f), ConfigOverrides::default(), &d).unwrap_err();
        assert!(e.to_string().contains("unknown type 'q9'"), "{e}");
        let missing = t.path().join("nope.toml");
        assert!(load_config_with(Some(&missing), ConfigOverrides::default(), &d).is_err());
        std::fs::write(&f, "settle_seconds = -1\n").unwrap();
        assert!(load_config_with(Some(&f), ConfigOverrides::default(), &d).is_err());
    }
}
