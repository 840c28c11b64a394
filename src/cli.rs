//! The command line (README, Commands). Problems go to stderr, one line each; a one-line summary
//! goes to stdout. Exit codes: 0 ok, 1 invalid input, 2 usage, other = runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::policy::{self, Checked, diagnostic};

pub mod env {
    //! Environment variables, named once.
    pub const DATAPLANE: &str = "TRACECAR_DATAPLANE";
    pub const POLICY: &str = "TRACECAR_POLICY";
    pub const ADMIN: &str = "TRACECAR_ADMIN";
    pub const LOG: &str = "TRACECAR_LOG";
    pub const LOG_FORMAT: &str = "TRACECAR_LOG_FORMAT";
    pub const DRAIN_TIMEOUT: &str = "TRACECAR_DRAIN_TIMEOUT";
    pub const WORKERS: &str = "TRACECAR_WORKERS";
    pub const HTTP1_FAST_PATH: &str = "TRACECAR_HTTP1_FAST_PATH";
}

/// Exit code for invalid input (configuration, policy).
pub const EXIT_INVALID: u8 = 1;
/// Exit code for a failure at run time (a port that cannot be bound, …).
pub const EXIT_RUNTIME: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "tracecar",
    version,
    about = "A tracing sidecar proxy: B3 spans for HTTP/1.1, HTTP/2 and gRPC, exported to the backend a Kuma TrafficTrace selects"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Run(RunArgs),
    /// Load and validate policy and dataplane files; print one line per problem.
    Validate(ValidateArgs),
    /// Print, as JSON, what `run` would apply (the same document as /config_dump).
    Explain(ExplainArgs),
    /// A self-contained tour on loopback: two services with a sidecar each, some traffic,
    /// and the traces printed as trees.
    Demo(DemoArgs),
    /// Install or remove the nftables rules that redirect this network namespace's TCP
    /// traffic to tracecar (transparent proxying).
    Redirect(RedirectArgs),
}

#[derive(Debug, Args)]
pub struct RedirectArgs {
    #[command(subcommand)]
    pub action: RedirectAction,
}

#[derive(Debug, Subcommand)]
pub enum RedirectAction {
    /// Install the rules (replacing tracecar's earlier ones; running it twice is running it once).
    Install(RedirectInstallArgs),
    /// Remove the rules (nothing to remove is fine).
    Uninstall(RedirectUninstallArgs),
}

#[derive(Debug, Args)]
pub struct RedirectInstallArgs {
    /// The uid tracecar runs as (number or user name): its own connections are not redirected.
    #[arg(long)]
    pub uid: String,
    /// Where redirected inbound connections go (Dataplane `redirectPortInbound`).
    #[arg(long, default_value_t = 15006)]
    pub redirect_port_inbound: u16,
    /// Where redirected outbound connections go (Dataplane `redirectPortOutbound`).
    #[arg(long, default_value_t = 15001)]
    pub redirect_port_outbound: u16,
    /// Inbound destination ports left alone (comma-separated; default: the admin port).
    #[arg(long, value_delimiter = ',', default_value = "9901")]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone (comma-separated; default: the admin port).
    #[arg(long, value_delimiter = ',', default_value = "9901")]
    pub exclude_outbound_ports: Vec<u16>,
    /// Print the rules instead of installing them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RedirectUninstallArgs {
    /// Print what would run instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Send the spans to this Zipkin collector (e.g. http://127.0.0.1:9411/api/v2/spans)
    /// instead of the demo's own receiver.
    #[arg(long)]
    pub zipkin_url: Option<String>,
    /// The example tracing policy to run on: TrafficTrace or MeshTrace.
    #[arg(long, value_enum, default_value = "traffic-trace")]
    pub policy: crate::demo::DemoPolicy,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The Dataplane file describing this proxy's inbounds and outbounds.
    #[arg(long, env = env::DATAPLANE)]
    pub dataplane: PathBuf,
    /// Policy files or folders (every *.yaml/*.yml inside). Repeatable.
    #[arg(long, env = env::POLICY, value_delimiter = ',', required = true)]
    pub policy: Vec<PathBuf>,
    /// Admin server address (/ready, /metrics, /config_dump).
    #[arg(long, env = env::ADMIN, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// Runtime worker threads (default: one per core).
    #[arg(long, env = env::WORKERS)]
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish on shutdown (e.g. `10s`, `500ms`).
    #[arg(long, env = env::DRAIN_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Proxy plain HTTP/1.1 requests to HTTP/1.1 upstreams on the fast path; `false` sends
    /// every request through the general path.
    #[arg(long, env = env::HTTP1_FAST_PATH, default_value_t = true, action = clap::ArgAction::Set)]
    pub http1_fast_path: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Also validate this Dataplane file.
    #[arg(long)]
    pub dataplane: Option<PathBuf>,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
    /// Policy files or folders.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long, env = env::DATAPLANE)]
    pub dataplane: PathBuf,
    #[arg(long, env = env::POLICY, value_delimiter = ',', required = true)]
    pub policy: Vec<PathBuf>,
}

/// Durations as Envoy and Kubernetes users write them: `10s`, `500ms`, `1m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration (use e.g. 10s, 500ms, 1m)"))?;
    let signed = jiff::SignedDuration::try_from(span)
        .map_err(|_| format!("\"{text}\" is not a duration (use e.g. 10s, 500ms, 1m)"))?;
    std::time::Duration::try_from(signed).map_err(|_| format!("\"{text}\" must not be negative"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Explain(args) => explain(&args),
        Command::Run(args) => run(args),
        Command::Demo(args) => demo(args),
        Command::Redirect(args) => redirect(args),
    }
}

