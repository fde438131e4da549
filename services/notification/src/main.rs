fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_notification::SPEC, somagent_notification::build)
}
