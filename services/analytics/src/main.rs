fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_analytics::SPEC, somagent_analytics::build)
}
