//! The `navarch` binary: parses the command line and hands over to `cli`.

/// mimalloc returns freed memory to the system far better than glibc's per-thread arenas,
/// which kept the transient burst of a reconnect storm as resident memory for good.
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
