//! `server`: run Cartwheel's cart server. `server --help` lists every flag and its environment variable.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cartwheel_server::config::Config;
use cartwheel_server::{shutdown_signal, Server};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    // Never the Redis URL itself: it may carry a password.
    let store = match &config.redis_url {
        Some(_) => "redis (shared with the other instances)".to_owned(),
        None => config.database.display().to_string(),
    };
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = server.local_addr() {
        tracing::info!(store, "Cartwheel serving on http://{addr}");
    }
    match server.run(shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}
