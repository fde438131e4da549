fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_slm::SPEC, somagent_slm::build)
}
