//! Energy attribution: the step loop reads an [`EnergyMeter`] around its steps and splits each
//! step's joules over the sequences in it by the tokens each one ran (prefill chunk or decode).
//!
//! While the loop stays busy its readings are chained (each step's share starts where the last
//! one ended), so the joules handed out add up to the meter's total over the busy interval.
//! Idle time between bursts is not charged to any request.

/// Cumulative energy of the device the engine runs on.
pub trait EnergyMeter: Send + Sync {
    /// Joules since some fixed origin, up to now (extrapolated from the latest reading where
    /// the sensor updates slower than steps run). Never decreases.
    fn total_joules(&self) -> f64;
    /// `true` when the figures come from a hardware sensor (NVML, RAPL), `false` when estimated.
    fn measured(&self) -> bool;
}

/// Where the step loop's last reading left off.
#[derive(Default)]
pub(super) struct Attribution {
    /// The meter's total at the end of the previous step, while the loop is busy.
    mark: Option<f64>,
    /// Joules handed out to sequences since start.
    pub total: f64,
}

impl Attribution {
    /// Call before a step: starts a busy interval if the loop was idle.
    pub fn begin(&mut self, meter: &dyn EnergyMeter) {
        if self.mark.is_none() {
            self.mark = Some(meter.total_joules());
        }
    }

    /// Call after a step: the joules since the last mark, split by `tokens` (one entry per
    /// sequence in the step). Returns each sequence's share.
    pub fn end(&mut self, meter: &dyn EnergyMeter, tokens: &[usize]) -> Vec<f64> {
        let now = meter.total_joules();
        let delta = (now - self.mark.unwrap_or(now)).max(0.0);
        self.mark = Some(now);
        let sum: usize = tokens.iter().sum();
        if sum == 0 {
            return vec![0.0; tokens.len()];
        }
        self.total += delta;
        tokens
            .iter()
            .map(|&t| delta * t as f64 / sum as f64)
            .collect()
    }

    /// The loop went idle: the next step starts a new interval.
    pub fn idle(&mut self) {
        self.mark = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Counter(Mutex<f64>);
    impl EnergyMeter for Counter {
        fn total_joules(&self) -> f64 {
            *self.0.lock().unwrap()
        }
        fn measured(&self) -> bool {
            false
        }
    }

    #[test]
    fn shares_follow_tokens_and_chain_while_busy() {
        let m = Counter(Mutex::new(10.0));
        let mut a = Attribution::default();
        a.begin(&m);
        *m.0.lock().unwrap() = 14.0;
        assert_eq!(a.end(&m, &[1, 3]), vec![1.0, 3.0]);
        // Busy: the next step starts at 14 even if `begin` is called again.
        a.begin(&m);
        *m.0.lock().unwrap() = 16.0;
        assert_eq!(a.end(&m, &[2]), vec![2.0]);
        assert_eq!(a.total, 6.0);
        // Idle time is not charged.
        a.idle();
        *m.0.lock().unwrap() = 100.0;
        a.begin(&m);
        *m.0.lock().unwrap() = 101.0;
        assert_eq!(a.end(&m, &[5, 5]), vec![0.5, 0.5]);
        assert_eq!(a.total, 7.0);
    }
}
