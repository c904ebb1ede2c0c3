//! Where a setting's value came from.

use std::fmt;
use std::path::PathBuf;

/// The layer a setting's value came from. The highest layer that has a value wins: flag, then
/// environment, then file (a command's table, then the top level), then the flag's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Given on the command line.
    Flag,
    /// From this environment variable.
    Env(String),
    /// From the configuration file, at `line`, in the table of a command or (`table` None) at the top.
    File {
        /// The file, as it was named.
        path: PathBuf,
        /// The 1-based line of the key.
        line: usize,
        /// The command's table, or None for a top-level key.
        table: Option<String>,
    },
    /// The flag's default (for standalone, standalone's own where it differs from a stage's).
    Default,
}

impl Origin {
    /// Where a value came from, for an error about it: the file, line and key, or the variable.
    pub(crate) fn describe(&self, long: &str) -> String {
        match self {
            Origin::Flag => format!("--{long}"),
            Origin::Env(name) => format!("{name} (environment)"),
            Origin::File { path, line, table: None } => format!("{}:{line}: `{long}`", path.display()),
            Origin::File { path, line, table: Some(table) } => {
                format!("{}:{line}: `{long}` in [{table}]", path.display())
            }
            Origin::Default => format!("the default of --{long}"),
        }
    }
}

/// As `hourglass config print` writes it after each setting: `flag`, `env HOURGLASS_X`,
/// `file hourglass.toml:3 [collector]`, `default`.
impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => formatter.write_str("flag"),
            Origin::Env(name) => write!(formatter, "env {name}"),
            Origin::File { path, line, table: None } => write!(formatter, "file {}:{line}", path.display()),
            Origin::File { path, line, table: Some(table) } => {
                write!(formatter, "file {}:{line} [{table}]", path.display())
            }
            Origin::Default => formatter.write_str("default"),
        }
    }
}
