//! Notifications: the Prometheus Alertmanager webhook body for instances
//! that fired or resolved, and one HTTP POST attempt of it.
//!
//! A [`Notification`] is queued in the catalog's outbox in the same
//! transaction as the state change that caused it, then POSTed; a failed
//! attempt is retried after [`backoff`] until its retries are used up.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rule::{AlertDef, Instance, Labels};

/// One webhook call owed, with its delivery progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub url: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// The JSON body.
    pub body: String,
    /// The labels of the instances it is about.
    pub instances: Vec<Labels>,
    /// Attempts made so far.
    pub attempts: u32,
    pub retries: u32,
    pub timeout_ms: u64,
    /// When the next attempt is due (alert clock).
    pub next_attempt_ns: i64,
}

/// The wait after the `attempt`th failed attempt: 1 s, 2 s, 4 s, ... up to
/// 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(16);
    Duration::from_secs(secs.min(300))
}

pub(crate) fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The labels an instance is sent with: its own, the rule's on top, and
/// `alertname`.
pub fn full_labels(def: &AlertDef, labels: &Labels) -> Labels {
    let mut out = labels.clone();
    out.extend(def.labels.clone());
    out.insert("alertname".into(), def.name.clone());
    out
}

/// Annotations with `{{ $labels.x }}`, `{{ $values.x }}` and `{{ $value }}`
/// (the first value) filled in.
pub fn annotations(def: &AlertDef, inst: &Instance) -> BTreeMap<String, String> {
    def.annotations
        .iter()
        .map(|(k, v)| (k.clone(), expand(v, inst)))
        .collect()
}

fn expand(template: &str, inst: &Instance) -> String {
    let number = |v: &Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = rest[start + 2..start + len].trim();
        let value = if inner == "$value" {
            Some(inst.values.values().next().map(number).unwrap_or_default())
        } else if let Some(k) = inner.strip_prefix("$labels.") {
            Some(inst.labels.get(k).cloned().unwrap_or_default())
        } else {
            inner
                .strip_prefix("$values.")
                .map(|k| inst.values.get(k).map(number).unwrap_or_default())
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// FNV-1a of the labels: a stable identity for receivers that deduplicate.
fn fingerprint(labels: &Labels) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The Alertmanager webhook body (version 4) for instances that fired
/// (`ends` is `None`) or resolved at `ends`. Each alert also carries the
/// instance's numeric columns as `values`.
pub fn body(def: &AlertDef, status: &str, instances: &[(Instance, Option<i64>)]) -> Value {
    let alerts: Vec<Value> = instances
        .iter()
        .map(|(inst, ends)| {
            let labels = full_labels(def, &inst.labels);
            json!({
                "status": status,
                "labels": labels,
                "annotations": annotations(def, inst),
                "startsAt": rfc3339(inst.fired_at_ns.unwrap_or(inst.active_since_ns)),
                "endsAt": ends.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
                "generatorURL": "",
                "fingerprint": fingerprint(&labels),
                "values": inst.values,
            })
        })
        .collect();
    let all: Vec<Labels> = instances
        .iter()
        .map(|(i, _)| full_labels(def, &i.labels))
        .collect();
    let common_labels = common(&all);
    let all_annotations: Vec<BTreeMap<String, String>> =
        instances.iter().map(|(i, _)| annotations(def, i)).collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", def.name),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": def.name,
        "groupLabels": {"alertname": def.name},
        "commonLabels": common_labels,
        "commonAnnotations": common(&all_annotations),
        "externalURL": "",
        "alerts": alerts,
    })
}

/// The pairs every map has.
fn common(maps: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A webhook URL must be http:// or https:// with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("webhook URL '{url}' is not valid: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "webhook URL '{url}' must start with http:// or https:// and name a host"
        ));
    }
    Ok(())
}

/// One POST of `n`: the HTTP status if it is 2xx, otherwise what went wrong.
pub async fn send(
    client: &reqwest::Client,
    n: &Notification,
) -> Result<u16, (Option<u16>, String)> {
    let response = client
        .post(&n.url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("sextant/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_millis(n.timeout_ms.max(1)))
        .body(n.body.clone())
        .send()
        .await
        .map_err(|e| (None, describe(&e, n.timeout_ms)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let text = response.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    Err((
        Some(status.as_u16()),
        format!("receiver answered {status}: {}", text.trim()),
    ))
}

fn describe(e: &reqwest::Error, timeout_ms: u64) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout_ms} ms");
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Phase;

    fn def() -> AlertDef {
        AlertDef {
            name: "high_cpu".into(),
            query: "SELECT 1".into(),
            every_ns: 60_000_000_000,
            for_ns: 0,
            keep_firing_for_ns: 0,
            labels: [("severity".to_string(), "page".to_string())].into(),
            annotations: [(
                "summary".to_string(),
                "{{ $labels.host }} at {{$values.avg}} ({{ $value }}) {{ $nope }}".to_string(),
            )]
            .into(),
            webhook: "http://127.0.0.1:9/hook".into(),
            timeout_ms: 1000,
            retries: 3,
            query_timeout_ms: None,
        }
    }

    #[test]
    fn alertmanager_body() {
        let inst = Instance {
            labels: [("host".to_string(), "a".to_string())].into(),
            values: [("avg".to_string(), Some(95.5))].into(),
            phase: Phase::Firing,
            active_since_ns: 0,
            fired_at_ns: Some(180_000_000_000),
            last_seen_ns: 180_000_000_000,
        };
        let b = body(&def(), "firing", &[(inst.clone(), None)]);
        assert_eq!(b["status"], "firing");
        assert_eq!(b["version"], "4");
        let a = &b["alerts"][0];
        assert_eq!(a["labels"]["alertname"], "high_cpu");
        assert_eq!(a["labels"]["host"], "a");
        assert_eq!(a["labels"]["severity"], "page");
        assert_eq!(a["annotations"]["summary"], "a at 95.5 (95.5) {{ $nope }}");
        assert_eq!(a["startsAt"], "1970-01-01T00:03:00.000Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["values"]["avg"], 95.5);
        assert_eq!(b["commonLabels"]["host"], "a");
        let r = body(&def(), "resolved", &[(inst, Some(240_000_000_000))]);
        assert_eq!(r["alerts"][0]["endsAt"], "1970-01-01T00:04:00.000Z");
        assert_eq!(r["alerts"][0]["fingerprint"], b["alerts"][0]["fingerprint"]);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
