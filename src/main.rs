fn main() -> std::process::ExitCode {
    passthru::cli::main()
}
