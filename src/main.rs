fn main() -> std::process::ExitCode {
    vmctl::main()
}
