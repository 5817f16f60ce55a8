//! Seeded, deterministic telemetry: OpenTelemetry-like logs and spans, and
//! TSBS-like `cpu-only` metrics. Every generator is a pure function of
//! (seed, index), so a batch can be built anywhere and twice alike.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub(crate) const SERVICES: [&str; 10] = [
    "checkout",
    "cart",
    "payment",
    "search",
    "frontend",
    "ads",
    "shipping",
    "email",
    "currency",
    "recommendation",
];
const ROUTES: [&str; 6] = [
    "/api/cart",
    "/api/pay",
    "/search",
    "/",
    "/api/ship",
    "/api/ads",
];
const WORDS: [&str; 24] = [
    "request",
    "handled",
    "user",
    "session",
    "timeout",
    "cache",
    "miss",
    "database",
    "query",
    "retry",
    "upstream",
    "latency",
    "connection",
    "pool",
    "exhausted",
    "served",
    "payload",
    "accepted",
    "order",
    "item",
    "token",
    "refreshed",
    "shard",
    "replica",
];

/// The time window the data covers: `days` days ending at `end_ns`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start_ns: i64,
    pub(crate) span_ns: i64,
}

impl Window {
    /// Spreads `n` items evenly over the window; item `i`'s time.
    pub(crate) fn at(&self, i: u64, n: u64) -> i64 {
        self.start_ns + ((i as i128 * self.span_ns as i128) / n.max(1) as i128) as i64
    }
}

