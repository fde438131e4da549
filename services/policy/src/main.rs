fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_policy::SPEC, somagent_policy::build)
}
