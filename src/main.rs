//! `leadstream`: one binary, one subcommand per role.

mod broker;
mod live;
mod quickstart;
mod quickstart_model;
mod schemas_cmd;
mod simulate;
mod train_cmd;
mod train_plots;

use std::process::ExitCode;

// serde_json values allocate per field; glibc malloc spent more time in
// consolidation than the pipeline did in the load harness.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "leadstream",
    version,
    about = "Clickstream tracking and real-time lead scoring",
    after_help = "Every flag is also an environment variable (see each subcommand's --help). \
Variables every subcommand reads:
  LEADSTREAM_LOG          log filter, e.g. `info` or `warn,leadstream_scorer=debug`
  LEADSTREAM_KAFKA_DEBUG  librdkafka debug contexts, e.g. `broker,fetch`
  LEADSTREAM_RDKAFKA_*    any librdkafka property for every Kafka client:
                          LEADSTREAM_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL sets security.protocol,
                          LEADSTREAM_RDKAFKA_SASL_PASSWORD=... sets sasl.password"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process on embedded defaults, fed by the simulator (try it out).
    Quickstart(quickstart::QuickstartArgs),
    /// Post simulated multi-platform journeys to ingest; writes the ground truth.
    Simulate(simulate::SimulateArgs),
    /// Govern the tracking plan: check, render docs, pin ids, publish.
    Schemas(schemas_cmd::SchemasArgs),
    /// Serve the Confluent Schema Registry API (read-only) from the tracking plan.
    Registry(schemas_cmd::ServeRegistryArgs),
    /// Serve the Segment-compatible HTTP tracking API: validate, hash PII, publish to Kafka.
    Ingest(leadstream_ingest::IngestConfig),
    /// Score leads from the event stream: stitch identities, keep windows, publish lead_scores.
    Scorer(Box<leadstream_scorer::runtime::ScorerArgs>),
    /// Write events, scores and violations to ClickHouse; `sink migrate` applies the SQL migrations.
    Sink(leadstream_sink::SinkArgs),
    /// Train the scoring model on historical events and report how well it ranks.
    Train(train_cmd::TrainArgs),
    /// Run a Kafka-compatible dev broker (Tansu, in process) for tests and the quickstart.
    Broker(broker::BrokerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("LEADSTREAM_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,tansu_storage=warn,tansu_broker=warn,tansu_sans_io=warn")
    });
    // The quickstart's live view owns the terminal: whatever goes to
    // stderr (logs, librdkafka, the embedded broker's spinners, which draw
    // on a terminal) goes to a file meanwhile.
    let diverted = match &cli.command {
        Command::Quickstart(args) if quickstart::draws_in_terminal() => {
            let path = args.log_file();
            match StderrDiverted::to(&path) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!("error: cannot write the log file {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in log files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Schemas(args) => schemas_cmd::run(args).await,
            Command::Registry(args) => schemas_cmd::registry(args).await,
            Command::Broker(args) => broker::run(args).await,
            Command::Quickstart(args) => quickstart::run(args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Train(args) => train_cmd::run(args).await,
            Command::Scorer(args) => match args.command {
                Some(leadstream_scorer::runtime::ScorerCommand::CompactIdentity(cfg)) => {
                    leadstream_scorer::runtime::compact_identity(&cfg)
                        .await
                        .map(|()| ExitCode::SUCCESS)
                }
                None => leadstream_scorer::runtime::run(args.run, shutdown_signal())
                    .await
                    .map(|()| ExitCode::SUCCESS),
            },
            Command::Sink(args) => match args.command {
                Some(leadstream_sink::SinkCommand::Migrate(ch)) => leadstream_sink::migrate(&ch)
                    .await
                    .map(|_| ExitCode::SUCCESS),
                None => leadstream_sink::run(args.run, shutdown_signal())
                    .await
                    .map(|()| ExitCode::SUCCESS),
            },
            Command::Ingest(cfg) => leadstream_ingest::run(cfg, shutdown_signal())
                .await
                .map(|()| ExitCode::SUCCESS),
        }
    });
    drop(diverted);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Standard error pointed at a file until dropped, when it points back.
struct StderrDiverted {
    original: std::os::fd::OwnedFd,
}

impl StderrDiverted {
    fn to(path: &std::path::Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(path)?;
        let original = rustix::io::dup(std::io::stderr())?;
        rustix::stdio::dup2_stderr(&file)?;
        Ok(Self { original })
    }
}

impl Drop for StderrDiverted {
    fn drop(&mut self) {
        let _ = rustix::stdio::dup2_stderr(&self.original);
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every role that talks to Kafka lists the shared arguments, each once.
    #[test]
    fn each_role_lists_the_shared_arguments_once() {
        let mut cli = Cli::command();
        for role in ["quickstart", "ingest", "scorer", "sink"] {
            let help = cli
                .find_subcommand_mut(role)
                .unwrap_or_else(|| panic!("no subcommand {role}"))
                .render_long_help()
                .to_string();
            for flag in [
                "--kafka <",
                "--session-timeout-ms <",
                "--registry <",
                "--events-topic <",
                "--scores-topic <",
                "--dlq-topic <",
            ] {
                assert_eq!(help.matches(flag).count(), 1, "{role} --help: {flag}");
            }
        }
    }
}
