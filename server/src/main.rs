//! `server`: run Cartwheel's cart server. `server --help` lists every flag and its environment variable.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cartwheel_server::config::Config;
use cartwheel_server::{shutdown_signal, Server};

/// mimalloc rather than glibc's allocator. Measured (docs/performance.md, issue 20): under a stream of cart
/// changes glibc's `malloc`/`free`/`malloc_consolidate` took an eighth of the server's time, and with mimalloc
/// the same server commits 60 % more changes a second; an open connection costs 3.2–3.6 KiB of resident memory
/// instead of 5.1 (size-segregated pages: the handshake's short-lived buffers no longer fragment the heap under
/// what each connection keeps). The price is a larger resident floor: about 78 MiB at start instead of 15.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
