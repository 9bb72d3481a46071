//! What the user typed, checked by clap but not acted on. Doc comments are
//! the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use kvant::measure::TypeChoice;
use kvant::quant::FileType;

use super::logging::LogFormat;

/// kvant turns freshly trained checkpoints into quantized GGUF models and
/// registers them with Ollama.
///
/// Drop a nanoGPT `ckpt.pt`, a Hugging Face folder or a `.safetensors` file
/// into the watched inbox and a verified, quantized model appears in
/// `ollama list` — or run the steps yourself with `convert` and `register`.
#[derive(Debug, Parser)]
#[command(name = "kvant", version, about, long_about, propagate_version = true)]
#[command(after_help = "\
Examples:
  kvant convert out/ckpt.pt -o az-gpt.gguf --type q8_0
  kvant convert ./my-hf-model --type q4_k_m --type q8_0 --output-dir models/
  kvant inspect az-gpt.gguf

Exit codes: 0 success, 1 the job failed (reason on stderr), 2 bad command line.")]
pub struct Cli {
    /// Log format: `text` (plain when not on a terminal, fit for journald)
    /// or `json`.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a checkpoint (file or folder) into one or more GGUF files.
    #[command(after_help = "\
SRC may be:
  - a nanoGPT ckpt.pt (weights under `model`, hyper-parameters in `model_args`)
  - a bare state_dict .pt (give --n-head, or put a config.json with nanoGPT's
    model_args keys beside it)
  - a .safetensors file, or a Hugging Face folder (config.json + weights)
  - a folder holding one of those and its tokenizer.json

The tokenizer is found beside the checkpoint (tokenizer.json, or a single
*tokenizer*.json); --tokenizer names another.

Examples:
  kvant convert out/ckpt.pt -o az-gpt.gguf --type f16
  kvant convert best_model.pt --n-head 4 -o az.gguf --type q8_0
  kvant convert ./hf-gpt2-az --type q4_k_m --type q8_0 --output-dir models/")]
    Convert(Box<ConvertArgs>),

    /// Re-quantize an F32/F16/BF16 GGUF file (what llama-quantize does,
    /// with the same per-tensor choices and the same bytes).
    #[command(after_help = "\
Examples:
  kvant quantize model-f32.gguf -o model-q4_k_m.gguf --type q4_k_m
  kvant quantize model-f16.gguf -o model-q4_k_m.gguf --type q4_k_m --imatrix imatrix.gguf")]
    Quantize(QuantizeArgs),

    /// Print a GGUF file's or a checkpoint's metadata and tensor table.
    Inspect(InspectArgs),

    /// Measure a GGUF: perplexity, and the KL divergence from a base (what
    /// llama-perplexity computes, with the same definitions).
    #[command(after_help = "\
Examples:
  kvant eval model-q4_k_m.gguf --text heldout.txt -c 512
  kvant eval model-q4_k_m.gguf --text heldout.txt --base model-f16.gguf
  kvant eval model-f16.gguf --text heldout.txt --save-logits f16.kld
  kvant eval model-q4_k_m.gguf --base-logits f16.kld --json
  kvant eval model-q8_0.gguf --tokens out/val.bin --chunks 50

--base-logits reads llama-perplexity's --kl-divergence-base files, and
--save-logits writes them (byte-compatible both ways).")]
    Eval(EvalArgs),

    /// Compute an importance matrix (what llama-imatrix computes) for
    /// `kvant quantize --imatrix` and llama-quantize.
    #[command(after_help = "\
Examples:
  kvant imatrix model-f16.gguf --text train.txt -o imatrix.gguf
  kvant imatrix model-f16.gguf --tokens out/train.bin --chunks 100 --output-format dat -o imatrix.dat")]
    Imatrix(ImatrixArgs),

    /// Run the daemon in the foreground: watch the inbox, convert each
    /// finished drop, register it with Ollama (services run this).
    #[command(after_help = "\
Configuration: a TOML file (default ~/.config/kvant/config.toml, or --config)
with the keys inbox, output, state_dir, ollama, types, settle, keep; each flag
below overrides its key. With no configuration at all, kvant watches
<data dir>/inbox and says where in its first log line.

A drop is a checkpoint file (*.pt *.pth *.bin *.safetensors *.gguf) or a folder
(one model per folder, with its tokenizer and an optional kvant.toml). It is
read once its size and mtime have been stable for --settle seconds, when it is
renamed into place, or when a <name>.done marker appears.

Examples:
  kvant watch
  kvant watch --inbox ~/models/inbox --types q4_k_m,q8_0 --ollama http://127.0.0.1:11434")]
    Watch(WatchArgs),

