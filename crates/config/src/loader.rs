//! The layered loader: a command line, an environment given as a map, and an optional TOML file become
//! one set of clap matches, with the origin of every setting.
//!
//! How: clap is given no environment (every `env` is stripped from the command it parses; the command
//! shown by `--help` keeps them, so help still says `[env: HOURGLASS_…]`). The loader parses what the user
//! typed, finds the commands it selects (`keys`, then `keys create`) and where their names are on the
//! command line, and for each of their settings the user did not type, takes the environment's value,
//! else the file's, and writes it as a `--name=value` token right after the name of the command that
//! has the flag (a global flag: after the last one), before the user's own arguments there. The command
//! line is then parsed once more: every value, whatever its layer, goes through the same parser and the
//! same rules (`requires`, `conflicts_with`), and a setting the user typed is never given a second value
//! by a lower layer (a list flag is never appended to). Defaults stay clap's, so a command's own
//! defaults (standalone's listen address) hold exactly when no layer set the value.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

use crate::error::ConfigError;
use crate::file::ConfigFile;
use crate::origin::Origin;
use crate::setting::{CONFIG_ID, Layered, Setting, Tree, clap_message};

/// The variable that names the configuration file when `--config` does not.
pub const CONFIG_ENV: &str = "HOURGLASS_CONFIG";

/// Loads a command's configuration from its command line, an environment and a configuration file.
#[derive(Clone, Debug)]
pub struct Loader {
    /// The command as `--help` shows it, each flag's `[env: …]` included.
    shown: Command,
    /// The same command without any `env`: clap reads no process environment while parsing.
    strict: Command,
    /// `strict` that keeps going past errors, to learn what was typed when a required flag is missing
    /// from the command line (a lower layer may supply it).
    partial: Command,
    tree: Tree,
}

/// A loaded configuration: clap's matches, and where each setting of the selected command came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    matches: ArgMatches,
    argv: Vec<OsString>,
    /// The selected command's path of subcommand names, and where each name is in `argv`.
    path: Vec<String>,
    positions: Vec<usize>,
    /// The settings of the commands along the path, outermost first, each with its command's depth
    /// (0: the root): the selected command's own and global ones, and its parents' own.
    pub(crate) settings: Vec<(usize, Setting)>,
    /// The origin of each setting a layer set, by depth and id.
    origins: BTreeMap<(usize, String), Origin>,
}

/// One setting of the selected command as loaded: see [`Loaded::settings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveSetting {
    /// The long flag name, which is also the key in a configuration file.
    pub key: String,
    /// The values as the flag takes them (one for most flags; none when unset).
    pub values: Vec<String>,
    /// Where they came from; None when the setting has no value (optional and unset).
    pub origin: Option<Origin>,
    /// Marked secret (`hide_env_values`): never print the values as they are.
    pub secret: bool,
}

fn config_arg() -> Arg {
    Arg::new(CONFIG_ID)
        .long("config")
        .env(CONFIG_ENV)
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .global(true)
        .help(
            "TOML file of settings, below the HOURGLASS_* variables and the flags: each key a long flag name \
             (top level: every command with that flag; a [command] table: that command only). `hourglass config \
             print <ROLE>` shows a role's settings in this form",
        )
}

impl Loader {
    /// A loader for `command`, to which it adds the global `--config FILE` flag (`HOURGLASS_CONFIG`).
    /// Fails if a flag reads a variable the loader cannot honour (see [`ConfigError::Unlayerable`]).
    pub fn new(command: Command) -> Result<Loader, ConfigError> {
        let mut shown = command.arg(config_arg());
        shown.build();
        let tree = Tree::of(&shown)?;
        let strict = without_env(shown.clone());
        let partial = ignoring_errors(strict.clone());
        Ok(Loader { shown, strict, partial, tree })
    }

    /// The command as its help shows it, with `--config`.
    pub fn command(&self) -> &Command {
        &self.shown
    }

    /// Loads `argv` (the program name first) over `env` and the configuration file that `--config` or
    /// `HOURGLASS_CONFIG` names. Precedence per setting: flag, environment, the file's table of the
    /// selected (top-level) command, the file's top level, the default.
    pub fn load<I, T>(&self, argv: I, env: &HashMap<String, String>) -> Result<Loaded, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let typed = self.typed(&argv)?;
        let path = subcommand_path(&typed);
        let positions = self.positions(&argv, &path);
        let file = self.file(at(&typed, &path), env)?;

