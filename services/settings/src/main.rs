fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_settings::SPEC, somagent_settings::build)
}