    /// Show every drop the daemon has seen: its step, model and errors.
    Status(StateArgs),

    /// Retry a failed drop (by its name in the inbox).
    Retry(RetryArgs),

    /// Print a drop's quality table: every type measured against the
    /// full-precision model on its held-out text, the budget's verdict,
    /// auto's candidates (the same as <model>.report.html).
    Report(ReportArgs),

    /// Never register a drop on a host again (after deleting it there on
    /// purpose); without --host, on every host.
    Forget(ForgetArgs),

    /// Register an existing GGUF file with Ollama (upload, create, verify,
    /// smoke-test).
    #[command(after_help = "\
Examples:
  kvant register az-gpt-q4_k_m.gguf --name az-gpt:q4_k_m
  OLLAMA_HOST=10.0.0.5 kvant register model.gguf --name m --num-ctx 1024")]
    Register(RegisterArgs),

    /// Install kvant as a service (systemd user unit by default).
    #[command(subcommand)]
    Service(ServiceCommand),

    /// Internal: the daemon's conversion child (a JSON job on stdin, JSON
    /// lines on stdout). Not for people.
    #[command(name = "__convert-job", hide = true)]
    ConvertJob,
}

/// `kvant watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder to watch (key `inbox`).
    #[arg(long, value_name = "DIR")]
    pub inbox: Option<PathBuf>,
    /// Folder for GGUFs, Modelfiles and reports (key `output`).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Folder for the journal and lock (key `state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Ollama server, repeatable: every host gets every model (key
    /// `ollama`; default: OLLAMA_HOST, else http://127.0.0.1:11434).
    #[arg(long, value_name = "URL")]
    pub ollama: Vec<String>,
    /// Types to write for every drop (key `types`; default q4_k_m);
    /// `auto` picks the smallest mix within the quality budget, measured
    /// on the drop's held-out text.
    #[arg(long, value_name = "TYPE,...", value_delimiter = ',')]
    pub types: Option<Vec<TypeChoice>>,
    /// Seconds a drop must stay unchanged before it is read (key `settle`;
    /// default 5).
    #[arg(long, value_name = "SECONDS")]
    pub settle: Option<f64>,
    /// Registered versions to keep per model; older ones are deleted from
    /// Ollama (key `keep`; default: all).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// A conversion's address-space limit, e.g. 16G (key `max_memory`;
    /// default: twice the machine's memory plus the drop's size).
    #[arg(long, value_name = "SIZE", value_parser = kvant::daemon::parse_size)]
    pub max_memory: Option<u64>,
    /// Seconds a conversion may go without progress before it is killed
    /// (key `convert_timeout`; default 3600).
    #[arg(long, value_name = "SECONDS")]
    pub convert_timeout: Option<f64>,
    /// Only check the configuration and exit (for ExecStartPre).
    #[arg(long)]
    pub check_config: bool,
}

/// Commands that only read the state directory.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Configuration file (for its state_dir).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State folder (overrides the configuration).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `kvant retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The drop's name in the inbox.
    pub drop: String,
    /// Where the state is.
    #[command(flatten)]
    pub state: StateArgs,
}

/// `kvant report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The drop's name in the inbox.
    pub drop: String,
    /// Output folder (overrides the configuration's `output`).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Where the state is.
    #[command(flatten)]
    pub state: StateArgs,
}

/// `kvant forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The drop's name in the inbox.
    pub drop: String,
    /// Only on this Ollama host (as configured).
    #[arg(long, value_name = "URL")]
    pub host: Option<String>,
    /// Where the state is.
    #[command(flatten)]
    pub state: StateArgs,
}

