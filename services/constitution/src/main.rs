fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_constitution::SPEC, somagent_constitution::build)
}
