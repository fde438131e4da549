fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_billing::SPEC, somagent_billing::build)
}
