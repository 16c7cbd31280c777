//! The `navarch` binary: parses the command line and hands over to `cli`.

/// jemalloc, with background threads that purge freed pages after a second even when the
/// process is idle (configured at build time in .cargo/config.toml): RSS follows live memory.
/// glibc's per-thread arenas kept the transient burst of a reconnect storm resident for good;
/// mimalloc purges only on later allocator activity, so an idle server kept its peak.
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The benchmark build counts allocations (around the system allocator: stats_alloc can wrap
/// only that one on stable Rust), printed on SIGUSR1 (`navarch::alloc_count`). Its RSS is not
/// the default build's.
#[cfg(feature = "alloc-count")]
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn main() -> std::process::ExitCode {
    #[cfg(feature = "alloc-count")]
    if let Err(e) = navarch::alloc_count::report_on_sigusr1(|| (&GLOBAL.stats()).into()) {
        eprintln!("alloc-count: no SIGUSR1 handler: {e}");
    }
    navarch::cli::main()
}
