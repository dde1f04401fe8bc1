//! The `scratchgpt` command. All the work is in `train::cli`.

fn main() {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`scratchgpt … | head`) would panic
    // in `println!`. Restore the default: the process ends quietly, as other command-line
    // tools do.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(train::cli::main_with_args(std::env::args_os()));
}
