//! Allocation counts of a running server, for the benchmark build (`--features alloc-count`):
//! the line format a server prints and the load test reads, and (under the feature) the
//! thread that prints it to stderr whenever the process receives SIGUSR1.
//!
//! Owns only that line and that thread. The counting allocator itself is installed by the
//! binary (main.rs, `stats_alloc` around the system allocator instead of mimalloc), so the
//! default build pays nothing and has no SIGUSR1 handler. Must not expose anything over the
//! network.

/// Every line this module prints starts with this.
pub const LINE_PREFIX: &str = "navarch-alloc-count";
/// Printed once at start-up by a binary built with the feature: only then does SIGUSR1 print
/// counts (without the handler, SIGUSR1 would end the process).
pub const ENABLED_LINE: &str = "navarch-alloc-count enabled: SIGUSR1 prints the counts";

/// Counts since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocCounts {
    pub allocations: u64,
    pub deallocations: u64,
    pub reallocations: u64,
    pub bytes_allocated: u64,
}

impl AllocCounts {
    /// The line printed for these counts.
    pub fn line(&self) -> String {
        format!(
            "{LINE_PREFIX} allocations={} deallocations={} reallocations={} bytes_allocated={}",
            self.allocations, self.deallocations, self.reallocations, self.bytes_allocated
        )
    }

    /// Parses a line printed by [`AllocCounts::line`] (anything else is `None`).
    pub fn parse(line: &str) -> Option<AllocCounts> {
        let rest = line.trim().strip_prefix(LINE_PREFIX)?.strip_prefix(' ')?;
        let mut counts = AllocCounts::default();
        let mut seen = 0;
        for field in rest.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            let value: u64 = value.parse().ok()?;
            match key {
                "allocations" => counts.allocations = value,
                "deallocations" => counts.deallocations = value,
                "reallocations" => counts.reallocations = value,
                "bytes_allocated" => counts.bytes_allocated = value,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 4).then_some(counts)
    }

    /// The last counts line in `text` (a server's log).
    pub fn last_in(text: &str) -> Option<AllocCounts> {
        text.lines().rev().find_map(AllocCounts::parse)
    }

    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &AllocCounts) -> AllocCounts {
        AllocCounts {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            deallocations: self.deallocations.saturating_sub(earlier.deallocations),
            reallocations: self.reallocations.saturating_sub(earlier.reallocations),
            bytes_allocated: self.bytes_allocated.saturating_sub(earlier.bytes_allocated),
        }
    }
}

#[cfg(feature = "alloc-count")]
impl From<&stats_alloc::Stats> for AllocCounts {
    fn from(s: &stats_alloc::Stats) -> AllocCounts {
        AllocCounts {
            allocations: s.allocations as u64,
            deallocations: s.deallocations as u64,
            reallocations: s.reallocations as u64,
            bytes_allocated: s.bytes_allocated as u64,
        }
    }
}

/// Prints [`ENABLED_LINE`], then a counts line to stderr on every SIGUSR1, from a thread of
/// its own (so it answers even when the async runtime is saturated).
#[cfg(feature = "alloc-count")]
pub fn report_on_sigusr1(stats: fn() -> AllocCounts) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])?;
    eprintln!("{ENABLED_LINE}");
    std::thread::Builder::new()
        .name("alloc-count".into())
        .spawn(move || {
            for _ in signals.forever() {
                eprintln!("{}", stats().line());
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_and_the_last_one_in_a_log_wins() {
        let a = AllocCounts {
            allocations: 10,
            deallocations: 7,
            reallocations: 2,
            bytes_allocated: 4096,
        };
        let b = AllocCounts {
            allocations: 25,
            ..a
        };
        assert_eq!(AllocCounts::parse(&a.line()), Some(a));
        let log = format!(
            "starting\n{}\nWARN something\n{}\nmore\n",
            a.line(),
            b.line()
        );
        assert_eq!(AllocCounts::last_in(&log), Some(b));
        assert_eq!(b.since(&a).allocations, 15);
        assert_eq!(AllocCounts::parse(ENABLED_LINE), None, "not a counts line");
        assert_eq!(
            AllocCounts::parse("navarch-alloc-count allocations=1"),
            None,
            "every field is required"
        );
    }
}
