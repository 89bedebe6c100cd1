//! `/metrics`: the counters of `/stats` (summed over the workers) and the
//! process's own, in the OpenMetrics text format that Prometheus scrapes,
//! encoded by `prometheus-client`. Every name starts `switchboard_`; counters
//! end `_total`, and a unit, when there is one, is in the name (`_bytes`,
//! `_seconds`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

/// Whether a figure only grows (a counter) or goes up and down (a gauge).
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

use Kind::{Counter, Gauge};

/// Each metric: where it is in `/stats`, its name, kind, unit and help.
const METRICS: &[(&str, &str, Kind, Option<Unit>, &str)] = &[
    ("/turn/allocations", "turn_allocations", Gauge, None, "TURN allocations now"),
    ("/turn/allocations_created", "turn_allocations_created", Counter, None, "TURN allocations made"),
    ("/turn/allocations_expired", "turn_allocations_expired", Counter, None, "TURN allocations that expired"),
    ("/turn/to_peer_packets", "turn_relayed_to_peer_packets", Counter, None, "Packets relayed from clients to peers"),
    ("/turn/to_client_packets", "turn_relayed_to_client_packets", Counter, None, "Packets relayed from peers to clients"),
    ("/turn/to_peer_bytes", "turn_relayed_to_peer", Counter, Some(Unit::Bytes), "Payload relayed from clients to peers"),
    ("/turn/to_client_bytes", "turn_relayed_to_client", Counter, Some(Unit::Bytes), "Payload relayed from peers to clients"),
    ("/turn/requests", "turn_requests", Counter, None, "TURN requests handled"),
    ("/turn/error_responses", "turn_error_responses", Counter, None, "TURN error responses sent"),
    ("/turn/dropped_malformed", "turn_dropped_malformed", Counter, None, "Datagrams dropped: malformed"),
    ("/turn/dropped_no_allocation", "turn_dropped_no_allocation", Counter, None, "Data dropped: no allocation or channel"),
    ("/turn/dropped_no_permission", "turn_dropped_no_permission", Counter, None, "Data dropped: no permission"),
    ("/turn/dropped_rate_limited", "turn_dropped_rate_limited", Counter, None, "Data dropped: over the allocation's max-bps"),
    ("/turn/challenges_rate_limited", "turn_challenges_rate_limited", Counter, None, "401 answers not sent: over the per-address rate"),
    ("/turn/tcp_connections", "turn_tcp_relay_connections", Gauge, None, "TCP relay connections to peers now (RFC 6062)"),
    ("/turn/tcp_connect_failures", "turn_tcp_connect_failures", Counter, None, "TCP relay connections to peers that failed (447)"),
    ("/stream_handoffs", "turn_stream_handoffs", Counter, None, "TCP relay data connections handed to their allocation's worker"),
    ("/turn/stun/binding_requests", "stun_binding_requests", Counter, None, "STUN Binding requests answered"),
    ("/streams", "turn_stream_connections", Gauge, None, "TURN over TCP and TLS connections now"),
    ("/signal/rooms", "signal_rooms", Gauge, None, "Signaling rooms now"),
    ("/signal/connections", "signal_connections", Gauge, None, "Signaling WebSocket connections now"),
    ("/signal/peers", "signal_peers", Gauge, None, "Peers in rooms now"),
    ("/signal/messages_in", "signal_messages_in", Counter, None, "Signaling messages received"),
    ("/signal/messages_out", "signal_messages_out", Counter, None, "Signaling messages sent"),
    ("/signal/errors", "signal_errors", Counter, None, "Signaling error replies"),
    ("/signal/rate_limited", "signal_rate_limited", Counter, None, "Signaling messages dropped by the rate limit"),
    ("/sfu/participants", "sfu_participants", Gauge, None, "SFU participants now"),
    ("/sfu/forwarded_packets", "sfu_forwarded_packets", Counter, None, "RTP packets forwarded (each subscriber counted)"),
    ("/sfu/unrouted_datagrams", "sfu_unrouted_datagrams", Counter, None, "Media datagrams that matched no participant"),
    ("/sfu/keyframe_requests", "sfu_keyframe_requests", Counter, None, "Keyframe requests forwarded to publishers"),
    ("/sfu/layer_switches", "sfu_layer_switches", Counter, None, "Simulcast layer switches"),
    ("/sfu/offers_resent", "sfu_offers_resent", Counter, None, "SFU offers sent again for want of an answer"),
    ("/connections/refused_total", "connections_refused_at_total_cap", Counter, None, "Connections refused: the server was full"),
    ("/connections/refused_per_ip", "connections_refused_at_address_cap", Counter, None, "Connections refused: their address was full"),
    ("/connections/header_timeouts", "connections_header_timeouts", Counter, None, "Connections closed for a slow request head"),
    ("/connections/idle_timeouts", "connections_idle_timeouts", Counter, None, "Connections closed for idling"),
];

/// The metrics page for `stats` (the summed `/stats` JSON).
pub fn render(stats: &Value) -> String {
    let mut r = Registry::with_prefix("switchboard");
    for (path, name, kind, unit, help) in METRICS {
        let Some(v) = stats.pointer(path).and_then(Value::as_u64) else { continue };
        match (kind, unit) {
            (Counter, None) => r.register(*name, *help, ConstCounter::new(v)),
            (Counter, Some(u)) => r.register_with_unit(*name, *help, u.clone(), ConstCounter::new(v)),
            (Gauge, _) => r.register(*name, *help, ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))),
        }
    }
    let workers = stats["workers"].as_array().map_or(0, Vec::len);
    r.register("workers", "Worker threads", ConstGauge::new(workers as i64));
    process(&mut r);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// The process's own figures, from /proc (Linux; elsewhere none).
fn process(r: &mut Registry) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = crate::os::clock_ticks_per_second() as f64;
    let cpu = (field(11) + field(12)) as f64 / hz;
    let p = r.sub_registry_with_prefix("process");
    p.register_with_unit("cpu", "CPU time used, user and system", Unit::Seconds, ConstCounter::new(cpu));
    p.register("threads", "Threads", ConstGauge::new(field(17) as i64));
    let rss = field(21) * crate::os::page_size();
    p.register_with_unit("resident_memory", "Resident memory", Unit::Bytes, ConstGauge::new(rss as i64));
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        p.register("open_fds", "Open file descriptors", ConstGauge::new(fds.count() as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_once_with_its_type_and_help() {
        let stats = serde_json::json!({
            "turn": {"allocations": 3, "to_peer_bytes": 1000, "stun": {"binding_requests": 7}},
            "connections": {"header_timeouts": 2},
            "workers": [{}, {}],
        });
        let text = render(&stats);
        assert!(text.contains("# TYPE switchboard_turn_allocations gauge\nswitchboard_turn_allocations 3\n"), "{text}");
        assert!(text.contains("switchboard_turn_relayed_to_peer_bytes_total 1000\n"), "{text}");
        assert!(text.contains("# UNIT switchboard_turn_relayed_to_peer_bytes bytes\n"), "{text}");
        assert!(text.contains("switchboard_stun_binding_requests_total 7\n"), "{text}");
        assert!(text.contains("switchboard_connections_header_timeouts_total 2\n"), "{text}");
        assert!(text.contains("switchboard_workers 2\n"), "{text}");
        assert!(text.contains("switchboard_process_cpu_seconds_total"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let names: Vec<&str> = METRICS.iter().map(|m| m.1).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a name used twice");
    }
}
