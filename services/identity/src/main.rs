fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_identity::SPEC, somagent_identity::build)
}