/// `kvant register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The GGUF file.
    pub file: PathBuf,
    /// Ollama model name (`model[:tag]`).
    #[arg(long)]
    pub name: String,
    /// Ollama server (default: OLLAMA_HOST, else http://127.0.0.1:11434).
    #[arg(long, value_name = "URL")]
    pub ollama: Option<String>,
    /// Go TEMPLATE (default `{{ .Prompt }}`).
    #[arg(long)]
    pub template: Option<String>,
    /// SYSTEM prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// PARAMETER num_ctx (default: the file's context length).
    #[arg(long)]
    pub num_ctx: Option<u32>,
    /// Chat templates: auto (native Jinja on Ollama >= 0.30), go, native.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub template_mode: kvant::ollama::TemplateMode,
    /// A chat smoke test that does not end its turn: warn, or block (exit 1).
    #[arg(long, value_name = "POLICY", default_value = "warn")]
    pub chat_smoke: kvant::ollama::SmokePolicy,
    /// A file of `Name: value` request headers (e.g. Authorization).
    #[arg(long, value_name = "FILE")]
    pub headers_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for https.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `kvant service`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the service file with this binary's path and print how to
    /// enable it.
    Install {
        /// A hardened system-wide unit (needs root) instead of a user unit.
        #[arg(long)]
        system: bool,
    },
}

/// `kvant quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The GGUF file to re-quantize.
    pub input: PathBuf,

    /// Output file.
    #[arg(short, long, value_name = "OUT.gguf")]
    pub output: PathBuf,

    /// Output type (see `kvant convert --help` for the list).
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub file_type: FileType,

    /// Quantization choices.
    #[command(flatten)]
    pub quant: QuantOptions,

    /// Re-quantize tensors that are already quantized (compounds the
    /// error; start from F32/F16/BF16 when you can).
    #[arg(long)]
    pub allow_requantize: bool,

    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `kvant convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Checkpoint file or model folder.
    pub src: PathBuf,

    /// Output file (with exactly one --type).
    #[arg(short, long, value_name = "OUT.gguf")]
    pub output: Option<PathBuf>,

    /// Output type, repeatable: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k
    /// q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k. Every type is
    /// written in the same single pass over the checkpoint. `auto`: the
    /// smallest K-quant mix (Q2_K … Q8_0) within the quality budget,
    /// measured on --eval-text (Q4_K_M when there is no text).
    #[arg(
        short = 't',
        long = "type",
        value_name = "TYPE",
        default_value = "f16",
        value_delimiter = ','
    )]
    pub types: Vec<TypeChoice>,

    /// Folder for the outputs when several types are requested; files are
    /// named `<model>-<type>.gguf`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// tokenizer.json to use instead of the one beside the checkpoint.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,

    /// Model name stored in the file (default: the checkpoint's name, or
    /// its folder's for generic names like ckpt.pt).
    #[arg(long)]
    pub name: Option<String>,

    /// Attention heads, for checkpoints that do not store it (a bare
    /// state_dict). Cannot be derived from tensor shapes.
    #[arg(long, value_name = "N")]
    pub n_head: Option<usize>,

    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Quantization choices.
    #[command(flatten)]
    pub quant: QuantOptions,

    /// Measuring every output against the checkpoint.
    #[command(flatten)]
    pub measure: MeasureArgs,

    /// For a PEFT LoRA adapter folder: write a GGUF LoRA adapter (F32
    /// factors) that llama.cpp applies to the base's GGUF at run time,
    /// instead of merging the adapter into the base (the default). The
    /// base's location is printed; convert it as usual.
    #[arg(long)]
    pub as_adapter: bool,
}

/// Measuring a conversion in the same run: each output's perplexity and
/// KL-divergence against the checkpoint's own full-precision weights on a
/// held-out text, judged by a budget, and an importance matrix computed
/// from a calibration text.
#[derive(Debug, Args, Clone, Default)]
pub struct MeasureArgs {
    /// Held-out text (UTF-8, or nanoGPT token ids when it ends in .bin):
    /// every output is measured on it and judged by the budget; a table
    /// and <model>.report.html show the result.
    #[arg(long, value_name = "FILE")]
    pub eval_text: Option<PathBuf>,

    /// Calibration text (UTF-8, or token ids in a .bin file): the
    /// importance matrix is computed from the checkpoint itself (no F32
    /// GGUF written) and used for every type.
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,

    /// Calibration as nanoGPT token ids (train.bin: uint16 little-endian).
    #[arg(long, value_name = "FILE", conflicts_with = "calibration")]
    pub calibration_tokens: Option<PathBuf>,

    /// Keep the computed importance matrix (GGUF, as llama-imatrix writes it).
    #[arg(long, value_name = "FILE")]
    pub save_imatrix: Option<PathBuf>,

    /// Largest mean KL-divergence a type may show (default 0.1).
    #[arg(long, value_name = "X")]
    pub max_kld: Option<f64>,

    /// Largest perplexity increase a type may show, in percent (default 10).
    #[arg(long, value_name = "PCT")]
    pub max_ppl_increase: Option<f64>,

    /// Tokens per evaluation chunk (default 256, at most the trained context).
    #[arg(long, value_name = "N")]
    pub eval_ctx: Option<usize>,

    /// Chunks of held-out text evaluated (default 3).
    #[arg(long, value_name = "N")]
    pub eval_chunks: Option<usize>,

    /// Chunks of calibration text run for the importance matrix (default 4,
    /// of --eval-ctx tokens each).
    #[arg(long, value_name = "N")]
    pub calibration_chunks: Option<usize>,
}

/// Choices llama-quantize offers, for users who know better than the
/// default mix.
#[derive(Debug, Args, Clone, Default)]
pub struct QuantOptions {
    /// Importance matrix from llama.cpp's llama-imatrix (GGUF or legacy
    /// .dat); improves the low-bit types.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,

    /// Force the type of tensors whose name matches a regex, repeatable:
    /// `--tensor-type 'attn_v=q8_0'`.
    #[arg(long, value_name = "PATTERN=TYPE")]
    pub tensor_type: Vec<String>,

    /// Type of output.weight.
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<String>,

    /// Type of token_embd.weight.
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<String>,

    /// Every quantizable tensor gets the file type's default type (no mix).
    #[arg(long)]
    pub pure: bool,

    /// Keep output.weight unquantized.
    #[arg(long)]
    pub leave_output_tensor: bool,
}

/// `kvant inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A .gguf file, a checkpoint file or a model folder.
    pub file: PathBuf,

    /// Print every tensor (default: the first 40 and a count).
    #[arg(long)]
    pub all: bool,
}

