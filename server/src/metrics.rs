//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    /// Open TCP connections (HTTP and WebSocket).
    pub connections_open: Gauge,
    /// Failed `accept`s: `kind="exhausted"` (out of descriptors or memory) or `"connection"` (one connection).
    pub accept_errors: Family<Labels, Counter>,
    /// WebSocket upgrades refused by a cap: `scope="session"` or `"address"`.
    pub ws_refused: Family<Labels, Counter>,
    /// Changes and upgrades refused for a foreign `Origin`.
    pub origin_refused: Counter,
    /// Changes made through the service API, by token name and `kind` (`product`, `notice`).
    pub service_changes: Family<Labels, Counter>,
    pub ws_connections_open: Gauge,
    pub ws_connections_total: Counter,
    pub ws_messages_sent: Counter,
    pub ws_disconnects: Family<Labels, Counter>,
    pub mutations: Family<Labels, Counter>,
    /// Seconds from a committed change being published to its frame being written to a socket.
    pub broadcast_latency: Histogram,
    pub slow_consumer_events: Counter,
    pub broadcast_lagged: Counter,
    pub notices_unpublished: Counter,
    pub notices_replayed: Counter,
    /// Help-chat messages stored, by `from` (`shopper`, `service`).
    pub chat_messages: Family<Labels, Counter>,
    /// Service connections on `/api/service/ws` open now.
    pub chat_services_open: Gauge,
    pub rate_limited: Counter,
    pub service_requests: Family<Labels, Counter>,
    pub checkouts: Family<Labels, Counter>,
    /// Redis mode: seconds per command or script, as the instance saw it.
    pub redis_round_trip: Histogram,
    /// Redis mode: seconds from an instance publishing a change to this instance receiving it.
    pub redis_pubsub_lag: Histogram,
    /// Redis mode: 1 while this instance's pub/sub subscription is up.
    pub redis_subscribed: Gauge,
    pub redis_resubscriptions: Counter,
    /// Redis mode: changes retried because another instance changed the same cart or the catalog first.
    pub redis_conflicts: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cartwheel");
        let connections_open = Gauge::default();
        let accept_errors = Family::<Labels, Counter>::default();
        let ws_refused = Family::<Labels, Counter>::default();
        let origin_refused = Counter::default();
        let service_changes = Family::<Labels, Counter>::default();
        registry.register("service_changes", "Service API changes by token name and kind", service_changes.clone());
        registry.register("origin_refused", "Requests refused for a foreign Origin", origin_refused.clone());
        registry.register("connections_open", "Open TCP connections (HTTP and WebSocket)", connections_open.clone());
        registry.register("accept_errors", "Failed accepts by kind", accept_errors.clone());
        registry.register("ws_refused", "WebSocket upgrades refused by a cap, by scope", ws_refused.clone());
        let ws_connections_open = Gauge::default();
        let ws_connections_total = Counter::default();
        let ws_messages_sent = Counter::default();
        let ws_disconnects = Family::<Labels, Counter>::default();
        let mutations = Family::<Labels, Counter>::default();
        // 50 µs .. ~1.6 s
        let broadcast_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let slow_consumer_events = Counter::default();
        let broadcast_lagged = Counter::default();
        let notices_unpublished = Counter::default();
        let notices_replayed = Counter::default();
        let chat_messages = Family::<Labels, Counter>::default();
        let chat_services_open = Gauge::default();
        let rate_limited = Counter::default();
        let service_requests = Family::<Labels, Counter>::default();
        let checkouts = Family::<Labels, Counter>::default();
        let redis_round_trip = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let redis_pubsub_lag = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let redis_subscribed = Gauge::default();
        let redis_resubscriptions = Counter::default();
        let redis_conflicts = Counter::default();
        registry.register("ws_connections_open", "Open WebSocket connections", ws_connections_open.clone());
        registry.register("ws_connections", "WebSocket connections accepted", ws_connections_total.clone());
        registry.register("ws_messages_sent", "WebSocket messages sent", ws_messages_sent.clone());
        registry.register("ws_disconnects", "WebSocket disconnections by reason", ws_disconnects.clone());
        registry.register("cart_mutations", "Cart mutation requests by outcome", mutations.clone());
        registry.register(
            "broadcast_latency_seconds",
            "Time from a committed cart change to its frame written to each subscriber",
            broadcast_latency.clone(),
        );
        registry.register(
            "ws_slow_consumer_events",
            "Times a connection's update queue overflowed and was replaced by the newest snapshot",
            slow_consumer_events.clone(),
        );
        registry.register(
            "ws_broadcast_lagged",
            "Times a connection fell a whole broadcast ring behind and was sent every product again",
            broadcast_lagged.clone(),
        );
        registry.register(
            "notices_unpublished",
            "Stored notices that could not be passed on to the other instances live (sent on their next connect)",
            notices_unpublished.clone(),
        );
        registry.register(
            "notices_replayed",
            "Stored notices sent on a (re)connect or after a connection fell behind, not live",
            notices_replayed.clone(),
        );
        registry.register("chat_messages", "Help-chat messages stored, by sender", chat_messages.clone());
        registry.register(
            "chat_services_open",
            "Service connections open on this instance",
            chat_services_open.clone(),
        );
        registry.register("http_rate_limited", "Requests refused with 429", rate_limited.clone());
        registry.register("service_requests", "Service API requests by endpoint and outcome", service_requests.clone());
        registry.register("checkouts", "Checkouts by outcome", checkouts.clone());
        registry.register("redis_round_trip_seconds", "Redis command and script round trips", redis_round_trip.clone());
        registry.register(
            "redis_pubsub_lag_seconds",
            "Time from an instance publishing a change to this instance receiving it",
            redis_pubsub_lag.clone(),
        );
        registry.register("redis_subscribed", "1 while the Redis pub/sub subscription is up", redis_subscribed.clone());
        registry.register(
            "redis_resubscriptions",
            "Times the pub/sub subscription came back and local carts were re-sent",
            redis_resubscriptions.clone(),
        );
        registry.register(
            "redis_conflicts",
            "Changes retried because another instance changed the same cart or the catalog first",
            redis_conflicts.clone(),
        );
        Metrics {
            registry,
            connections_open,
            accept_errors,
            ws_refused,
            origin_refused,
            service_changes,
            ws_connections_open,
            ws_connections_total,
            ws_messages_sent,
            ws_disconnects,
            mutations,
            broadcast_latency,
            slow_consumer_events,
            broadcast_lagged,
            notices_unpublished,
            notices_replayed,
            chat_messages,
            chat_services_open,
            rate_limited,
            service_requests,
            checkouts,
            redis_round_trip,
            redis_pubsub_lag,
            redis_subscribed,
            redis_resubscriptions,
            redis_conflicts,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
