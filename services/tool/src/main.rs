fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_tool::SPEC, somagent_tool::build)
}
