//! `bench`: Cartwheel's load generator. It starts the real release server pinned to one core, pins itself to
//! another, and drives the server over loopback exactly as browsers do (session cookies, WebSockets, REST).
//! With `--peer node-ws` it runs every scenario against the peer too (`../shared/peers/node-ws`), one after
//! the other in the same run, and prints ours as a ratio to it.
//!
//! ```sh
//! cargo build --release -p cartwheel-server -p cartwheel-bench
//! target/release/bench                       # S1–S7 against ours
//! target/release/bench all --peer node-ws    # S1–S7, each against node-ws and ours, with the ratios
//! target/release/bench s5 --peer node-ws     # one scenario
//! target/release/bench custom --carts 10 --subscribers 100 --mutations 500 --rate 50
//! target/release/bench s2 --redis            # the same through Redis: a redis-server and two instances sharing it
//! target/release/bench weight                # bundle sizes against bench/wasm-budget.json
//! ```

mod idle;
mod load;
mod process;
mod restart;
mod socket;
mod stats;
mod target;
mod weight;

use std::path::PathBuf;

use clap::Parser;

use idle::IdleReport;
use load::{Report, Scenario, Storm};
use process::{Flavor, RedisProcess, ServerProcess};
use restart::RestartReport;
use stats::ms;

#[derive(Parser)]
#[command(name = "bench", about = "Cartwheel load benchmark: fan-out latency, throughput, memory per connection")]
struct Args {
    /// Scenarios: s1 … s7, all, or custom (with the flags below); or `weight` for the WASM report.
    #[arg(default_value = "all")]
    scenario: String,
    /// The server binary.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/server"))]
    server: PathBuf,
    /// Also run each scenario against this peer (only `node-ws`), and print ours as a ratio to it.
    #[arg(long)]
    peer: Option<String>,
    /// Where the peer's sources are (read-only is fine: they are copied).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/peers/node-ws"))]
    peer_source: PathBuf,
    /// Where the peer is installed (`npm ci`) and run from.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-peers/node-ws"))]
    peer_install: PathBuf,
    /// Core for the server (the load generator takes the other); `none` leaves both unpinned.
    #[arg(long, default_value = "0")]
    server_core: String,
    #[arg(long, default_value_t = 1)]
    carts: usize,
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    #[arg(long, default_value_t = 100)]
    mutations: usize,
    /// Changes per second; 0 = as fast as the server answers.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// S7: idle connections to open (capped by the open-file limit, which the report states).
    #[arg(long, default_value_t = 100_000)]
    connections: usize,
    /// An extra flag for our server (repeatable), e.g. `--server-arg=--presence-interval-ms=600000`.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
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

/// What a scenario is: cart traffic (S1–S5), a restart (S6), or idle connections (S7).
#[derive(Debug, Clone)]
enum Kind {
    Traffic(Scenario),
    Restart { carts: usize, per_cart: usize },
    Idle { connections: usize },
}

fn named(name: &str, connections: usize) -> Option<(String, Kind)> {
    let traffic = |title: &str, carts, subscribers_per_cart, mutations, rate, storm| {
        let scenario = Scenario { carts, subscribers_per_cart, mutations, rate, storm };
        (title.to_owned(), Kind::Traffic(scenario))
    };
    Some(match name {
        "s1" => traffic("S1 1 cart × 1,000 subscribers, 200 changes at 20/s", 1, 1000, 200, Some(20.0), None),
        "s2" => traffic("S2 100 carts × 10 subscribers, 2,000 changes at 200/s", 100, 10, 2000, Some(200.0), None),
        "s3" => traffic("S3 1,000 carts × 10 subscribers, 2,000 changes at 200/s", 1000, 10, 2000, Some(200.0), None),
        "s4" => traffic("S4 10 carts × 1 subscriber, as fast as it goes", 10, 1, 20_000, None, None),
        // S3's cart traffic for 30 s; from the 10th second a service PATCHes one product 100/s for 20 s.
        "s5" => traffic(
            "S5 flash sale: 1,000 carts × 10, 6,000 changes at 200/s, one product PATCHed 100/s for 20 s",
            1000,
            10,
            6000,
            Some(200.0),
            Some(Storm { per_second: 100.0, seconds: 20.0, after: 10.0 }),
        ),
        "s6" => (
            "S6 reconnect storm: 1,000 carts × 10, server restarted".to_owned(),
            Kind::Restart { carts: 1000, per_cart: 10 },
        ),
        "s7" => (format!("S7 {connections} idle connections, one product broadcast"), Kind::Idle { connections }),
        _ => return None,
    })
}

enum Outcome {
    Traffic(Report),
    Restart(RestartReport),
    Idle(IdleReport),
}

/// Whether a smaller figure is the better one (the ratio's reading).
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// The figures a scenario is compared on: (name, value, which way is better).
fn headline(outcome: &mut Outcome) -> Vec<(&'static str, f64, Better)> {
    use Better::*;
    match outcome {
        Outcome::Traffic(r) => {
            let mut rows = vec![
                ("cart fan-out p99 (ms)", ms(r.fanout.quantile(0.99)), Lower),
                ("changes per second", r.mutations_done as f64 / r.mutation_seconds.max(1e-9), Higher),
                ("KiB per connection", kib_per(r.rss_after.saturating_sub(r.rss_before), r.connections_ok), Lower),
                ("connections lost or dropped", (r.lost as usize + r.dropped + r.connections_failed) as f64, Lower),
            ];
            if let Some(s) = r.storm.as_mut() {
                rows.push(("product revision to every connection p50 (ms)", ms(s.everyone.quantile(0.5)), Lower));
                rows.push(("product revision to every connection p99 (ms)", ms(s.everyone.quantile(0.99)), Lower));
                rows.push(("product revision to every connection max (ms)", ms(s.everyone.max()), Lower));
                rows.push(("cart fan-out p99 during the storm (ms)", ms(s.fanout.quantile(0.99)), Lower));
                rows.push(("connections not on the final revision", s.left_behind as f64, Lower));
                rows.push(("PATCHes per second taken", s.patches as f64 / s.seconds.max(1e-9), Higher));
                rows.push((
                    "server RSS growth during the storm (MiB)",
                    mib(s.rss_after.saturating_sub(s.rss_before)),
                    Lower,
                ));
            }
            rows
        }
        Outcome::Restart(r) => vec![
            ("50% reconnected (s)", secs(r.reconnected.quantile(0.5)), Lower),
            ("99% reconnected (s)", secs(r.reconnected.quantile(0.99)), Lower),
            ("100% reconnected (s)", if r.never > 0 { f64::INFINITY } else { secs(r.reconnected.max()) }, Lower),
            ("reconnect handshake p99 (ms)", ms(r.handshake.quantile(0.99)), Lower),
            ("failed handshakes", r.failed_handshakes as f64, Lower),
            ("liveness p99 during the storm (ms)", ms(r.health.quantile(0.99)), Lower),
        ],
        Outcome::Idle(r) => vec![
            ("connections held", r.held as f64, Higher),
            ("KiB per connection", kib_per(r.rss_after.saturating_sub(r.rss_before), r.held), Lower),
            ("broadcast to every connection (ms)", ms(r.broadcast.max()), Lower),
            ("broadcast p99 (ms)", ms(r.broadcast.quantile(0.99)), Lower),
            ("connections missed", r.missed as f64, Lower),
        ],
    }
}

fn kib_per(bytes: u64, n: usize) -> f64 {
    bytes as f64 / 1024.0 / n.max(1) as f64
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
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
    if let Some(peer) = args.peer.as_deref().filter(|p| *p != "node-ws") {
        eprintln!("unknown peer {peer}: the only one is node-ws");
        return std::process::ExitCode::FAILURE;
    }
    let files = process::raise_open_files();
    let server_core = args.server_core.parse::<usize>().ok();
    if let Some(core) = server_core {
        let mine = if core == 0 { 1 } else { 0 };
        if let Err(e) = process::pin_self(mine) {
            eprintln!("cannot pin the load generator: {e}");
        }
    }
    let scenarios: Vec<(String, Kind)> = match args.scenario.as_str() {
        "all" => ["s1", "s2", "s3", "s4", "s5", "s6", "s7"].iter().filter_map(|n| named(n, args.connections)).collect(),
        "custom" => {
            let name =
                format!("custom {} carts × {} subscribers, {} changes", args.carts, args.subscribers, args.mutations);
            let scenario = Scenario {
                carts: args.carts,
                subscribers_per_cart: args.subscribers,
                mutations: args.mutations,
                rate: (args.rate > 0.0).then_some(args.rate),
                storm: None,
            };
            vec![(name, Kind::Traffic(scenario))]
        }
        other => match named(other, args.connections) {
            Some(s) => vec![s],
            None => {
                eprintln!("unknown scenario {other}: use s1 … s7, all or custom");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    if args.peer.is_some() && args.redis {
        eprintln!("--peer and --redis do not go together: the peer has no shared store");
        return std::process::ExitCode::FAILURE;
    }
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
    let mut flavors = Vec::new();
    if args.peer.is_some() {
        flavors.push(Flavor::NodeWs);
    }
    flavors.push(Flavor::Ours);
    let mut ok = true;
    let mut table: Vec<(String, &'static str, Vec<f64>, Better)> = Vec::new();
    for (name, kind) in scenarios {
        let mut figures: Vec<Vec<(&'static str, f64, Better)>> = Vec::new();
        for &flavor in &flavors {
            let result = runtime.block_on(run_one(&args, flavor, server_core, files, &kind));
            match result {
                Ok(mut outcome) => {
                    ok &= succeeded(&outcome, flavor);
                    print_outcome(&name, flavor, &args, &mut outcome);
                    figures.push(headline(&mut outcome));
                }
                Err(e) => {
                    ok = false;
                    eprintln!("{name} ({}): failed: {e}", flavor.label());
                }
            }
        }
        if figures.len() == flavors.len() {
            for (i, (metric, _, better)) in figures[0].iter().enumerate() {
                table.push((name.clone(), metric, figures.iter().map(|f| f[i].1).collect(), *better));
            }
        }
    }
    print_table(&flavors, &table);
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Ours must lose nothing; the peer's losses are figures, not failures of the bench.
fn succeeded(outcome: &Outcome, flavor: Flavor) -> bool {
    if flavor != Flavor::Ours {
        return true;
    }
    match outcome {
        Outcome::Traffic(r) => {
            r.lost == 0
                && r.connections_failed == 0
                && r.post_failed == 0
                && r.storm.as_ref().is_none_or(|s| s.left_behind == 0)
        }
        Outcome::Restart(r) => r.never == 0,
        Outcome::Idle(r) => r.missed == 0 && r.failed == 0,
    }
}

async fn run_one(
    args: &Args,
    flavor: Flavor,
    server_core: Option<usize>,
    files: u64,
    kind: &Kind,
) -> Result<Outcome, String> {
    // Dirty pages from a build just before would be written back during the run and stall our commits'
    // fsyncs by a hundred milliseconds and more: start from a clean page cache.
    unsafe {
        libc::sync();
    }
    let redis = if args.redis { Some(RedisProcess::start(server_core).await?) } else { None };
    let mut servers = Vec::new();
    match (&redis, flavor) {
        (_, Flavor::NodeWs) => {
            servers.push(ServerProcess::start_peer(&args.peer_source, &args.peer_install, server_core).await?)
        }
        (Some(redis), Flavor::Ours) => {
            let mut flags = vec!["--redis-url".to_owned(), redis.url.clone()];
            flags.extend(args.server_arg.iter().cloned());
            for _ in 0..args.instances.max(1) {
                servers.push(ServerProcess::start(&args.server, server_core, &flags).await?);
            }
        }
        (None, Flavor::Ours) => servers.push(ServerProcess::start(&args.server, server_core, &args.server_arg).await?),
    }
    let limit = std::time::Duration::from_secs(600);
    let outcome = match kind {
        Kind::Traffic(scenario) => {
            tokio::time::timeout(limit, load::run(&servers, scenario)).await.map(|r| r.map(Outcome::Traffic))
        }
        Kind::Restart { carts, per_cart } => {
            tokio::time::timeout(limit, restart::run(&mut servers[0], *carts, *per_cart))
                .await
                .map(|r| r.map(Outcome::Restart))
        }
        Kind::Idle { connections } => {
            tokio::time::timeout(limit, idle::run(&servers[0], *connections, files)).await.map(|r| r.map(Outcome::Idle))
        }
    }
    .map_err(|_| "scenario took longer than 10 minutes".to_owned())
    .and_then(|r| r);
    for server in servers {
        server.stop().await;
    }
    if let Some(redis) = redis {
        redis.stop().await;
    }
    outcome
}

fn print_table(flavors: &[Flavor], table: &[(String, &'static str, Vec<f64>, Better)]) {
    if table.is_empty() {
        return;
    }
    let with_peer = flavors.len() > 1;
    println!("\n== summary");
    if with_peer {
        println!("| scenario | figure | node-ws | ours | ours / node-ws |\n|---|---|---|---|---|");
    } else {
        println!("| scenario | figure | ours |\n|---|---|---|");
    }
    for (scenario, metric, values, better) in table {
        let short = scenario.split(':').next().unwrap_or(scenario).split(' ').next().unwrap_or(scenario);
        let cells: Vec<String> = values.iter().map(|v| figure(*v)).collect();
        if with_peer {
            let (peer, ours) = (values[0], values[1]);
            let ratio = if peer > 0.0 && peer.is_finite() && ours.is_finite() {
                format!("{:.2}×", ours / peer)
            } else {
                "—".to_owned()
            };
            let reading = match better {
                Better::Lower => "lower is better",
                Better::Higher => "higher is better",
            };
            println!("| {short} | {metric} ({reading}) | {} | {} | {ratio} |", cells[0], cells[1]);
            let json = serde_json::json!({"scenario": scenario, "figure": metric, "node_ws": peer, "ours": ours,
                "ratio": if peer > 0.0 { serde_json::json!(ours / peer) } else { serde_json::Value::Null }});
            println!("{json}");
        } else {
            println!("| {short} | {metric} | {} |", cells[0]);
        }
    }
}

fn figure(v: f64) -> String {
    if !v.is_finite() {
        "never".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn print_outcome(name: &str, flavor: Flavor, args: &Args, outcome: &mut Outcome) {
    let via = match (flavor, args.redis) {
        (Flavor::NodeWs, _) => " — node-ws".to_owned(),
        (Flavor::Ours, true) => format!(" — ours, through Redis, {} instances", args.instances.max(1)),
        (Flavor::Ours, false) => " — ours".to_owned(),
    };
    println!("\n== {name}{via}");
    let json = match outcome {
        Outcome::Traffic(r) => print_traffic(r),
        Outcome::Restart(r) => print_restart(r),
        Outcome::Idle(r) => print_idle(r),
    };
    let mut json = json;
    json["scenario"] = serde_json::json!(name);
    json["server"] = serde_json::json!(flavor.label());
    println!("{json}");
}

fn print_restart(r: &mut RestartReport) -> serde_json::Value {
    println!(
        "{} connections ({} failed to open); SIGTERM → old process gone {:.2} s, new one listening {:.2} s",
        r.connections,
        r.connections_failed,
        r.exit.as_secs_f64(),
        r.ready.as_secs_f64()
    );
    println!(
        "reconnected after the SIGTERM: 50% {:.2} s, 99% {:.2} s, 100% {:.2} s; never {}; schedule's cap {:.1} s",
        secs(r.reconnected.quantile(0.5)),
        secs(r.reconnected.quantile(0.99)),
        secs(r.reconnected.max()),
        r.never,
        r.schedule_cap.as_secs_f64()
    );
    println!(
        "handshake p50 {:.2} ms, p99 {:.2} ms; attempts refused while down {}, failed handshakes {}, new sessions {}",
        ms(r.handshake.quantile(0.5)),
        ms(r.handshake.quantile(0.99)),
        r.refused,
        r.failed_handshakes,
        r.new_sessions
    );
    for (failure, count) in &r.failures {
        println!("first failed handshake of {count} clients: {failure}");
    }
    if !r.never_by_phase.is_empty() {
        println!("never reconnected, by where they were: {:?}", r.never_by_phase);
    }
    println!(
        "liveness during the storm: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} answers, {} failed",
        ms(r.health.quantile(0.5)),
        ms(r.health.quantile(0.99)),
        ms(r.health.max()),
        r.health.len(),
        r.health_failed
    );
    serde_json::json!({
        "connections": r.connections, "exit_s": r.exit.as_secs_f64(), "ready_s": r.ready.as_secs_f64(),
        "reconnected_s": {"p50": secs(r.reconnected.quantile(0.5)), "p99": secs(r.reconnected.quantile(0.99)), "max": secs(r.reconnected.max())},
        "never": r.never, "handshake_ms": {"p50": ms(r.handshake.quantile(0.5)), "p99": ms(r.handshake.quantile(0.99))},
        "refused": r.refused, "failed_handshakes": r.failed_handshakes, "new_sessions": r.new_sessions,
        "liveness_ms": {"p50": ms(r.health.quantile(0.5)), "p99": ms(r.health.quantile(0.99)), "max": ms(r.health.max())},
        "liveness_failed": r.health_failed, "schedule_cap_s": r.schedule_cap.as_secs_f64(),
    })
}

fn print_idle(r: &mut IdleReport) -> serde_json::Value {
    println!(
        "asked for {} connections, held {} ({} failed) from {} loopback source addresses in {:.1} s{}",
        r.asked,
        r.held,
        r.failed,
        r.sources,
        r.connect_seconds,
        r.cap_reason.as_deref().map(|c| format!(" — capped: {c}")).unwrap_or_default()
    );
    println!(
        "server RSS {:.1} MiB before, {:.1} MiB after: {:.2} KiB per connection",
        mib(r.rss_before),
        mib(r.rss_after),
        kib_per(r.rss_after.saturating_sub(r.rss_before), r.held)
    );
    println!(
        "one product change to every connection: p50 {:.1} ms, p99 {:.1} ms, all {:.1} ms; missed {}",
        ms(r.broadcast.quantile(0.5)),
        ms(r.broadcast.quantile(0.99)),
        ms(r.broadcast.max()),
        r.missed
    );
    serde_json::json!({
        "asked": r.asked, "held": r.held, "failed": r.failed, "cap_reason": r.cap_reason, "sources": r.sources,
        "rss_before_bytes": r.rss_before, "rss_after_bytes": r.rss_after,
        "kib_per_connection": kib_per(r.rss_after.saturating_sub(r.rss_before), r.held),
        "broadcast_ms": {"p50": ms(r.broadcast.quantile(0.5)), "p99": ms(r.broadcast.quantile(0.99)), "max": ms(r.broadcast.max())},
        "missed": r.missed,
    })
}

fn print_traffic(r: &mut Report) -> serde_json::Value {
    let connections = r.connections_ok.max(1) as u64;
    let per_connection = r.rss_after.saturating_sub(r.rss_before) / connections;
    let throughput = r.mutations_done as f64 / r.mutation_seconds.max(1e-9);
    println!(
        "connections {} ok, {} failed, {} dropped by the server; handshake p50 {:.2} ms, p99 {:.2} ms",
        r.connections_ok,
        r.connections_failed,
        r.dropped,
        ms(r.handshake.quantile(0.5)),
        ms(r.handshake.quantile(0.99))
    );
    println!(
        "server RSS {:.1} MiB before sockets, {:.1} MiB after: {:.1} KiB per connection",
        mib(r.rss_before),
        mib(r.rss_after),
        per_connection as f64 / 1024.0
    );
    println!(
        "changes {} ok, {} failed in {:.2} s: {:.0}/s; request p50 {:.2} ms, p99 {:.2} ms; server CPU {:.0}%",
        r.mutations_done,
        r.post_failed,
        r.mutation_seconds,
        throughput,
        ms(r.post.quantile(0.5)),
        ms(r.post.quantile(0.99)),
        r.cpu_percent
    );
    let label = if r.storm.is_some() { "cart fan-out before the storm" } else { "fan-out" };
    println!(
        "{label} over {} deliveries: p50 {:.3} ms, p90 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3}; lost {}",
        r.fanout.len(),
        ms(r.fanout.quantile(0.5)),
        ms(r.fanout.quantile(0.9)),
        ms(r.fanout.quantile(0.99)),
        ms(r.fanout.quantile(0.999)),
        ms(r.fanout.max()),
        r.lost
    );
    let storm = r.storm.as_mut().map(|s| {
        println!(
            "storm: {} PATCHes in {:.1} s ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms; each revision to every connection: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            s.patches,
            s.seconds,
            s.patches as f64 / s.seconds.max(1e-9),
            ms(s.patch.quantile(0.5)),
            ms(s.patch.quantile(0.99)),
            ms(s.everyone.quantile(0.5)),
            ms(s.everyone.quantile(0.99)),
            ms(s.everyone.max())
        );
        println!(
            "storm: cart fan-out during it p50 {:.3} ms, p99 {:.3} ms over {} deliveries; {} connections not on the final revision; \
             {} product frames received ({:.0}% of patches × connections); server RSS {:.1} → {:.1} MiB",
            ms(s.fanout.quantile(0.5)),
            ms(s.fanout.quantile(0.99)),
            s.fanout.len(),
            s.left_behind,
            s.product_frames,
            100.0 * s.product_frames as f64 / (s.patches.max(1) * r.connections_ok.max(1)) as f64,
            mib(s.rss_before),
            mib(s.rss_after)
        );
        serde_json::json!({
            "patches": s.patches, "storm_seconds": s.seconds, "patch_ms": {"p50": ms(s.patch.quantile(0.5)), "p99": ms(s.patch.quantile(0.99))},
            "revision_to_everyone_ms": {"p50": ms(s.everyone.quantile(0.5)), "p99": ms(s.everyone.quantile(0.99)), "max": ms(s.everyone.max())},
            "cart_fanout_ms": {"p50": ms(s.fanout.quantile(0.5)), "p99": ms(s.fanout.quantile(0.99))},
            "left_behind": s.left_behind, "product_frames": s.product_frames,
            "rss_before_bytes": s.rss_before, "rss_after_bytes": s.rss_after,
        })
    });
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
    serde_json::json!({
        "connections_ok": r.connections_ok,
        "connections_failed": r.connections_failed,
        "dropped": r.dropped,
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
        "storm": storm,
    })
}
