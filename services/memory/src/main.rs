fn main() -> std::process::ExitCode {
    somagent_common::app::main(&somagent_memory::SPEC, somagent_memory::build)
}
