fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_capsule_repo::SPEC, somagent_capsule_repo::build)
}
