//! The daemon's configuration: a TOML file (default
//! `~/.config/kvant/config.toml`), every key overridable by a flag.
//!
//! ```toml
//! inbox = "/srv/models/inbox"      # watched folder (default: <data dir>/inbox)
//! output = "/srv/models/out"       # GGUFs, Modelfiles, reports (default: <data dir>/models)
//! state_dir = "/var/lib/kvant"     # journal and lock (default: <data dir>/state)
//! ollama = "http://127.0.0.1:11434" # or a list; default: OLLAMA_HOST as Ollama parses it
//! template_mode = "auto"            # auto | go | native (chat templates by server version)
//! chat_smoke = "warn"               # warn | block: a chat that never ends its turn
//! reconcile_interval = 300          # seconds between comparisons with each host's models
//! # [hosts."<url>"]: headers and CA per host (see `hosts_config`)
//! types = ["q4_k_m", "q8_0"]        # default: ["q4_k_m"]
//! settle = 5                        # seconds a drop must stay unchanged (default 5)
//! keep = 3                          # versions to keep registered per model (default: all)
//! max_memory = "16G"                # a conversion's address-space limit (default: 2 × RAM + the drop)
//! convert_timeout = 3600            # seconds a conversion may go without progress (default 3600)
//! max_kld = 0.1                     # quality gate and texts (see `quality_settings`)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::hosts_config::{resolve_hosts, HostConfig, HostFileSettings, OneOrMany};
use super::quality_settings::QualitySettings;
use super::DaemonError;
use crate::measure::TypeChoice;
use crate::ollama::{SmokePolicy, TemplateMode};
use crate::quant::FileType;

/// The configuration file's keys (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Watched folder.
    pub inbox: Option<PathBuf>,
    /// Output folder.
    pub output: Option<PathBuf>,
    /// State folder.
    pub state_dir: Option<PathBuf>,
    /// Ollama URL, or several.
    pub ollama: Option<OneOrMany>,
    /// Types to write.
    pub types: Option<Vec<String>>,
    /// Settle time in seconds.
    pub settle: Option<f64>,
    /// Versions to keep per model.
    pub keep: Option<usize>,
    /// A conversion's address-space limit: bytes, or "512M", "16G".
    pub max_memory: Option<MemorySize>,
    /// Seconds a conversion may go without progress.
    pub convert_timeout: Option<f64>,
    /// Go or native chat templates.
    pub template_mode: Option<TemplateMode>,
    /// What a failed chat smoke test does.
    pub chat_smoke: Option<SmokePolicy>,
    /// Seconds between reconciliations with the hosts.
    pub reconcile_interval: Option<f64>,
    /// Extra CA certificates for every host.
    pub ca_file: Option<PathBuf>,
    /// Per-host connection settings, by URL.
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, HostFileSettings>,
}

/// A size in the configuration file: bytes, or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MemorySize {
    /// Bytes.
    Bytes(u64),
    /// `"512M"`, `"16G"`, `"16GiB"`.
    Text(String),
}

