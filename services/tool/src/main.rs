fn main() -> std::process::ExitCode {
    // Started as the sandbox's launcher: confine and become the program.
    somagent_tool::sandbox::exec_if_asked();
    somagent_common::app::main(&somagent_tool::SPEC, somagent_tool::build)
}
