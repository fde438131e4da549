fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_orchestrator::SPEC, somagent_orchestrator::build)
}
