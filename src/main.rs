fn main() -> std::process::ExitCode {
    regcert::cli::main()
}
