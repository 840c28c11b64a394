fn main() -> std::process::ExitCode {
    tracecar::cli::main()
}
