//! Why a configuration could not be loaded: the command line, the file, or a value from a lower layer.

use std::path::PathBuf;

/// Why [`Loader::load`](crate::Loader::load) (or [`Loader::new`](crate::Loader::new)) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line itself: a usage error, or a request for help or the version. clap formats it and
    /// chooses the exit code ([`clap::Error::exit`]).
    #[error(transparent)]
    CommandLine(#[from] clap::Error),

    /// The configuration file named by `--config` or `HOURGLASS_CONFIG` could not be read.
    #[error("cannot read the configuration file {path} (named by {named_by})")]
    Read {
        /// The file.
        path: PathBuf,
        /// `--config` or the variable that named it.
        named_by: String,
        /// What reading it said.
        #[source]
        source: std::io::Error,
    },

    /// The configuration file is not TOML.
    #[error("{path} is not TOML")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and why parsing stopped.
        #[source]
        source: toml::de::Error,
    },

    /// The configuration file is TOML, but names a setting, or a command, that does not exist, or gives a
    /// setting a value of the wrong type. Every problem of the file is listed, one a line, each with the
    /// file, the line and the key: a typo is never ignored.
    #[error("{}", .problems.join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem, `FILE:LINE: …`.
        problems: Vec<String>,
    },

    /// A value from the file or the environment that its flag refuses, as the flag would refuse it.
    #[error("{origin}: {message}")]
    Value {
        /// Where the value came from: the file, line and key, or the environment variable.
        origin: String,
        /// What the flag said of it.
        message: String,
    },

    /// The command has a flag the loader cannot set from a file or the environment (a programming error,
    /// found by any test that builds the loader).
    #[error("`{flag}` cannot take its value from a file or the environment: {reason}")]
    Unlayerable {
        /// The flag (or argument id).
        flag: String,
        /// Why not.
        reason: &'static str,
    },
}
