//! `cvp-stream validate`: parse a config, and load, type-check and
//! initialise every transform, connecting nowhere.

use crate::config::{Config, SeedArgs};
use crate::pipeline::Pipeline;
use crate::sinks::{Sink, StdoutSink};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The YAML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

pub fn validate(args: ValidateArgs) -> Result<()> {
    let path = &args.config;
    let config = Config::load(path, &SeedArgs::default())?;
    // Building the pipeline loads, type-checks and initialises every
    // transform and checks the TLS files and credentials, without connecting.
    let pipeline = Pipeline::build(&config, Sink::Stdout(StdoutSink))?;
    drop(pipeline);
    // The sink's client checks its settings (librdkafka its properties).
    config.sink.check_offline()?;
    let names: Vec<&str> = config.transforms.iter().map(|t| t.name.as_str()).collect();
    println!(
        "{}: OK ({} transform{}{})",
        path.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.is_empty() {
            String::new()
        } else {
            format!(": {}", names.join(" -> "))
        }
    );
    Ok(())
}
