fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_gateway::SPEC, somagent_gateway::build)
}
