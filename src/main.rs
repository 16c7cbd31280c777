//! The `navarch` binary: parses the command line and hands over to `cli`.

/// jemalloc, with background threads that purge freed pages after a second even when the
/// process is idle (configured at build time in .cargo/config.toml): RSS follows live memory.
/// glibc's per-thread arenas kept the transient burst of a reconnect storm resident for good;
/// mimalloc purges only on later allocator activity, so an idle server kept its peak.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    navarch::cli::main()
}
