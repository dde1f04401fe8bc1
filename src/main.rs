//! The `scratchgpt` command. All the work is in `train::cli`.

fn main() {
    std::process::exit(train::cli::main_with_args(std::env::args_os()));
}
