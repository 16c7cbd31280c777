//! The `navarch` binary: parses the command line and hands over to `cli`.

/// mimalloc returns freed memory to the system far better than glibc's per-thread arenas,
/// which kept the transient burst of a reconnect storm as resident memory for good.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    navarch::cli::main()
}
