//! The `tandem` binary: a thin shell over [`tandem::cli`].

fn main() -> std::process::ExitCode {
    tandem::cli::main()
}