        let mut settings = Vec::new();
        let mut origins = BTreeMap::new();
        let mut layered = Vec::new();
        for depth in 0..=path.len() {
            let typed_here = at(&typed, &path[..depth]);
            let is_selected = depth == path.len();
            // A global flag is the selected command's: clap propagates it there, and it is layered once.
            let here = self.tree.at(&path[..depth]).iter().filter(|setting| is_selected || !setting.global);
            for setting in here {
                settings.push((depth, setting.clone()));
                let key = (depth, setting.id.clone());
                if typed_here.value_source(&setting.id) == Some(ValueSource::CommandLine) {
                    origins.insert(key, Origin::Flag);
                    continue;
                }
                let from_env = setting
                    .env
                    .as_ref()
                    .and_then(|name| Some((Origin::Env(name.clone()), Layered::Env(env.get(name)?))));
                let from_file = || {
                    let file = file.as_ref()?;
                    let (origin, value) = file.value(path.first().map(String::as_str), &setting.long)?;
                    Some((origin, Layered::File(value)))
                };
                let Some((origin, value)) = from_env.or_else(from_file) else { continue };
                let tokens = setting
                    .tokens(value)
                    .map_err(|message| ConfigError::Value { origin: origin.describe(&setting.long), message })?;
                layered.push(LayeredSetting { setting, depth, origin: origin.clone(), tokens });
                origins.insert(key, origin);
            }
        }

        let matches = self
            .strict
            .clone()
            .try_get_matches_from(with_layers(&argv, &positions, &layered, None))
            .map_err(|error| self.layered_error(error, &argv, &positions, &layered))?;
        Ok(Loaded { matches, argv, path, positions, settings, origins })
    }

    /// The command line as typed, parsed without any lower layer.
    fn typed(&self, argv: &[OsString]) -> Result<ArgMatches, ConfigError> {
        match self.strict.clone().try_get_matches_from(argv) {
            Ok(matches) => Ok(matches),
            // A lower layer may supply it: see what was typed, and let the final parse decide.
            Err(error) if error.kind() == ErrorKind::MissingRequiredArgument => {
                self.partial.clone().try_get_matches_from(argv).map_err(|error| self.command_line_error(error, argv))
            }
            Err(error) => Err(self.command_line_error(error, argv)),
        }
    }

    /// Where each subcommand name of `path` is in `argv`: the first token with the name (or an alias)
    /// such that the command line up to it selects the subcommand, so a flag's value that happens to
    /// be a command's name is not taken for it.
    fn positions(&self, argv: &[OsString], path: &[String]) -> Vec<usize> {
        let mut positions = Vec::with_capacity(path.len());
        let mut command = &self.partial;
        let mut from = 1;
        for (depth, name) in path.iter().enumerate() {
            let subcommand = command.find_subcommand(name).expect("the parse selected this subcommand");
            let names: Vec<&str> = std::iter::once(subcommand.get_name()).chain(subcommand.get_all_aliases()).collect();
            let selects = |end: usize| {
                let is_name = argv[end].to_str().is_some_and(|token| names.contains(&token));
                is_name
                    && self
                        .partial
                        .clone()
                        .try_get_matches_from(&argv[..=end])
                        .is_ok_and(|matches| subcommand_path(&matches).starts_with(&path[..=depth]))
            };
            let found = (from..argv.len()).find(|end| selects(*end));
            let position = found.expect("a subcommand the parse selected is on the command line");
            positions.push(position);
            from = position + 1;
            command = subcommand;
        }
        positions
    }

    /// The configuration file named on the command line or in the environment, read and checked.
    fn file(&self, typed: &ArgMatches, env: &HashMap<String, String>) -> Result<Option<ConfigFile>, ConfigError> {
        let (path, named_by) = match typed.get_one::<PathBuf>(CONFIG_ID) {
            Some(path) => (path.clone(), "--config"),
            None => match env.get(CONFIG_ENV) {
                Some(path) => (PathBuf::from(path), CONFIG_ENV),
                None => return Ok(None),
            },
        };
        ConfigFile::read(&path, named_by, &self.tree).map(Some)
    }

    /// clap's error for the command line as typed. Help and version are rendered from the command as
    /// shown, so that help lists each flag's variable (clap reads the process environment for that
    /// text only, as it always did).
    fn command_line_error(&self, error: clap::Error, argv: &[OsString]) -> ConfigError {
        let is_help = matches!(
            error.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        if is_help
            && let Err(shown) = self.shown.clone().try_get_matches_from(argv)
            && shown.kind() == error.kind()
        {
            return ConfigError::CommandLine(shown);
        }
        ConfigError::CommandLine(error)
    }

    /// An error of the final parse: if a lower layer's value is what the error is about (a conflict, a
    /// `requires` it brings in), it names that layer; otherwise it is the command line's.
    fn layered_error(
        &self,
        error: clap::Error,
        argv: &[OsString],
        positions: &[usize],
        layered: &[LayeredSetting<'_>],
    ) -> ConfigError {
        let named_flags: Vec<&str> = [ContextKind::InvalidArg, ContextKind::PriorArg]
            .into_iter()
            .filter_map(|kind| error.get(kind))
            .flat_map(|value| match value {
                ContextValue::String(flag) => vec![flag.as_str()],
                ContextValue::Strings(flags) => flags.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            })
            .collect();
        let named = layered.iter().position(|layer| named_flags.contains(&layer.setting.shown.as_str()));
        // A flag that requires another names only the missing one: the layered value to blame is the
        // one without which the error goes away.
        let culprit = named.or_else(|| {
            (0..layered.len()).find(|skipped| {
                let without =
                    self.strict.clone().try_get_matches_from(with_layers(argv, positions, layered, Some(*skipped)));
                without.is_ok() || without.is_err_and(|other| other.kind() != error.kind())
            })
        });
        match culprit {
            Some(index) => {
                let LayeredSetting { setting, origin, .. } = &layered[index];
                ConfigError::Value { origin: origin.describe(&setting.long), message: clap_message(&error) }
            }
            None => self.command_line_error(error, argv),
        }
    }
}

/// A setting given its value by the environment or the file.
struct LayeredSetting<'a> {
    setting: &'a Setting,
    /// The depth of the command that has the flag (0: the root).
    depth: usize,
    origin: Origin,
    tokens: Vec<OsString>,
}

