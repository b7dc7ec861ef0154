//! The `meshplane` command line: parses arguments and calls into the library.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meshplane::telemetry::{self, LogFormat};

/// jemalloc rather than the C library's allocator, in every build (the
/// image's musl and a developer's glibc alike). Its caches are many small
/// objects that live long between short-lived buffers (each watch event, list
/// page and apply), and glibc keeps the holes those leave as free heap the
/// process still holds. jemalloc's size classes leave fewer holes, and it
/// returns free pages as later allocations prompt it to purge.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "meshplane", version, about = "A Kubernetes operator that makes a cluster a self-serve data-mesh platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers, Prometheus metrics and health endpoints.
    Run(RunArgs),
    /// Print every CustomResourceDefinition as YAML, generated from the Rust types.
    Crds,
    /// Check DataDomain, DataProduct and GovernancePolicy manifests offline:
    /// against the CRD schemas and the policies among the given files.
    /// Exits non-zero on a schema error or an Enforce violation.
    Lint(LintArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Prefix of a domain's namespace when its spec names none.
    #[arg(long, env = "MESHPLANE_NAMESPACE_PREFIX", default_value = "dm-")]
    namespace_prefix: String,
    /// The namespace meshplane runs in; Strict domains admit traffic from it.
    #[arg(long, env = "MESHPLANE_PLATFORM_NAMESPACE", default_value = "meshplane-system")]
    platform_namespace: String,
    /// How often every object is reconciled again without an event (e.g. 5m, 30s).
    #[arg(long, env = "MESHPLANE_RESYNC", default_value = "5m", value_parser = parse_duration)]
    resync: Duration,
    /// How many objects of one kind are reconciled at once.
    #[arg(long, env = "MESHPLANE_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MESHPLANE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "MESHPLANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Elect a leader on a Lease in the platform namespace, so that one
    /// replica of several reconciles. Off: this process always reconciles.
    #[arg(long, env = "MESHPLANE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "MESHPLANE_LEASE_NAME", default_value = "meshplane")]
    lease_name: String,
    /// This replica's identity in the Lease; defaults to POD_NAME, else host name and process id.
    #[arg(long, env = "MESHPLANE_IDENTITY")]
    identity: Option<String>,
    /// Address of the catalog API (/api/v1).
    #[arg(long, env = "MESHPLANE_CATALOG_ADDR", default_value = "0.0.0.0:8081")]
    catalog_addr: SocketAddr,
    /// Check catalog callers' bearer tokens with the cluster (TokenReview,
    /// SubjectAccessReview). Turn off only for local development.
    #[arg(long, env = "MESHPLANE_CATALOG_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    catalog_auth: bool,
}

#[derive(clap::Args)]
struct LintArgs {
    /// Files or directories (searched for *.yaml and *.yml).
    #[arg(required = true)]
    paths: Vec<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: LintOutput,
    /// Namespace prefix of domains without spec.namespace, as the operator runs with.
    #[arg(long, default_value = "dm-")]
    namespace_prefix: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LintOutput {
    Text,
    Json,
}

fn yaml_files(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            yaml_files(&entry.path(), out)?;
        }
    } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") || !path.exists() {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn lint(args: LintArgs) -> ExitCode {
    let mut paths = Vec::new();
    for path in &args.paths {
        if let Err(e) = yaml_files(path, &mut paths) {
            eprintln!("error: reading {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(content) => files.push((path.display().to_string(), content)),
            Err(e) => {
                eprintln!("error: reading {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let findings = meshplane::lint::lint(&files, &args.namespace_prefix);
    match args.output {
        LintOutput::Text => {
            for f in &findings {
                println!("{f}");
            }
            let errors = findings.iter().filter(|f| f.severity == "error").count();
            eprintln!("{} files checked: {errors} errors, {} other findings", files.len(), findings.len() - errors);
        }
        LintOutput::Json => println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_default()),
    }
    if findings.iter().any(|f| f.severity == "error") { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is not a duration such as 30s, 5m or 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}` is not a duration such as 30s, 5m or 1h")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match meshplane::crds::to_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: rendering CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Lint(args) => lint(args),
        Command::Version => {
            println!("meshplane {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            telemetry::init_logging(args.log_format);
            let options = meshplane::run::RunOptions {
                namespace_prefix: args.namespace_prefix,
                platform_namespace: args.platform_namespace,
                resync: args.resync,
                concurrency: args.concurrency,
                metrics_addr: args.metrics_addr,
                leader_election: args.leader_election,
                catalog_addr: args.catalog_addr,
                catalog_auth: args.catalog_auth,
                lease_name: args.lease_name,
                identity: args.identity.or_else(|| std::env::var("POD_NAME").ok()).unwrap_or_else(|| {
                    let host =
                        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "meshplane".into());
                    format!("{host}-{}", std::process::id())
                }),
            };
            let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
            match runtime.block_on(meshplane::run::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "meshplane stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
