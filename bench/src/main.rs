//! `bench`: Cartwheel's load generator. It starts the real release server pinned to one core, pins itself to
//! another, and drives the server over loopback exactly as browsers do (session cookies, WebSockets, REST).
//!
//! ```sh
//! cargo build --release -p cartwheel-server -p cartwheel-bench
//! target/release/bench            # S1–S4
//! target/release/bench s3         # one scenario
//! target/release/bench custom --carts 10 --subscribers 100 --mutations 500 --rate 50
//! target/release/bench s2 --redis # the same through Redis: a redis-server and two instances sharing it
//! target/release/bench weight     # bundle sizes against bench/wasm-budget.json
//! ```

mod load;
mod process;
mod stats;
mod weight;

use std::path::PathBuf;

use clap::Parser;

use load::{Report, Scenario};
use process::{RedisProcess, ServerProcess};
use stats::ms;

#[derive(Parser)]
#[command(name = "bench", about = "Cartwheel load benchmark: fan-out latency, throughput, memory per connection")]
struct Args {
    /// Scenarios to run: s1, s2, s3, s4, all, or custom (with the flags below); or `weight` for the WASM report.
    #[arg(default_value = "all")]
    scenario: String,
    /// The server binary.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/server"))]
    server: PathBuf,
    /// Core for the server (the load generator takes the other); `none` leaves both unpinned.
    #[arg(long, default_value = "0")]
    server_core: String,
    #[arg(long, default_value_t = 1)]
    carts: usize,
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    #[arg(long, default_value_t = 100)]
    mutations: usize,
    /// Mutations per second; 0 = as fast as the server answers.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Run through Redis: start a redis-server (on the server core) and `--instances` servers sharing it.
    #[arg(long)]
    redis: bool,
    /// With `--redis`: how many server instances.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// `weight`: where cargo-leptos wrote the bundles.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/site"))]
    site_dir: PathBuf,
    /// `weight`: the budgets.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/wasm-budget.json"))]
    budget: PathBuf,
}

