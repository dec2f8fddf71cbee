//! `vultr-sim`: serve the simulator on a socket until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use vultr_sim::{ListingShape, OrgConfig, RateLimit, Seed, Sim, SimConfig};

/// In-memory simulator of the Vultr IAM API. Prints `listening on http://ADDR`.
#[derive(Debug, Parser)]
#[command(name = "vultr-sim", version)]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// API key with full access to the default organisation (repeatable; default
    /// "test-key").
    #[arg(long = "api-key", env = "VULTR_SIM_API_KEYS", value_delimiter = ',')]
    api_keys: Vec<String>,
    /// API key of the default organisation that gets 403 on POST and DELETE (repeatable).
    #[arg(long = "read-only-key")]
    read_only_keys: Vec<String>,
    /// Requests per second over all /v2 requests of every organisation; 0 turns the
    /// limit off.
    #[arg(long, default_value_t = 30.0)]
    rate_limit: f64,
    /// Bucket size; defaults to the rate rounded up.
    #[arg(long)]
    burst: Option<u32>,
    /// Shape of the attachment listings: govultr or relationships.
    #[arg(long, default_value = "govultr")]
    listing_shape: ListingShape,
    /// Seed of the default organisation, YAML or JSON (by extension).
    #[arg(long, conflicts_with = "demo")]
    seed: Option<PathBuf>,
    /// Load the demo organisation as the default one.
    #[arg(long)]
    demo: bool,
    /// Name of the default organisation (GET /v2/account, ?org= in /_sim).
    #[arg(long)]
    org_name: Option<String>,
    /// Email of the default organisation (GET /v2/account).
    #[arg(long)]
    org_email: Option<String>,
    /// One more organisation, YAML or JSON (by extension): name, email, api_keys,
    /// read_only_keys, seed (repeatable).
    #[arg(long = "org")]
    orgs: Vec<PathBuf>,
}

fn config(args: Args) -> Result<SimConfig, Box<dyn std::error::Error>> {
    let seed = match (&args.seed, args.demo) {
        (Some(path), _) => Seed::from_file(path)?,
        (None, true) => Seed::demo(),
        (None, false) => Seed::default(),
    };
    let organisations = args
        .orgs
        .iter()
        .map(OrgConfig::from_file)
        .collect::<Result<Vec<_>, _>>()?;
    let defaults = SimConfig::default();
    let rate_limit = (args.rate_limit > 0.0).then(|| RateLimit {
        per_second: args.rate_limit,
        burst: args
            .burst
            .unwrap_or_else(|| args.rate_limit.ceil().clamp(1.0, f64::from(u32::MAX)) as u32),
    });
    Ok(SimConfig {
        listen: args.listen,
        api_keys: if args.api_keys.is_empty() {
            defaults.api_keys
        } else {
            args.api_keys
        },
        read_only_keys: args.read_only_keys,
        rate_limit,
        listing_shape: args.listing_shape,
        seed,
        org_name: args.org_name.unwrap_or(defaults.org_name),
        org_email: args.org_email.unwrap_or(defaults.org_email),
        organisations,
    })
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs go to stderr: stdout carries only the "listening on" line for scripts.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "vultr_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = config(Args::parse())?;
    let orgs = 1 + config.organisations.len();
    let limit = config.rate_limit;
    let sim = Sim::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.url())?;
        out.flush()?;
    }
    tracing::info!(addr = %sim.addr(), orgs, ?limit, "vultr-sim serving");
    terminated().await;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}
