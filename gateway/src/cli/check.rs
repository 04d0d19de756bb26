//! `gateway check FILE`: validate and exit.

use std::path::Path;

use crate::config::Config;

pub(super) fn check(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    println!(
        "{}: ok (instance `{}`, xdp {})",
        file.display(),
        config.instance,
        match &config.xdp {
            Some(x) => format!("on {} in {:?} mode", x.interfaces.join(","), x.mode).to_lowercase(),
            None => "off".into(),
        }
    );
    Ok(())
}