fn redirect(args: RedirectArgs) -> ExitCode {
    use crate::redirect;
    let (script, dry_run) = match args.action {
        RedirectAction::Install(a) => {
            let uid = match redirect::resolve_uid(&a.uid) {
                Ok(uid) => uid,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            let rules = redirect::Rules {
                inbound_port: a.redirect_port_inbound,
                outbound_port: a.redirect_port_outbound,
                uid,
                exclude_inbound_ports: a.exclude_inbound_ports,
                exclude_outbound_ports: a.exclude_outbound_ports,
            };
            (rules.install_script(), a.dry_run)
        }
        RedirectAction::Uninstall(a) => (redirect::uninstall_script(), a.dry_run),
    };
    if dry_run {
        print!("{script}");
        return ExitCode::SUCCESS;
    }
    match redirect::apply(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Prints every diagnostic to stderr.
pub fn print_diagnostics(checked: &Checked) {
    for d in &checked.diagnostics {
        eprintln!("{d}");
    }
}

fn summary(checked: &Checked) -> String {
    let (errors, warnings) = diagnostic::count(&checked.diagnostics);
    format!(
        "{} file{}, {} resource{}: {} error{}, {} warning{}",
        checked.files.len(),
        plural(checked.files.len()),
        checked.resource_count(),
        plural(checked.resource_count()),
        errors,
        plural(errors),
        warnings,
        plural(warnings),
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let checked = policy::check(&args.paths, args.dataplane.as_deref());
    print_diagnostics(&checked);
    let failed = checked.failed(args.strict);
    println!(
        "{}: {}",
        if failed { "invalid" } else { "valid" },
        summary(&checked)
    );
    if failed {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads and validates for `explain` and `run`: errors refuse the input, warnings are printed.
pub fn load_for_run(dataplane: &Path, policy: &[PathBuf]) -> Result<Checked, ExitCode> {
    let checked = policy::check(policy, Some(dataplane));
    print_diagnostics(&checked);
    if checked.failed(false) || checked.dataplane.is_none() {
        println!("invalid: {}", summary(&checked));
        return Err(ExitCode::from(EXIT_INVALID));
    }
    Ok(checked)
}

fn explain(args: &ExplainArgs) -> ExitCode {
    let checked = match load_for_run(&args.dataplane, &args.policy) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(dataplane) = &checked.dataplane else {
        return ExitCode::from(EXIT_INVALID);
    };
    let effective = checked.set.effective(dataplane, 1);
    match serde_json::to_string_pretty(&effective) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tracecar: cannot render the configuration: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The log filter, changeable at run time through the admin server.
struct ReloadableFilter {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    current: std::sync::Mutex<String>,
}

impl crate::admin::LogControl for ReloadableFilter {
    fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let parsed = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.handle.reload(parsed).map_err(|e| e.to_string())?;
        if let Ok(mut current) = self.current.lock() {
            *current = filter.to_string();
        }
        tracing::info!(filter, "log filter changed");
        Ok(())
    }
}

fn init_logging() -> Result<ReloadableFilter, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let filter = std::env::var(env::LOG).unwrap_or_else(|_| "info".to_string());
    let parsed = EnvFilter::try_new(&filter)
        .map_err(|e| format!("{}: invalid log filter \"{filter}\": {e}", env::LOG))?;
    let (layer, handle) = reload::Layer::new(parsed);
    let registry = tracing_subscriber::registry().with(layer);
    match std::env::var(env::LOG_FORMAT).as_deref() {
        Ok("json") => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        Ok("text") | Err(_) => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        Ok(other) => {
            return Err(format!(
                "{}: unknown log format \"{other}\" (use text or json)",
                env::LOG_FORMAT
            ));
        }
    }
    .map_err(|e| format!("cannot set up logging: {e}"))?;
    Ok(ReloadableFilter {
        handle,
        current: std::sync::Mutex::new(filter),
    })
}

fn run(args: RunArgs) -> ExitCode {
    let log = match init_logging() {
        Ok(log) => log,
        Err(e) => {
            eprintln!("tracecar: {e}");
            return ExitCode::from(2);
        }
    };
    let checked = match load_for_run(&args.dataplane, &args.policy) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::proxy::raise_open_files_limit() {
        Ok((before, after)) if after > before => {
            tracing::info!(before, after, "open-files limit raised");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("open-files limit not raised: {e}"),
    }
    // Before the runtime's threads exist: growing the table later stops them all.
    if let Err(e) = crate::proxy::reserve_file_table(crate::proxy::FILE_TABLE) {
        tracing::warn!(
            "file table not sized at start ({e}): each time it doubles, connections wait"
        );
    }
    // One worker: a single-threaded runtime, like one nginx worker, with no cross-thread
    // wakeups on the request path.
    let mut runtime = match args.workers {
        Some(0) => {
            eprintln!("tracecar: --workers ({}) must be at least 1", env::WORKERS);
            return ExitCode::from(2);
        }
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracecar: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let config = crate::app::RunConfig {
        policy: args.policy,
        admin: args.admin,
        drain_timeout: args.drain_timeout,
        http1_fast_path: args.http1_fast_path,
    };
    match runtime.block_on(crate::app::run(config, checked, Some(Box::new(log)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracecar: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn demo(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracecar: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(crate::demo::run(args.zipkin_url, args.policy)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tracecar demo: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
