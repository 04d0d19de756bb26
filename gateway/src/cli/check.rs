//! `gateway check FILE`: validate and exit.

use std::path::Path;

use crate::config::Config;

pub(super) fn check(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    // Rule files are part of the configuration: a SecLang error is reported here, with its
    // file:line, rather than at start or reload.
    if let Some(waf) = &config.waf {
        let rules = crate::waf::load_rules(&waf.rules)?;
        println!("waf: {} rules loaded", rules.rule_count);
    }
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
