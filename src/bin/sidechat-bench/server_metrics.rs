//! The server's own view: quantiles estimated from a histogram of its `/metrics`, as
//! Prometheus's `histogram_quantile` does (linear within a bucket).

use serde_json::{Value, json};

/// The OpenMetrics text of the server at `address`.
pub async fn scrape(address: &str) -> anyhow::Result<String> {
    let (status, body) = crate::client::http(address, "GET", "/metrics", "", "").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(body)
}

/// The gauge or counter `name` (without labels), as scraped.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Cumulative (upper bound in seconds, count) of `name` with `label`, e.g.
/// `sidechat_join_seconds` and `kind="lobby"`.
fn buckets(text: &str, name: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, count) = rest.split_once("} ")?;
            if !labels.split(',').any(|l| l == label) {
                return None;
            }
            let le = labels
                .split(',')
                .find_map(|l| l.strip_prefix("le=\""))?
                .trim_end_matches('"');
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}

fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (bound - lower.0) * within);
        }
        lower = (bound, count);
    }
    None
}

/// `{"count", "p50_ms", "p99_ms"}` of the histogram, milliseconds, bucket-interpolated.
pub fn summary(text: &str, name: &str, label: &str) -> Value {
    let buckets = buckets(text, name, label);
    let ms = |q| quantile(&buckets, q).map(|s| s * 1000.0);
    json!({
        "count": buckets.last().map_or(0.0, |b| b.1),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let text = "sidechat_join_seconds_bucket{kind=\"lobby\",le=\"0.001\"} 0\n\
                    sidechat_join_seconds_bucket{kind=\"lobby\",le=\"0.002\"} 50\n\
                    sidechat_join_seconds_bucket{kind=\"lobby\",le=\"0.004\"} 100\n\
                    sidechat_join_seconds_bucket{kind=\"lobby\",le=\"+Inf\"} 100\n\
                    sidechat_join_seconds_bucket{kind=\"conversation\",le=\"+Inf\"} 7\n";
        let s = summary(text, "sidechat_join_seconds", "kind=\"lobby\"");
        assert_eq!(s["count"], 100.0);
        assert!((s["p50_ms"].as_f64().unwrap() - 2.0).abs() < 1e-9);
        assert!((s["p99_ms"].as_f64().unwrap() - 3.96).abs() < 1e-9);
    }
}