fn rng(seed: u64, stream: u64, i: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

pub(crate) struct Log {
    pub(crate) time_ns: i64,
    pub(crate) service: &'static str,
    pub(crate) severity_number: i32,
    pub(crate) severity_text: &'static str,
    pub(crate) body: String,
    pub(crate) route: &'static str,
    pub(crate) status: i64,
    pub(crate) user: u32,
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
}

/// Log record `i` of `n`: a 200–400 byte body, 2% errors, 5% warnings, a
/// trace id shared by 4 consecutive records; 1 in 10,000 in an incident
/// ([`in_incident`]).
pub(crate) fn log(seed: u64, w: &Window, i: u64, n: u64) -> Log {
    let mut r = rng(seed, 1, i);
    let target = r.random_range(200..=400);
    let mut body = String::with_capacity(target + 16);
    while body.len() < target {
        body.push_str(WORDS[r.random_range(0..WORDS.len())]);
        body.push(' ');
    }
    body.truncate(target);
    if in_incident(i, n) {
        body.push_str(" deadlock");
    }
    let roll = r.random_range(0..100);
    let (severity_number, severity_text, status) = match roll {
        0..2 => (17, "ERROR", 500),
        2..7 => (13, "WARN", 429),
        _ => (9, "INFO", 200),
    };
    Log {
        time_ns: w.at(i, n),
        service: SERVICES[r.random_range(0..SERVICES.len())],
        severity_number,
        severity_text,
        body,
        route: ROUTES[r.random_range(0..ROUTES.len())],
        status,
        user: r.random_range(0..10_000),
        trace_id: trace_id(seed, i / 4),
        span_id: r.random(),
    }
}

/// Whether log `i` of `n` is one of a short incident's: 1 in 10,000, all
/// together 60% of the way through the window, each body ending in
/// `deadlock`, a word no other body has (what the token search finds).
pub(crate) fn in_incident(i: u64, n: u64) -> bool {
    i as u128 * 10_000 / n.max(1) as u128 == 6_000
}

/// The trace id of trace `t`.
pub(crate) fn trace_id(seed: u64, t: u64) -> [u8; 16] {
    rng(seed, 3, t).random()
}

pub(crate) struct SpanRec {
    pub(crate) start_ns: i64,
    pub(crate) duration_ns: i64,
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent_span_id: Option<[u8; 8]>,
    pub(crate) service: &'static str,
    pub(crate) name: String,
    pub(crate) error: bool,
    pub(crate) route: &'static str,
}

/// Span `i` of `n`: traces of 4 spans (a root and three children),
/// log-normal-ish durations from 50 µs to seconds, 2% errors.
pub(crate) fn span(seed: u64, w: &Window, i: u64, n: u64) -> SpanRec {
    let mut r = rng(seed, 2, i);
    let trace = i / 4;
    let root = i.is_multiple_of(4);
    let route = ROUTES[(trace % ROUTES.len() as u64) as usize];
    let exp: f64 = r.random_range(0.0..1.0);
    let duration_ns = (50_000.0 * (exp * 10.0).exp()) as i64;
    SpanRec {
        start_ns: w.at(i, n),
        duration_ns,
        trace_id: trace_id(seed, trace),
        span_id: span_id(seed, i),
        parent_span_id: (!root).then(|| span_id(seed, i - i % 4)),
        service: SERVICES[r.random_range(0..SERVICES.len())],
        name: format!("{} {route}", if root { "GET" } else { "call" }),
        error: r.random_range(0..100) < 2,
        route,
    }
}

fn span_id(seed: u64, i: u64) -> [u8; 8] {
    rng(seed, 4, i).random()
}

/// One TSBS `cpu-only` reading: 10 fields of host `host` at step `step`.
pub(crate) struct Cpu {
    pub(crate) time_ns: i64,
    pub(crate) host: u32,
    pub(crate) fields: [f64; 10],
}

pub(crate) const CPU_FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

/// Row `i`: host `i % hosts`, step `i / hosts` (10 seconds apart).
pub(crate) fn cpu(seed: u64, start_ns: i64, hosts: u32, i: u64) -> Cpu {
    let host = (i % hosts as u64) as u32;
    let step = i / hosts as u64;
    let mut r = rng(seed, 5, i);
    let mut fields = [0.0; 10];
    for f in fields.iter_mut() {
        *f = (r.random_range(0.0..100.0f64) * 100.0).round() / 100.0;
    }
    Cpu {
        time_ns: start_ns + step as i64 * 10_000_000_000,
        host,
        fields,
    }
}

/// The tags of a TSBS host, as `(key, value)` pairs.
pub(crate) fn cpu_tags(host: u32) -> [(&'static str, String); 10] {
    [
        ("hostname", format!("host_{host}")),
        ("region", format!("eu-west-{}", host % 3)),
        ("datacenter", format!("eu-west-{}a", host % 3)),
        ("rack", (host % 50).to_string()),
        ("os", "Ubuntu16.04LTS".into()),
        ("arch", "x64".into()),
        (
            "team",
            ["SF", "NYC", "LON", "CHI"][host as usize % 4].into(),
        ),
        ("service", (host % 20).to_string()),
        ("service_version", (host % 2).to_string()),
        (
            "service_environment",
            ["production", "staging", "test"][host as usize % 3].into(),
        ),
    ]
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window {
        start_ns: 1_795_305_600_000_000_000,
        span_ns: 86_400_000_000_000,
    };

    #[test]
    fn the_same_seed_gives_the_same_rows_and_another_seed_others() {
        let a: Vec<String> = (0..50).map(|i| log(7, &W, i, 50).body).collect();
        let b: Vec<String> = (0..50).map(|i| log(7, &W, i, 50).body).collect();
        let c: Vec<String> = (0..50).map(|i| log(8, &W, i, 50).body).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            span(7, &W, 9, 100).duration_ns,
            span(7, &W, 9, 100).duration_ns
        );
        assert_eq!(cpu(7, 0, 10, 33).fields, cpu(7, 0, 10, 33).fields);
        assert_ne!(cpu(7, 0, 10, 33).fields, cpu(8, 0, 10, 33).fields);
    }

    #[test]
    fn logs_have_the_promised_shape() {
        let n = 10_000;
        let logs: Vec<Log> = (0..n).map(|i| log(42, &W, i, n)).collect();
        assert!(
            logs.iter()
                .all(|l| (200..=400).contains(&l.body.trim_end_matches(" deadlock").len()))
        );
        // One in 10,000 is in the incident, and only those have its word.
        let incident: Vec<usize> = (0..n as usize)
            .filter(|&i| logs[i].body.contains("deadlock"))
            .collect();
        assert_eq!(incident, [6000]);
        let many: Vec<u64> = (0..1_000_000)
            .filter(|&i| in_incident(i, 1_000_000))
            .collect();
        assert_eq!((many[0], many.len()), (600_000, 100));
        let errors = logs.iter().filter(|l| l.severity_number == 17).count();
        assert!((100..=300).contains(&errors), "{errors} errors of {n}");
        // Four consecutive records share a trace, and spans of that trace
        // carry the same id, so the trace lookup finds both.
        assert_eq!(logs[4].trace_id, logs[7].trace_id);
        assert_ne!(logs[3].trace_id, logs[4].trace_id);
        assert_eq!(span(42, &W, 4, 100).trace_id, logs[4].trace_id);
        // Times cover the window in order.
        assert_eq!(logs[0].time_ns, W.start_ns);
        assert!(logs.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        assert!(logs[n as usize - 1].time_ns < W.start_ns + W.span_ns);
    }

    #[test]
    fn traces_have_one_root_and_three_children() {
        let spans: Vec<SpanRec> = (0..8).map(|i| span(1, &W, i, 8)).collect();
        assert!(spans[0].parent_span_id.is_none());
        assert_eq!(spans[1].parent_span_id, Some(spans[0].span_id));
        assert_eq!(spans[3].parent_span_id, Some(spans[0].span_id));
        assert!(spans[4].parent_span_id.is_none());
        assert!(spans.iter().all(|s| s.duration_ns >= 50_000));
    }
}