/// `argv` with the layered settings' tokens (all, or all but the one at `skipped`), each right after the
/// name of the command that has the flag: in that command's scope, before anything typed there. The
/// root's go right after the program name; `positions` are the indexes of the subcommands' names.
fn with_layers(
    argv: &[OsString],
    positions: &[usize],
    layered: &[LayeredSetting<'_>],
    skipped: Option<usize>,
) -> Vec<OsString> {
    let mut layered_argv = Vec::with_capacity(argv.len() + layered.len());
    for (index, token) in argv.iter().enumerate() {
        layered_argv.push(token.clone());
        let depth = match index {
            0 => Some(0),
            _ => positions.iter().position(|position| *position == index).map(|level| level + 1),
        };
        let Some(depth) = depth else { continue };
        for (layer_index, layer) in layered.iter().enumerate() {
            if layer.depth == depth && Some(layer_index) != skipped {
                layered_argv.extend(layer.tokens.iter().cloned());
            }
        }
    }
    layered_argv
}

impl Loaded {
    /// The matches of the whole command line, lower layers included: what `FromArgMatches` reads.
    pub fn matches(&self) -> &ArgMatches {
        &self.matches
    }

    /// The names of the selected subcommands, outermost first (`["keys", "create"]`).
    pub fn subcommand_path(&self) -> &[String] {
        &self.path
    }

    /// The command line with the names of its first `levels` subcommands taken out:
    /// `hourglass config print collector --x 1` with 2 is `hourglass collector --x 1`.
    pub fn without_subcommands(&self, levels: usize) -> Vec<OsString> {
        let removed = &self.positions[..levels.min(self.positions.len())];
        self.argv
            .iter()
            .enumerate()
            .filter(|(index, _)| !removed.contains(index))
            .map(|(_, token)| token.clone())
            .collect()
    }

    /// Every setting of the selected command (its parents' own flags first) with its values and their
    /// origin, in the commands' order.
    pub fn settings(&self) -> Vec<EffectiveSetting> {
        self.settings
            .iter()
            .map(|(depth, setting)| {
                let matches = self.matches_at(*depth);
                let values: Vec<String> = matches
                    .get_raw(&setting.id)
                    .map(|raw| raw.map(|value| value.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                let origin = match self.origins.get(&(*depth, setting.id.clone())) {
                    Some(origin) => Some(origin.clone()),
                    None if matches.value_source(&setting.id) == Some(ValueSource::DefaultValue) => {
                        Some(Origin::Default)
                    }
                    None => None,
                };
                EffectiveSetting { key: setting.long.clone(), values, origin, secret: setting.secret }
            })
            .collect()
    }

    /// The origin of the setting `key` (a long flag name), None when unset or not a setting here.
    pub fn origin(&self, key: &str) -> Option<Origin> {
        self.settings().into_iter().find(|setting| setting.key == key).and_then(|setting| setting.origin)
    }

    /// The matches of the command at `depth` of the selected path (0: the root).
    pub(crate) fn matches_at(&self, depth: usize) -> &ArgMatches {
        at(&self.matches, &self.path[..depth])
    }
}

fn subcommand_path(matches: &ArgMatches) -> Vec<String> {
    let mut path = Vec::new();
    let mut current = matches;
    while let Some((name, sub_matches)) = current.subcommand() {
        path.push(name.to_owned());
        current = sub_matches;
    }
    path
}

/// The matches of the subcommand at `path`.
fn at<'a>(matches: &'a ArgMatches, path: &[String]) -> &'a ArgMatches {
    path.iter().fold(matches, |current, name| current.subcommand_matches(name).expect("a selected subcommand"))
}

fn without_env(command: Command) -> Command {
    command.mut_args(|arg| arg.env(None)).mut_subcommands(without_env)
}

fn ignoring_errors(command: Command) -> Command {
    command.ignore_errors(true).mut_subcommands(ignoring_errors)
}

#[cfg(test)]
mod tests;