fn named(name: &str) -> Option<Scenario> {
    let s = |name: &str, carts, subscribers_per_cart, mutations, rate| Scenario {
        name: name.to_owned(),
        carts,
        subscribers_per_cart,
        mutations,
        rate,
    };
    Some(match name {
        "s1" => s("S1 1 cart × 1,000 subscribers, 200 mutations at 20/s", 1, 1000, 200, Some(20.0)),
        "s2" => s("S2 100 carts × 10 subscribers, 2,000 mutations at 200/s", 100, 10, 2000, Some(200.0)),
        "s3" => s("S3 1,000 carts × 10 subscribers, 2,000 mutations at 200/s", 1000, 10, 2000, Some(200.0)),
        "s4" => s("S4 10 carts × 1 subscriber, as fast as it goes", 10, 1, 20_000, None),
        _ => return None,
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.scenario == "weight" {
        return match weight::report(&args.site_dir, &args.budget) {
            Ok(failures) if failures.is_empty() => {
                println!("every bundle is within its budget ({})", args.budget.display());
                std::process::ExitCode::SUCCESS
            }
            Ok(failures) => {
                for f in failures {
                    eprintln!("OVER BUDGET: {f}");
                }
                std::process::ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("weight: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let files = process::raise_open_files();
    let server_core = args.server_core.parse::<usize>().ok();
    if let Some(core) = server_core {
        let mine = if core == 0 { 1 } else { 0 };
        if let Err(e) = process::pin_self(mine) {
            eprintln!("cannot pin the load generator: {e}");
        }
    }
    let scenarios: Vec<Scenario> = match args.scenario.as_str() {
        "all" => ["s1", "s2", "s3", "s4"].iter().filter_map(|n| named(n)).collect(),
        "custom" => vec![Scenario {
            name: format!(
                "custom {} carts × {} subscribers, {} mutations",
                args.carts, args.subscribers, args.mutations
            ),
            carts: args.carts,
            subscribers_per_cart: args.subscribers,
            mutations: args.mutations,
            rate: (args.rate > 0.0).then_some(args.rate),
        }],
        other => match named(other) {
            Some(s) => vec![s],
            None => {
                eprintln!("unknown scenario {other}: use s1, s2, s3, s4, all or custom");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "server {} pinned to core {}, load generator on the other; open-files limit {files}; rate limits off",
        args.server.display(),
        server_core.map_or("none".to_owned(), |c| c.to_string())
    );
    let mut ok = true;
    for scenario in scenarios {
        let result = runtime.block_on(async {
            let redis = if args.redis { Some(RedisProcess::start(server_core).await?) } else { None };
            let mut servers = Vec::new();
            match &redis {
                Some(redis) => {
                    let flags = ["--redis-url".to_owned(), redis.url.clone()];
                    for _ in 0..args.instances.max(1) {
                        servers.push(ServerProcess::start(&args.server, server_core, &flags).await?);
                    }
                }
                None => servers.push(ServerProcess::start(&args.server, server_core, &[]).await?),
            }
            let report = tokio::time::timeout(std::time::Duration::from_secs(600), load::run(&servers, &scenario))
                .await
                .map_err(|_| "scenario took longer than 10 minutes".to_owned())
                .and_then(|r| r);
            for server in servers {
                server.stop().await;
            }
            if let Some(redis) = redis {
                redis.stop().await;
            }
            report
        });
        match result {
            Ok(report) => {
                ok &= report.lost == 0 && report.connections_failed == 0 && report.post_failed == 0;
                let via = if args.redis {
                    format!(" — through Redis, {} instances", args.instances.max(1))
                } else {
                    String::new()
                };
                print_report(&scenario, &via, report);
            }
            Err(e) => {
                ok = false;
                eprintln!("{}: failed: {e}", scenario.name);
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

fn print_report(scenario: &Scenario, via: &str, mut r: Report) {
    let connections = r.connections_ok.max(1) as u64;
    let per_connection = r.rss_after.saturating_sub(r.rss_before) / connections;
    let throughput = r.mutations_done as f64 / r.mutation_seconds.max(1e-9);
    println!("\n== {}{}", scenario.name, via);
    println!(
        "connections {} ok, {} failed; handshake p50 {:.2} ms, p99 {:.2} ms",
        r.connections_ok,
        r.connections_failed,
        ms(r.handshake.quantile(0.5)),
        ms(r.handshake.quantile(0.99))
    );
    println!(
        "server RSS {:.1} MiB before sockets, {:.1} MiB after: {:.1} KiB per connection",
        r.rss_before as f64 / 1048576.0,
        r.rss_after as f64 / 1048576.0,
        per_connection as f64 / 1024.0
    );
    println!(
        "mutations {} ok, {} failed in {:.2} s: {:.0}/s; POST p50 {:.2} ms, p99 {:.2} ms; server CPU {:.0}%",
        r.mutations_done,
        r.post_failed,
        r.mutation_seconds,
        throughput,
        ms(r.post.quantile(0.5)),
        ms(r.post.quantile(0.99)),
        r.cpu_percent
    );
    println!(
        "fan-out over {} deliveries: p50 {:.3} ms, p90 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3}; lost {}",
        r.fanout.len(),
        ms(r.fanout.quantile(0.5)),
        ms(r.fanout.quantile(0.9)),
        ms(r.fanout.quantile(0.99)),
        ms(r.fanout.quantile(0.999)),
        ms(r.fanout.max()),
        r.lost
    );
    let bounds =
        |q: [f64; 3]| format!("p50 ≤ {:.3} ms, p99 ≤ {:.3} ms, p99.9 ≤ {:.3} ms", q[0] * 1e3, q[1] * 1e3, q[2] * 1e3);
    if let (Some(rtt), Some(lag)) = (r.redis_round_trip, r.redis_pubsub_lag) {
        println!("first instance (bucket bounds): Redis round trip {}; pub/sub lag {}", bounds(rtt), bounds(lag));
        println!("first instance: {}", r.redis_counters.join(", "));
    }
    if let Some([p50, p99, p999]) = r.server_fanout {
        println!(
            "server-side fan-out, commit → frame written (bucket bounds): p50 ≤ {:.3} ms, p99 ≤ {:.3} ms, p99.9 ≤ {:.3} ms",
            p50 * 1000.0,
            p99 * 1000.0,
            p999 * 1000.0
        );
    }
    println!(
        "PING→PONG p50 {:.3} ms, p99 {:.3} ms ({} samples)",
        ms(r.ping.quantile(0.5)),
        ms(r.ping.quantile(0.99)),
        r.ping.len()
    );
    let json = serde_json::json!({
        "scenario": scenario.name,
        "connections_ok": r.connections_ok,
        "connections_failed": r.connections_failed,
        "handshake_ms": {"p50": ms(r.handshake.quantile(0.5)), "p99": ms(r.handshake.quantile(0.99))},
        "rss_before_bytes": r.rss_before,
        "rss_after_bytes": r.rss_after,
        "bytes_per_connection": per_connection,
        "mutations_ok": r.mutations_done,
        "mutations_failed": r.post_failed,
        "mutations_per_sec": throughput,
        "post_ms": {"p50": ms(r.post.quantile(0.5)), "p99": ms(r.post.quantile(0.99))},
        "fanout_ms": {
            "p50": ms(r.fanout.quantile(0.5)), "p90": ms(r.fanout.quantile(0.9)), "p99": ms(r.fanout.quantile(0.99)),
            "p999": ms(r.fanout.quantile(0.999)), "max": ms(r.fanout.max())
        },
        "deliveries": r.deliveries,
        "lost": r.lost,
        "ping_ms": {"p50": ms(r.ping.quantile(0.5)), "p99": ms(r.ping.quantile(0.99))},
        "server_cpu_percent": r.cpu_percent,
        "server_fanout_ms_bucket_bounds": r.server_fanout.map(|q| q.map(|s| s * 1000.0)),
    });
    println!("{json}");
}
