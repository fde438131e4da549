//! `somagent-scripted-llm [ADDR]`: serves the scripted OpenAI-compatible chat API (see
//! the library's docs for the models and what each does) until killed.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let server = somagent_scripted_llm::ScriptedLlm::start_on(&addr).await?;
    println!("{}", server.base_url());
    std::future::pending::<()>().await;
    Ok(())
}
