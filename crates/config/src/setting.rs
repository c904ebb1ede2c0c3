//! What the loader sees in a clap command: each long flag is a setting, with a shape (a switch, one value,
//! a list), the TOML type its values take, its environment variable, and whether it is a secret.
//!
//! A layered value becomes command-line tokens (`--name=value`) that the command parses as if they had
//! been typed, so a value from the file or the environment goes through exactly the checks a flag goes
//! through (value parser, `requires`, `conflicts_with`). Each value is checked on its own first, with the
//! flag's own value parser, so that a refusal names where the value came from.

use std::any::TypeId;
use std::ffi::OsString;

use clap::builder::{Str, ValueParser};
use clap::{Arg, ArgAction, Command};

use crate::error::ConfigError;
use crate::file::{FileValue, Scalar};

/// The id of the `--config FILE` flag, which names the file and is not a setting itself.
pub(crate) const CONFIG_ID: &str = "config";

/// One long flag of a command.
#[derive(Clone, Debug)]
pub(crate) struct Setting {
    pub(crate) id: String,
    /// The long flag name: the key in a configuration file.
    pub(crate) long: String,
    /// The `HOURGLASS_*` variable, if the flag has one.
    pub(crate) env: Option<String>,
    pub(crate) shape: Shape,
    pub(crate) kind: Kind,
    /// `hide_env_values`: the project's marker of a value that may be or hold a secret.
    pub(crate) secret: bool,
    /// The flag's one-paragraph help.
    pub(crate) help: Option<String>,
    /// A global flag: valid in every subcommand too, where clap propagates a copy.
    pub(crate) global: bool,
    /// How clap names the flag in its errors (`--listen-addr <LISTEN_ADDR>`).
    pub(crate) shown: String,
    value_names: Vec<Str>,
    value_parser: ValueParser,
}

/// How a setting takes its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A flag without a value (`ArgAction::SetTrue` / `SetFalse`): present means `when_present`.
    Switch { when_present: bool },
    /// One value (`ArgAction::Set`), `true|false` flags included.
    Single,
    /// Several values: one flag per value (`ArgAction::Append`), or one flag with the values joined by
    /// the flag's delimiter (`ArgAction::Set` with a value delimiter).
    List { repeat: bool, delimiter: Option<char> },
}

/// The TOML type of a setting's values, from the type its value parser produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Boolean,
    Integer,
    Float,
    String,
}

impl Kind {
    fn of(parser: &ValueParser) -> Kind {
        let produced = parser.type_id();
        let is = |candidates: &[TypeId]| candidates.iter().any(|candidate| produced == *candidate);
        if is(&[TypeId::of::<bool>()]) {
            Kind::Boolean
        } else if is(&[
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<u128>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<i128>(),
            TypeId::of::<isize>(),
        ]) {
            Kind::Integer
        } else if is(&[TypeId::of::<f32>(), TypeId::of::<f64>()]) {
            Kind::Float
        } else {
            Kind::String
        }
    }

    /// "a boolean", "an integer", … as in an error message.
    pub(crate) fn described(self) -> &'static str {
        match self {
            Kind::Boolean => "a boolean (true or false)",
            Kind::Integer => "an integer",
            Kind::Float => "a number",
            Kind::String => "a string",
        }
    }
}

