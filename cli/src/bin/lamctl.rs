//! `lamctl`: vzctl-style container management on Lamina images.

fn main() -> std::process::ExitCode {
    let code = lamina_cli::lamctl::run(std::env::args_os());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(255))
}
