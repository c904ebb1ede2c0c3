//! The configuration file (`hourglass_config::Loader`, `--config FILE` / `HOURGLASS_CONFIG`): TOML an
//! operator writes, checked against the command's flags and layered under the environment and flags.
//!
//! The command is built from the roles' own flag structs (collector, ingestor, aggregator, query: the
//! settings of the crates a role runs, secrets included), as the `hourglass` binary builds its command
//! from them. Input: the first byte picks the role run; the rest is the file. Properties:
//! - loading returns a configuration or a `ConfigError` (whose message renders), never panics;
//! - a loaded configuration is one the role's flag struct takes (`FromArgMatches`);
//! - `Loaded::to_toml` (`hourglass config print`) loads back, with the same values for every setting
//!   that is not a secret, as its documentation promises.

#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hourglass_aggregator::config::AggregatorConfig;
use hourglass_collector::CollectorConfig;
use hourglass_config::{CONFIG_ENV, Loader};
use hourglass_ingestor::config::IngestorConfig;
use hourglass_query::config::QueryConfig;
use libfuzzer_sys::fuzz_target;

#[derive(Parser)]
#[command(name = "hourglass")]
struct Cli {
    #[command(subcommand)]
    command: Role,
}

#[derive(Subcommand)]
enum Role {
    Collector(Box<CollectorConfig>),
    Ingestor(Box<IngestorConfig>),
    Aggregator(Box<AggregatorConfig>),
    Query(Box<QueryConfig>),
}

const ROLES: [&str; 4] = ["collector", "ingestor", "aggregator", "query"];

static LOADER: LazyLock<Loader> = LazyLock::new(|| Loader::new(Cli::command()).expect("every flag can be layered"));

/// A file of this process's own (libFuzzer's workers are processes), rewritten for each input.
fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hourglass-fuzz-{}-{name}.toml", std::process::id()))
}

fn load(role: &str, file: &PathBuf) -> Result<hourglass_config::Loaded, hourglass_config::ConfigError> {
    let env = HashMap::from([(CONFIG_ENV.to_owned(), file.to_string_lossy().into_owned())]);
    LOADER.load(["hourglass", role], &env)
}

/// The same value as the flag takes it: equal text, or equal numbers (`1e3` in a file prints back as
/// `1000.0`).
fn same_value(before: &str, after: &str) -> bool {
    before == after
        || matches!((before.parse::<f64>(), after.parse::<f64>()), (Ok(a), Ok(b)) if a == b || (a.is_nan() && b.is_nan()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&role, text)) = data.split_first() else { return };
    let role = ROLES[usize::from(role) % ROLES.len()];
    let file = scratch_file("config");
    std::fs::write(&file, text).expect("the scratch file is writable");
    let loaded = match load(role, &file) {
        Ok(loaded) => loaded,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    if let Err(error) = Cli::from_arg_matches(loaded.matches()) {
        panic!("a loaded configuration the role's flags refuse: {error}");
    }

    let printed = loaded.to_toml();
    let printed_file = scratch_file("printed");
    std::fs::write(&printed_file, &printed).expect("the scratch file is writable");
    let reloaded = load(role, &printed_file)
        .unwrap_or_else(|error| panic!("config print's output does not load back: {error}\n{printed}"));
    let before = loaded.settings();
    let after = reloaded.settings();
    assert_eq!(before.len(), after.len());
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(before.key, after.key);
        if before.secret {
            continue;
        }
        assert!(
            before.values.len() == after.values.len()
                && before.values.iter().zip(&after.values).all(|(a, b)| same_value(a, b)),
            "{}: {:?} printed and loaded back as {:?}\n{printed}",
            before.key,
            before.values,
            after.values
        );
    }
});
