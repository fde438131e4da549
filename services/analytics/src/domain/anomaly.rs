//! Anomalies: an hour far above a tenant's own recent hours. The score is robust (the
//! median and the median absolute deviation, scaled to a standard deviation), so one
//! earlier spike does not hide the next; a floor keeps a quiet tenant's first busy hour
//! from counting as an incident.

/// How far above its baseline an hour must be to be an anomaly.
pub const THRESHOLD: f64 = 6.0;

/// The robust z-score of `value` against `baseline`, the scale at least `min_scale`;
/// `None` without enough history (a day of hours).
pub fn robust_z(baseline: &[f64], value: f64, min_scale: f64) -> Option<f64> {
    if baseline.len() < 24 {
        return None;
    }
    let median = median(baseline);
    let deviations: Vec<f64> = baseline.iter().map(|v| (v - median).abs()).collect();
    // 1.4826 × MAD estimates σ for normal data. A flat baseline still gets a scale
    // (a tenth of its level, or `min_scale`), so a tenant that always does the same is
    // not an anomaly at the smallest change.
    let scale = (1.4826 * self::median(&deviations))
        .max(0.1 * median.abs())
        .max(min_scale);
    Some((value - median) / scale)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Whether `value` is anomalous against `baseline`, for a metric whose hour must also
/// reach `floor` to matter: its score if so.
pub fn is_anomalous(baseline: &[f64], value: f64, floor: f64, min_scale: f64) -> Option<f64> {
    let z = robust_z(baseline, value, min_scale)?;
    (z >= THRESHOLD && value >= floor).then_some(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_against_a_steady_week_is_an_anomaly_and_noise_is_not() {
        let steady: Vec<f64> = (0..168).map(|h| 1000.0 + f64::from(h % 7) * 30.0).collect();
        assert!(is_anomalous(&steady, 9000.0, 100.0, 1.0).is_some());
        assert!(is_anomalous(&steady, 1150.0, 100.0, 1.0).is_none());
        // An earlier spike in the baseline barely moves it.
        let mut spiky = steady.clone();
        spiky[3] = 50_000.0;
        assert!(is_anomalous(&spiky, 9000.0, 100.0, 1.0).is_some());
        // Too little history, or below the floor: no verdict.
        assert!(robust_z(&steady[..10], 9000.0, 1.0).is_none());
        // A flat baseline: a tenth above it is not an anomaly.
        let flat = vec![2000.0; 48];
        assert!(is_anomalous(&flat, 2100.0, 100.0, 1.0).is_none());
        let idle = vec![0.0; 48];
        assert!(is_anomalous(&idle, 5.0, 100.0, 1.0).is_none());
        assert!(is_anomalous(&idle, 500.0, 100.0, 1.0).is_some());
    }
}
