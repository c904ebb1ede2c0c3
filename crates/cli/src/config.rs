//! `hourglass config print <ROLE> [FLAGS…]`: the configuration a role would run with, as a configuration
//! file (docs/architecture.md, "Configuration").
//!
//! `hourglass config print collector --listen-addr 0.0.0.0:7000` loads exactly what
//! `hourglass collector --listen-addr 0.0.0.0:7000` would load (same flags, environment and file) and
//! prints it instead of running it: every setting with its help, its value and where the value came from,
//! secrets hidden. The output is a configuration file the loader accepts back.

use std::collections::HashMap;
use std::ffi::OsString;

use clap::ValueEnum;
use hourglass_config::{Loaded, Loader};

/// Flags of `hourglass config`.
#[derive(clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(clap::Subcommand)]
enum ConfigCommand {
    /// Print the configuration a role would run with as TOML (a file `--config` accepts back): each
    /// setting's value and where it came from (flag, env HOURGLASS_…, file, default), secrets hidden.
    Print(PrintArgs),
}

#[derive(clap::Args)]
struct PrintArgs {
    /// The role whose configuration to print.
    role: Role,
    /// The role's own flags, as `hourglass <ROLE>` takes them (`--config FILE` among them). The loader
    /// reads them again from the command line, as the role's.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ROLE FLAGS")]
    _role_flags: Vec<OsString>,
}

/// The long-running roles.
#[derive(Clone, Copy, ValueEnum)]
enum Role {
    Standalone,
    Collector,
    Ingestor,
    Aggregator,
    Query,
}

/// Prints the configuration: `loaded` is `hourglass config print <ROLE> …`; taking `config` and `print`
/// out of its command line leaves the role's own, `hourglass <ROLE> …`, which is loaded like any other.
pub fn run(args: ConfigArgs, loader: &Loader, loaded: &Loaded, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let ConfigCommand::Print(print) = args.command;
    let role_line = loaded.without_subcommands(2);
    let role = crate::load_or_exit(loader, role_line, env);
    let role_name = print.role.to_possible_value().expect("no role is skipped").get_name().to_owned();
    anyhow::ensure!(
        role.subcommand_path() == [role_name.clone()],
        "`config print {role_name}` loaded `{}` instead",
        role.subcommand_path().join(" ")
    );
    print!("{}", role.to_toml());
    Ok(())
}