/// A value from a layer below the command line.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Layered<'a> {
    /// An environment variable's value: one raw value, as clap's own `env` took it (a delimited list is
    /// split by the flag's delimiter).
    Env(&'a str),
    /// A value from the file, already checked to fit the setting's shape and kind.
    File(&'a FileValue),
}

impl Setting {
    /// The setting `arg` is, `None` if it is none (no long name, help, version, the config file itself),
    /// or an error if the flag reads an environment variable the loader could not honour.
    fn of(arg: &Arg) -> Result<Option<Setting>, ConfigError> {
        if arg.get_id() == CONFIG_ID {
            return Ok(None);
        }
        let env = arg.get_env().map(|name| name.to_string_lossy().into_owned());
        let refuse = |reason: &'static str| match env {
            // Without a variable nothing is lost: the flag just cannot be set in the file.
            None => Ok(None),
            Some(_) => Err(ConfigError::Unlayerable { flag: arg.get_id().to_string(), reason }),
        };
        let Some(long) = arg.get_long() else {
            return refuse("it has no long name to be a key of the configuration file");
        };
        let kind = Kind::of(arg.get_value_parser());
        let num_args = arg.get_num_args().expect("the loader reads built commands");
        let delimiter = arg.get_value_delimiter();
        let shape = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                let when_present = matches!(arg.get_action(), ArgAction::SetTrue);
                let absent = if when_present { "false" } else { "true" };
                if kind != Kind::Boolean || arg.get_default_values() != [absent] {
                    return refuse("a flag without a value must be a bool that is false (or true) when absent");
                }
                Shape::Switch { when_present }
            }
            ArgAction::Set if num_args.max_values() <= 1 && delimiter.is_none() => Shape::Single,
            ArgAction::Set if delimiter.is_some() && num_args.min_values() <= 1 => {
                Shape::List { repeat: false, delimiter }
            }
            ArgAction::Append if num_args.min_values() <= 1 => Shape::List { repeat: true, delimiter },
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version => return Ok(None),
            _ => return refuse("it takes several values per flag without a delimiter, or counts occurrences"),
        };
        Ok(Some(Setting {
            id: arg.get_id().to_string(),
            long: long.to_owned(),
            env,
            shape,
            kind,
            secret: arg.is_hide_env_values_set(),
            help: arg.get_help().map(|help| help.to_string()),
            global: arg.is_global_set(),
            shown: arg.to_string(),
            value_names: arg.get_value_names().map(<[Str]>::to_vec).unwrap_or_default(),
            value_parser: arg.get_value_parser().clone(),
        }))
    }

    /// The command-line tokens that give this setting `value`, each value checked as the flag checks it.
    /// Errors are clap's words for the refusal (`invalid value 'x' for '--listen-addr <LISTEN_ADDR>': …`).
    pub(crate) fn tokens(&self, value: Layered<'_>) -> Result<Vec<OsString>, String> {
        let flag = format!("--{}", self.long);
        let with_value = |raw: &str| OsString::from(format!("{flag}={raw}"));
        let tokens = match (self.shape, value) {
            (Shape::Switch { when_present }, value) => {
                let on = match value {
                    Layered::Env(raw) => self.switch_value(raw)?,
                    Layered::File(value) => matches!(value, FileValue::Scalar(Scalar::Boolean(true))),
                };
                // A switch cannot be written with a value: absent is its other state.
                return Ok(if on == when_present { vec![OsString::from(flag)] } else { Vec::new() });
            }
            (_, Layered::Env(raw)) => vec![with_value(raw)],
            (Shape::Single, Layered::File(value)) => value.texts().iter().map(|raw| with_value(raw)).collect(),
            (Shape::List { repeat: true, .. }, Layered::File(value)) => {
                value.texts().iter().map(|raw| with_value(raw)).collect()
            }
            (Shape::List { repeat: false, delimiter }, Layered::File(value)) => {
                let joined = value.texts().join(&delimiter.map(String::from).unwrap_or_default());
                vec![with_value(&joined)]
            }
        };
        self.probe(&tokens)?;
        Ok(tokens)
    }

    /// Whether the setting takes an array in a file.
    pub(crate) fn is_list(&self) -> bool {
        matches!(self.shape, Shape::List { .. })
    }

    /// What a switch's variable says: parsed by the flag's own value parser, as clap parsed it.
    fn switch_value(&self, raw: &str) -> Result<bool, String> {
        let matches = self.probe(&[OsString::from(format!("--{}={raw}", self.long))])?;
        Ok(*matches.get_one::<bool>(&self.id).expect("a switch's value parser gives a bool"))
    }

    /// Parses `tokens` with a command holding only this flag (its long name, value names and value
    /// parser, none of its relations to other flags), so the error is the flag's own.
    fn probe(&self, tokens: &[OsString]) -> Result<clap::ArgMatches, String> {
        let action = match self.shape {
            Shape::List { repeat: true, .. } => ArgAction::Append,
            _ => ArgAction::Set,
        };
        let delimiter = match self.shape {
            Shape::List { delimiter, .. } => delimiter,
            _ => None,
        };
        let mut probe = Arg::new(self.id.clone())
            .long(self.long.clone())
            .value_parser(self.value_parser.clone())
            .action(action)
            .num_args(1)
            .value_delimiter(delimiter);
        if !self.value_names.is_empty() {
            probe = probe.value_names(self.value_names.clone());
        }
        Command::new("hourglass")
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true)
            .arg(probe)
            .try_get_matches_from(tokens)
            .map_err(|error| clap_message(&error))
    }
}