/// Where the evaluation tokens come from (one of the two).
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A UTF-8 text, tokenized with the model's own tokenizer as
    /// llama.cpp does (one trailing newline dropped, BOS where the
    /// vocabulary adds it).
    #[arg(long, value_name = "FILE", conflicts_with = "tokens")]
    pub text: Option<PathBuf>,
    /// nanoGPT's val.bin/train.bin: uint16 little-endian token ids.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
}

/// `kvant eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The GGUF file to measure.
    pub model: PathBuf,
    /// The tokens.
    #[command(flatten)]
    pub input: TokenArgs,
    /// Tokens per chunk (default 512, or the --base-logits file's).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub n_ctx: Option<usize>,
    /// Evaluate at most N chunks.
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
    /// A base GGUF of the same vocabulary to compare with (KL divergence).
    #[arg(long, value_name = "BASE.gguf", conflicts_with = "base_logits")]
    pub base: Option<PathBuf>,
    /// A base-logits file (llama-perplexity --kl-divergence-base, or
    /// kvant eval --save-logits) to compare with; its tokens are used.
    #[arg(long, value_name = "FILE")]
    pub base_logits: Option<PathBuf>,
    /// Write this model's logits as a base-logits file.
    #[arg(long, value_name = "FILE")]
    pub save_logits: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print the statistics as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The imatrix file forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImatrixFileFormat {
    /// GGUF (llama-imatrix's default).
    Gguf,
    /// The legacy .dat form.
    Dat,
}

/// `kvant imatrix`.
#[derive(Debug, Args)]
pub struct ImatrixArgs {
    /// The GGUF file to run (usually F32, F16 or BF16).
    pub model: PathBuf,
    /// The calibration tokens.
    #[command(flatten)]
    pub input: TokenArgs,
    /// Output file.
    #[arg(short, long, value_name = "FILE", default_value = "imatrix.gguf")]
    pub output: PathBuf,
    /// Tokens per chunk.
    #[arg(
        short = 'c',
        long = "ctx-size",
        value_name = "N",
        default_value_t = 512
    )]
    pub n_ctx: usize,
    /// Use at most N chunks.
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
    /// Also collect output.weight.
    #[arg(long)]
    pub process_output: bool,
    /// File form.
    #[arg(long, value_enum, default_value_t = ImatrixFileFormat::Gguf)]
    pub output_format: ImatrixFileFormat,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}
