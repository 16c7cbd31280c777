pub async fn run(_a: DemoArgs) -> anyhow::Result<()> {
    Ok(())
}
#[derive(Debug, clap::Args, Clone)]
pub struct DemoArgs {}
