//! `cvp-stream`: CloudVision events -> WebAssembly transforms -> Kafka.
//!
//! This file only parses the command line, sets up logging and signals,
//! calls into the library (`lib.rs`, whose doc gives the reading order), and
//! turns errors into one line for the user.

use clap::Parser;
use cvp_stream::cli::{self, Cli, Command, LogFormat, TransformCommand};
use cvp_stream::commands;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

// Events are many small, short-lived allocations; see BENCHMARKS.md for what
// this allocator gave against glibc's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::normalize_args(std::env::args().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli.log_level, cli.log_format);
    // One crypto provider for every rustls user in the process (our CVP
    // client, the REST login through reqwest, the simulator). reqwest's
    // provider-less build panics without it, even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = match cli.command {
        // Commands that only run transforms stay off the async runtime:
        // wasmtime-wasi's synchronous calls (a guest writing to stderr) block
        // on a runtime of their own, which panics inside ours.
        Command::Validate(args) => commands::validate::validate(args),
        Command::Test(args) => commands::test::test(args),
        Command::Transform(TransformCommand::Test(args)) => commands::transform_test::run(args),
        Command::Transform(TransformCommand::New(args)) => commands::transform_new::run(args),
        Command::Transform(TransformCommand::Inspect(args)) => {
            commands::transform_inspect::run(args)
        }
        Command::Run(args) => serve(|shutdown| commands::run::run(args, shutdown)),
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => serve(|shutdown| commands::simulate::simulate(args, shutdown)),
        #[cfg(feature = "simulator")]
        Command::Demo(args) => serve(|shutdown| commands::demo::demo(args, shutdown)),
        #[cfg(feature = "bench")]
        Command::Bench(args) => serve(|_| commands::bench::bench(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what to fix; never a backtrace. The message
            // may quote a transform's `init` error or a server's reply:
            // escape what could drive the terminal.
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {}", cvp_stream::sinks::stdout::printable(&line));
            ExitCode::FAILURE
        }
    }
}

/// Runs a long-lived command on the async runtime, with signal handling.
fn serve<F, Fut>(command: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // The soft open-files limit up to the hard one (often 1,024 of
    // 524,288): the CVP stream, the sinks, the checkpoint and the admin
    // endpoint's clients share it.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!("the open-files limit stays as it is: {e}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone());
        command(shutdown).await
    });
    // librdkafka and wasmtime threads must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn init_logging(level: &str, format: LogFormat) {
    use cvp_stream::progress;
    use tracing_subscriber::EnvFilter;
    // A bare level applies to cvp-stream's own logs (and librdkafka's);
    // wasmtime and Cranelift at debug would print millions of lines.
    let is_bare_level = ["error", "warn", "info", "debug", "trace"].contains(&level.trim());
    let directives = if is_bare_level {
        let l = level.trim();
        format!("warn,cvp_stream={l},cvp_transform_engine={l},cvp_simulator={l},librdkafka={l}")
    } else {
        level.to_string()
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&directives))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal, never in files or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        .with_ansi(ansi);
    progress::enable_if_terminal(format == LogFormat::Human);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Signals this close to the first are the same request: GNU `timeout`
/// sends SIGTERM to the process and to its group, so one stop arrives twice.
const SAME_SIGNAL: std::time::Duration = std::time::Duration::from_secs(1);

/// First SIGINT/SIGTERM: stop reading, drain, flush, exit 0. Another one,
/// later than [`SAME_SIGNAL`]: exit now.
fn watch_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut first: Option<std::time::Instant> = None;
        loop {
            wait_for_signal().await;
            let Some(at) = first else {
                first = Some(std::time::Instant::now());
                tracing::info!("shutting down: draining transforms and flushing the sink (signal again to exit at once)");
                shutdown.cancel();
                continue;
            };
            if at.elapsed() >= SAME_SIGNAL {
                eprintln!("second signal: exiting without flushing");
                std::process::exit(130);
            }
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