/// clap's description of an error on one line: its first paragraph, without the `error: ` prefix (the
/// usage and the hints that follow are for a command line, not for a file or a variable).
pub(crate) fn clap_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first_paragraph = rendered.split("\n\n").next().unwrap_or_default();
    let message = first_paragraph.strip_prefix("error: ").unwrap_or(first_paragraph);
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every setting of a command tree, per command.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    /// Each command's path of subcommand names (the root's is empty) and its settings: its own flags
    /// and the global flags clap propagated to it.
    commands: Vec<(Vec<String>, Vec<Setting>)>,
}

impl Tree {
    /// The settings of a built command and of every subcommand under it.
    pub(crate) fn of(command: &Command) -> Result<Tree, ConfigError> {
        let mut commands = Vec::new();
        collect(command, &mut Vec::new(), &mut commands)?;
        Ok(Tree { commands })
    }

    /// The settings of the command at `path`.
    pub(crate) fn at(&self, path: &[String]) -> &[Setting] {
        self.commands
            .iter()
            .find(|(command_path, _)| command_path == path)
            .map(|(_, settings)| settings.as_slice())
            .unwrap_or_default()
    }

    /// The names of the top-level subcommands: the tables a configuration file may have.
    pub(crate) fn subcommands(&self) -> impl Iterator<Item = &str> {
        self.commands.iter().filter(|(path, _)| path.len() == 1).map(|(path, _)| path[0].as_str())
    }

    /// Every setting named `long`, in the whole tree or only under the top-level subcommand `under`.
    pub(crate) fn named<'a>(&'a self, long: &'a str, under: Option<&'a str>) -> impl Iterator<Item = &'a Setting> {
        self.all(under).filter(move |setting| setting.long == long)
    }

    /// Every setting, in the whole tree or only under the top-level subcommand `under`.
    pub(crate) fn all<'a>(&'a self, under: Option<&'a str>) -> impl Iterator<Item = &'a Setting> {
        self.commands
            .iter()
            .filter(move |(path, _)| under.is_none_or(|name| path.first().is_some_and(|first| first == name)))
            .flat_map(|(_, settings)| settings)
    }
}

fn collect(
    command: &Command,
    path: &mut Vec<String>,
    commands: &mut Vec<(Vec<String>, Vec<Setting>)>,
) -> Result<(), ConfigError> {
    let settings = command.get_arguments().map(Setting::of).filter_map(Result::transpose).collect::<Result<_, _>>()?;
    commands.push((path.clone(), settings));
    for subcommand in command.get_subcommands() {
        // clap's generated `help` subcommand takes command names, not settings.
        if subcommand.get_name() == "help" {
            continue;
        }
        if subcommand.get_short_flag().is_some() || subcommand.get_long_flag().is_some() {
            return Err(ConfigError::Unlayerable {
                flag: subcommand.get_name().to_owned(),
                reason: "a subcommand written as a flag cannot be found on the command line",
            });
        }
        path.push(subcommand.get_name().to_owned());
        collect(subcommand, path, commands)?;
        path.pop();
    }
    Ok(())
}
