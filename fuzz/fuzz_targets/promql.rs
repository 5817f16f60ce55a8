//! PromQL text → parse → the selectors' time ranges → evaluation over a
//! few series (a counter with a reset, a gauge ending in a staleness
//! marker), as an instant and as a range query: whatever the text, an
//! answer or an error, never a panic. Evaluation stops after a bounded
//! number of steps, as a query's timeout stops it in the server.

#![no_main]

use std::cell::Cell;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sextant_promql::eval::{self, Data};
use sextant_promql::labels::Labels;
use sextant_promql::{Params, Point, PromError, STALE_NAN, Series, parse};

const START: i64 = 1_700_000_000_000;

fn series(name: &str, label: &str, values: &[f64]) -> Series {
    Series {
        metric: Arc::new(Labels::new(vec![
            ("__name__".into(), name.into()),
            ("job".into(), label.into()),
            ("le".into(), "0.5".into()),
        ])),
        points: values
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                t: START - 600_000 + i as i64 * 15_000,
                v: *v,
            })
            .collect(),
    }
}

/// libFuzzer's hook aborts on any panic, before unwinding; one panic of
/// promql-parser (a duration past `Duration`'s range:
/// `Duration::from_secs_f64`) is caught by `sextant_promql::parse` and
/// answered as bad_data (a unit test there), so it is let unwind.
fn let_the_known_parser_panic_unwind() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .payload_as_str()
                .is_some_and(|m| m.contains("cannot convert float seconds to Duration"))
            {
                return;
            }
            abort(info);
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_the_known_parser_panic_unwind();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(text) else {
        return;
    };
    let counter: Vec<f64> = (0..60).map(|i| if i < 30 { i as f64 } else { (i - 30) as f64 }).collect();
    let mut gauge: Vec<f64> = (0..40).map(|i| (i as f64).sin() * 1e3).collect();
    gauge.push(f64::from_bits(STALE_NAN));
    for p in [
        Params { start: START, end: START, step: 0, lookback: 300_000, max_samples: 100_000, subquery_step: 60_000 },
        Params { start: START - 300_000, end: START + 300_000, step: 30_000, lookback: 300_000, max_samples: 100_000, subquery_step: 60_000 },
    ] {
        let mut d = Data::new();
        for (sel, _, _) in eval::selector_ranges(&expr, &p) {
            d.insert(sel.id, vec![series("a", "x", &counter), series("b", "y", &gauge)]);
        }
        let calls = Cell::new(0u32);
        let stop = || {
            calls.set(calls.get() + 1);
            if calls.get() > 20_000 {
                Err(PromError::canceled(true))
            } else {
                Ok(())
            }
        };
        let _ = eval::evaluate(&expr, &d, &p, &stop);
    }
});