/// Parses `"512M"`, `"16G"`, `"16GiB"`, `"1T"` or plain bytes (binary
/// units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512M, 16G)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}': unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Values given on the command line; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// `--inbox`.
    pub inbox: Option<PathBuf>,
    /// `--output`.
    pub output: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--ollama` (repeatable).
    pub ollama: Vec<String>,
    /// `--types`.
    pub types: Option<Vec<TypeChoice>>,
    /// `--settle`.
    pub settle: Option<f64>,
    /// `--keep`.
    pub keep: Option<usize>,
    /// `--max-memory`.
    pub max_memory: Option<u64>,
    /// `--convert-timeout`.
    pub convert_timeout: Option<f64>,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Watched folder (created if missing).
    pub inbox: PathBuf,
    /// Where GGUFs, Modelfiles and reports go.
    pub output: PathBuf,
    /// Journal and lock.
    pub state_dir: PathBuf,
    /// The first host's base URL (for single-host callers and logs).
    pub ollama: String,
    /// Every Ollama host; each gets every published model.
    pub hosts: Vec<HostConfig>,
    /// Go or native chat templates (a drop's `kvant.toml` may override).
    pub template_mode: TemplateMode,
    /// What a failed chat smoke test does.
    pub chat_smoke: SmokePolicy,
    /// Time between reconciliations with each host's `/api/tags`.
    pub reconcile_interval: Duration,
    /// File types written for every drop (unless its kvant.toml says);
    /// `auto` chooses by measuring.
    pub types: Vec<TypeChoice>,
    /// Held-out and calibration texts, budget and evaluation size for
    /// every drop (a drop's kvant.toml wins key by key).
    pub quality: QualitySettings,
    /// How long a drop must stay unchanged before it is read.
    pub settle: Duration,
    /// Versions kept registered per model (`None`: all).
    pub keep: Option<usize>,
    /// Where the configuration came from, for the first log line.
    pub source: String,
    /// A conversion child's address-space limit (`None`: twice the
    /// machine's memory plus the drop's size).
    pub max_memory: Option<u64>,
    /// How long a conversion may go without progress before it is killed.
    pub convert_timeout: Duration,
}

/// The default configuration file path.
pub fn default_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "kvant").map(|d| d.config_dir().join("config.toml"))
}

fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "kvant")
        .map(|d| d.data_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from(".kvant"))
}

/// Loads the configuration: `path` (or the default file if it exists),
/// then the overrides, then defaults.
pub fn load_config(path: Option<&Path>, o: ConfigOverrides) -> Result<DaemonConfig, DaemonError> {
    let (file, quality, source) = match path
        .map(Path::to_owned)
        .or_else(|| default_config_path().filter(|p| p.is_file()))
    {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| DaemonError::Config(format!("{}: {e}", p.display())))?;
            let bad = |e: String| DaemonError::Config(format!("{}: {e}", p.display()));
            let mut table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            let quality = QualitySettings::take_from(&mut table).map_err(bad)?;
            let f: ConfigFile = table.try_into().map_err(|e| bad(e.to_string()))?;
            (f, quality, p.display().to_string())
        }
        None => (
            ConfigFile::default(),
            QualitySettings::default(),
            "defaults (no config file)".to_owned(),
        ),
    };
    let data = default_data_dir();
    let types = match (o.types, file.types) {
        (Some(t), _) => t,
        (None, Some(names)) => names
            .iter()
            .map(|n| n.parse::<TypeChoice>().map_err(DaemonError::Config))
            .collect::<Result<_, _>>()?,
        (None, None) => vec![TypeChoice::Type(FileType::Q4_K_M)],
    };
    if types.is_empty() {
        return Err(DaemonError::Config(
            "types must name at least one type".into(),
        ));
    }
    let urls = match (o.ollama.is_empty(), file.ollama) {
        (false, _) => o.ollama,
        (true, Some(u)) => u.into_vec(),
        (true, None) => vec![],
    };
    let hosts = resolve_hosts(urls, &file.hosts, file.ca_file.as_ref())?;
    let ollama = hosts.first().map(|h| h.url.clone()).unwrap_or_default();
    let reconcile = file.reconcile_interval.unwrap_or(300.0);
    if !(0.5..=86_400.0).contains(&reconcile) {
        return Err(DaemonError::Config(format!(
            "reconcile_interval must be 0.5..86400 seconds, not {reconcile}"
        )));
    }
    let settle = o.settle.or(file.settle).unwrap_or(5.0);
    if !(0.0..=86_400.0).contains(&settle) {
        return Err(DaemonError::Config(format!(
            "settle must be 0..86400 seconds, not {settle}"
        )));
    }
    let max_memory = match (o.max_memory, file.max_memory) {
        (Some(b), _) => Some(b),
        (None, Some(MemorySize::Bytes(b))) => Some(b),
        (None, Some(MemorySize::Text(t))) => {
            Some(parse_size(&t).map_err(|e| DaemonError::Config(format!("max_memory: {e}")))?)
        }
        (None, None) => None,
    };
    let convert_timeout = o.convert_timeout.or(file.convert_timeout).unwrap_or(3600.0);
    if !(1.0..=604_800.0).contains(&convert_timeout) {
        return Err(DaemonError::Config(format!(
            "convert_timeout must be 1..604800 seconds, not {convert_timeout}"
        )));
    }
    Ok(DaemonConfig {
        max_memory,
        convert_timeout: Duration::from_secs_f64(convert_timeout),
        inbox: o.inbox.or(file.inbox).unwrap_or_else(|| data.join("inbox")),
        output: o
            .output
            .or(file.output)
            .unwrap_or_else(|| data.join("models")),
        state_dir: o
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| data.join("state")),
        ollama,
        hosts,
        template_mode: file.template_mode.unwrap_or_default(),
        chat_smoke: file.chat_smoke.unwrap_or_default(),
        reconcile_interval: Duration::from_secs_f64(reconcile),
        types,
        settle: Duration::from_secs_f64(settle),
        keep: o.keep.or(file.keep),
        quality,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "inbox = \"/in\"\ntypes = [\"q8_0\"]\nsettle = 2\n").expect("write");
        let c = load_config(
            Some(&p),
            ConfigOverrides {
                inbox: Some("/flag".into()),
                ..Default::default()
            },
        )
        .expect("config");
        assert_eq!(c.inbox, PathBuf::from("/flag"));
        assert_eq!(c.types, vec![TypeChoice::Type(FileType::Q8_0)]);
        assert_eq!(c.settle, Duration::from_secs(2));
    }

    #[test]
    fn memory_limits_read_as_sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("16GiB"), Ok(16 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "max_memory = \"2G\"\nconvert_timeout = 60\n").expect("write");
        let c = load_config(Some(&p), ConfigOverrides::default()).expect("config");
        assert_eq!(c.max_memory, Some(2 << 30));
        assert_eq!(c.convert_timeout, Duration::from_secs(60));
    }

    #[test]
    fn unknown_keys_and_types_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "inbx = \"/in\"\n").expect("write");
        assert!(load_config(Some(&p), ConfigOverrides::default()).is_err());
        std::fs::write(&p, "types = [\"q9\"]\n").expect("write");
        assert!(load_config(Some(&p), ConfigOverrides::default()).is_err());
    }
}
