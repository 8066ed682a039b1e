//! `leadstream schemas …` and `leadstream registry`.

use std::{fs, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use leadstream_schemas::{
    Plan, docs,
    lock::{LOCK_FILE, drift},
    publish::publish,
    registry,
    resolver::HttpResolver,
};

#[derive(Args)]
pub struct SchemasArgs {
    /// Directory holding `avro/` and TRACKING_PLAN.md.
    #[arg(
        long,
        env = "LEADSTREAM_SCHEMAS_DIR",
        default_value = "schemas",
        global = true
    )]
    dir: PathBuf,
    #[command(subcommand)]
    command: SchemasCommand,
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Lint names, docs and PII tags; check every version against all earlier ones
    /// (BACKWARD_TRANSITIVE); check the lock file and the rendered docs.
    Check {
        /// Skip the TRACKING_PLAN.md freshness check.
        #[arg(long, env = "LEADSTREAM_SCHEMAS_NO_DOCS")]
        no_docs: bool,
    },
    /// Render the tracking plan as Markdown into <dir>/TRACKING_PLAN.md (or stdout with `--stdout`).
    Docs {
        #[arg(long)]
        stdout: bool,
    },
    /// Pin ids for new versions in the lock file; never changes existing pins.
    Lock,
    /// Register every version, oldest first, into an external Confluent-compatible registry.
    Publish {
        /// Base URL of the registry, e.g. http://schema-registry:8081.
        #[arg(long, env = "LEADSTREAM_REGISTRY_URL")]
        registry: String,
        /// Do not set each subject's compatibility level to BACKWARD_TRANSITIVE first.
        #[arg(long, env = "LEADSTREAM_PUBLISH_KEEP_COMPATIBILITY")]
        keep_compatibility: bool,
    },
}

pub async fn run(args: SchemasArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SchemasCommand::Check { no_docs } => {
            let problems = leadstream_schemas::check(&args.dir, !no_docs)?;
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                eprintln!("tracking plan in {} is clean", args.dir.display());
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{} problem(s) in the tracking plan", problems.len());
                Ok(ExitCode::FAILURE)
            }
        }
        SchemasCommand::Docs { stdout } => {
            let (plan, problems) = Plan::read_dir_lenient(&args.dir)?;
            anyhow::ensure!(
                problems.is_empty(),
                "fix these before rendering docs:\n{}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            let rendered = docs::render(&plan);
            if stdout {
                print!("{rendered}");
            } else {
                let path = args.dir.join(docs::DOCS_FILE);
                fs::write(&path, rendered)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::Lock => {
            let (plan, problems) = Plan::read_dir_lenient(&args.dir)?;
            anyhow::ensure!(
                problems.is_empty(),
                "fix these before pinning ids:\n{}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            let edited: Vec<String> = drift(&plan)
                .into_iter()
                .filter(|p| p.rule != "lock_missing")
                .map(|p| p.to_string())
                .collect();
            anyhow::ensure!(
                edited.is_empty(),
                "the lock file cannot be extended:\n{}",
                edited.join("\n")
            );
            let lock = plan.lock.extended_for(&plan);
            let added = lock.schemas.len() - plan.lock.schemas.len();
            let path = args.dir.join("avro").join(LOCK_FILE);
            fs::write(&path, lock.to_pretty_json())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("pinned {added} new version(s) in {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::Publish {
            registry,
            keep_compatibility,
        } => {
            let plan = Plan::load_dir(&args.dir)?;
            let client = HttpResolver::new(&registry)?;
            let published = publish(&plan, &client, !keep_compatibility).await?;
            for p in &published {
                let pinned = plan
                    .id_of(&p.subject, p.version)
                    .map_or_else(|| "-".into(), |id| id.to_string());
                println!(
                    "{} v{} -> id {} (lock file id {pinned})",
                    p.subject, p.version, p.id
                );
            }
            eprintln!("published {} version(s) to {registry}", published.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Args)]
pub struct ServeRegistryArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "LEADSTREAM_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    listen: SocketAddr,
    /// Serve the plan from this directory instead of the one built into the binary.
    #[arg(long, env = "LEADSTREAM_SCHEMAS_DIR")]
    schemas_dir: Option<PathBuf>,
}

pub async fn registry(args: ServeRegistryArgs) -> anyhow::Result<ExitCode> {
    let plan = match &args.schemas_dir {
        Some(dir) => Plan::load_dir(dir)?,
        None => Plan::embedded()?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the registry to {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, subjects = plan.subjects.len(), "schema registry serving the tracking plan");
    registry::serve(listener, Arc::new(plan), crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
