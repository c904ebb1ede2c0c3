//! Hourglass's configuration: where each setting of a command comes from.
//!
//! A setting is a long flag of the `hourglass` command (clap derive, declared in the crate that uses
//! it, its default and help in its doc). Its value comes from the highest of four layers that has one:
//!
//! 1. the command line (`--kafka-brokers k:9092`);
//! 2. the environment (`HOURGLASS_KAFKA_BROKERS`), given to the loader as a map, so a test passes the
//!    environment it means instead of changing the process's;
//! 3. the configuration file named by `--config FILE` or `HOURGLASS_CONFIG`: TOML whose keys are long
//!    flag names; a `[command]` table applies to that command only and wins over the top level;
//! 4. the flag's default (a role's own, e.g. standalone's listen address).
//!
//! Layout:
//! - [`Loader`] (`loader.rs`): the layering, over any clap command.
//! - `file.rs`: the file format and its checks (an unknown key or a wrong type is an error, never
//!   ignored).
//! - `setting.rs`: how a clap flag is a setting (a switch, one value, a list; its TOML type; secret or
//!   not), and how a layered value becomes the `--name=value` token clap parses.
//! - [`Origin`] (`origin.rs`): where a value came from; [`Loaded::to_toml`] (`print.rs`) writes a loaded
//!   configuration back as a file, with origins and secrets hidden (`hourglass config print`).
//! - [`defaults`]: a configuration struct at its flags' defaults.
//! - [`ErasureConfig`] (`erasure.rs`): the erasure salt and suppression, shared by the query role, the
//!   aggregator, standalone and `hourglass erase`.
//!
//! The path of a setting: the loader parses what the user typed, finds the selected command, takes
//! each setting the user did not type from the environment map or the file, writes it as a token right
//! after the command's name, and has clap parse the whole line once more. The command's
//! `FromArgMatches` then reads [`Loaded::matches`] as it would read a plain parse.

#![warn(missing_docs)]

mod defaults;
pub mod erasure;
mod error;
mod file;
mod loader;
mod origin;
mod print;
mod setting;

pub use defaults::defaults;
pub use erasure::ErasureConfig;
pub use error::ConfigError;
pub use loader::{CONFIG_ENV, EffectiveSetting, Loaded, Loader};
pub use origin::Origin;
pub use print::{HIDDEN, shown_secret};
