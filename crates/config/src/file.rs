//! The configuration file: TOML whose keys are long flag names.
//!
//! ```toml
//! kafka-brokers = "kafka-0:9092,kafka-1:9092"   # every command that has --kafka-brokers
//! database-migrate = false
//!
//! [collector]                                   # only `hourglass collector`; wins over the top level
//! listen-addr = "0.0.0.0:50051"
//! max-in-flight-bytes = 1048576
//! kafka-option = ["security.protocol=SSL"]      # a flag given once per value: an array
//! ```
//!
//! Unknown keys are refused, like serde's `deny_unknown_fields`, but checked against the command itself
//! (the settings are clap's flags, so no second list of them can drift): a key no command has, a key a
//! command's table does not have, a table for a command that does not exist, or a value of the wrong
//! TOML type. Every problem is reported at once, each with its line and, when one is close, the key
//! meant. The whole file is checked whichever command runs, so a typo in another role's table is found
//! by the first command that reads the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use crate::error::ConfigError;
use crate::origin::Origin;
use crate::setting::{Kind, Setting, Shape, Tree};

/// A checked configuration file.
#[derive(Debug)]
pub(crate) struct ConfigFile {
    path: PathBuf,
    /// Top-level keys: for every command that has the flag.
    top: BTreeMap<String, Entry>,
    /// `[command]` tables: for that command (and its subcommands) only.
    tables: BTreeMap<String, BTreeMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    value: FileValue,
    line: usize,
}

/// A value of the file, with its TOML type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FileValue {
    Scalar(Scalar),
    Array(Vec<Scalar>),
}

/// One TOML value that a flag can take.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    String(String),
    /// In decimal, whatever base the file wrote it in.
    Integer(String),
    Float(String),
    Boolean(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::String(text) | Scalar::Integer(text) | Scalar::Float(text) => text.clone(),
            Scalar::Boolean(value) => value.to_string(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Scalar::String(_) => "a string",
            Scalar::Integer(_) => "an integer",
            Scalar::Float(_) => "a float",
            Scalar::Boolean(_) => "a boolean",
        }
    }

    fn fits(&self, kind: Kind) -> bool {
        matches!(
            (kind, self),
            (Kind::Boolean, Scalar::Boolean(_))
                | (Kind::Integer, Scalar::Integer(_))
                | (Kind::Float, Scalar::Float(_) | Scalar::Integer(_))
                | (Kind::String, Scalar::String(_))
        )
    }
}

impl FileValue {
    /// The values as a flag would be given them.
    pub(crate) fn texts(&self) -> Vec<String> {
        match self {
            FileValue::Scalar(scalar) => vec![scalar.text()],
            FileValue::Array(scalars) => scalars.iter().map(Scalar::text).collect(),
        }
    }

    /// Whether this value can be `setting`'s, and if not, why not (after "`key` ").
    fn fits(&self, setting: &Setting) -> Result<(), String> {
        let kind = setting.kind;
        match (setting.shape, self) {
            (Shape::Switch { .. } | Shape::Single, FileValue::Scalar(scalar)) if scalar.fits(kind) => Ok(()),
            (Shape::Switch { .. } | Shape::Single, FileValue::Scalar(scalar)) => {
                let hint = if kind == Kind::String { " (put it in quotes)" } else { "" };
                Err(format!("takes {}, not {}{hint}", kind.described(), scalar.type_name()))
            }
            (Shape::Switch { .. } | Shape::Single, FileValue::Array(_)) => {
                Err(format!("takes one value ({}), not an array", kind.described()))
            }
            (Shape::List { .. }, FileValue::Array(scalars)) if scalars.is_empty() => {
                Err("is an empty array: leave the key out for the flag's default".to_owned())
            }
            (Shape::List { .. }, FileValue::Array(scalars)) => match scalars.iter().find(|scalar| !scalar.fits(kind)) {
                None => Ok(()),
                Some(wrong) => {
                    Err(format!("takes an array of {}, and one item is {}", plural(kind), wrong.type_name()))
                }
            },
            (Shape::List { .. }, FileValue::Scalar(_)) => Err(format!(
                "takes an array of {} (the flag can be given several times), e.g. {} = [{}]",
                plural(kind),
                setting.long,
                example(kind)
            )),
        }
    }
}

fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Boolean => "booleans",
        Kind::Integer => "integers",
        Kind::Float => "numbers",
        Kind::String => "strings",
    }
}

fn example(kind: Kind) -> &'static str {
    match kind {
        Kind::Boolean => "true",
        Kind::Integer | Kind::Float => "1, 2",
        Kind::String => "\"a\", \"b\"",
    }
}

impl ConfigFile {
    /// Reads and checks the file at `path`, named by `named_by` (`--config` or `HOURGLASS_CONFIG`).
    pub(crate) fn read(path: &Path, named_by: &str, tree: &Tree) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            named_by: named_by.to_owned(),
            source,
        })?;
        ConfigFile::parse(path, &text, tree)
    }

    /// Checks `text`, the contents of `path`, against every setting of `tree`.
    pub(crate) fn parse(path: &Path, text: &str, tree: &Tree) -> Result<ConfigFile, ConfigError> {
        let document = DeTable::parse(text).map_err(|source| ConfigError::Syntax { path: path.to_owned(), source })?;
        let mut file = ConfigFile { path: path.to_owned(), top: BTreeMap::new(), tables: BTreeMap::new() };
        let mut problems: Vec<(usize, String)> = Vec::new();
        for (key, value) in document.get_ref() {
            let name = key.get_ref().as_ref();
            let line = line_of(text, key.span().start);
            let is_command = tree.subcommands().any(|command| command == name);
            match value.get_ref() {
                DeValue::Table(table) if is_command => {
                    let entries = file.tables.entry(name.to_owned()).or_default();
                    for (key, value) in table {
                        let key_name = key.get_ref().as_ref();
                        let key_line = line_of(text, key.span().start);
                        match entry(key_name, value.get_ref(), key_line, tree, Some(name)) {
                            Ok(entry) => {
                                entries.insert(key_name.to_owned(), entry);
                            }
                            Err(problem) => problems.push((key_line, problem)),
                        }
                    }
                }
                DeValue::Table(_) => {
                    let suggestion =
                        closest(name, tree.subcommands()).map(|meant| format!(" (did you mean [{meant}]?)"));
                    problems.push((
                        line,
                        format!("[{name}] is not a command of hourglass{}", suggestion.unwrap_or_default()),
                    ));
                }
                _ if is_command && tree.named(name, None).next().is_none() => {
                    problems.push((line, format!("`{name}` is a command: its settings go in a [{name}] table")))
                }
                other => match entry(name, other, line, tree, None) {
                    Ok(entry) => {
                        file.top.insert(name.to_owned(), entry);
                    }
                    Err(problem) => problems.push((line, problem)),
                },
            }
        }
        if problems.is_empty() {
            return Ok(file);
        }
        problems.sort();
        let problems =
            problems.into_iter().map(|(line, problem)| format!("{}:{line}: {problem}", path.display())).collect();
        Err(ConfigError::Invalid { path: path.to_owned(), problems })
    }

    /// The file's value for the setting `long` of a command under the top-level subcommand `command`:
    /// from the command's table, else from the top level.
    pub(crate) fn value(&self, command: Option<&str>, long: &str) -> Option<(Origin, &FileValue)> {
        let in_table = command.and_then(|name| Some((name, self.tables.get(name)?.get(long)?)));
        if let Some((table, entry)) = in_table {
            let origin = Origin::File { path: self.path.clone(), line: entry.line, table: Some(table.to_owned()) };
            return Some((origin, &entry.value));
        }
        let entry = self.top.get(long)?;
        Some((Origin::File { path: self.path.clone(), line: entry.line, table: None }, &entry.value))
    }
}

/// The entry for `key = value` at the top level (`table` None) or in a command's table, checked against
/// every setting it applies to.
fn entry(key: &str, value: &DeValue<'_>, line: usize, tree: &Tree, table: Option<&str>) -> Result<Entry, String> {
    let settings: Vec<&Setting> = tree.named(key, table).collect();
    if settings.is_empty() {
        return Err(unknown_key(key, tree, table));
    }
    let value = file_value(value).map_err(|type_name| format!("`{key}` cannot be {type_name}"))?;
    for setting in settings {
        value.fits(setting).map_err(|why| format!("`{key}` {why}"))?;
    }
    Ok(Entry { value, line })
}

fn unknown_key(key: &str, tree: &Tree, table: Option<&str>) -> String {
    let known = || tree.all(table).map(|setting| setting.long.as_str());
    // A variable name or a field name where the flag's name belongs is the likeliest slip.
    let by_variable = tree.all(table).find(|setting| setting.env.as_deref() == Some(key)).map(|setting| &setting.long);
    let by_spelling = known().find(|long| *long == key.replace('_', "-").to_lowercase());
    let meant = by_variable.map(String::as_str).or(by_spelling).or_else(|| closest(key, known()));
    let hint = meant.map(|meant| format!(" (did you mean `{meant}`?)")).unwrap_or_default();
    match table {
        None => format!("unknown key `{key}`: no command of hourglass has a flag --{key}{hint}"),
        Some(command) => {
            let elsewhere = if tree.named(key, None).next().is_some() { "; other commands have it" } else { "" };
            format!("unknown key `{key}` in [{command}]: `hourglass {command}` has no flag --{key}{hint}{elsewhere}")
        }
    }
}

/// The candidate most like `typed`, if any is close (clap's own measure and threshold for its "did you
/// mean" on flags).
fn closest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|candidate| (strsim::jaro(typed, candidate), candidate))
        .filter(|(similarity, _)| *similarity > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The value, or the name of its TOML type if no flag can take one.
fn file_value(value: &DeValue<'_>) -> Result<FileValue, &'static str> {
    match value {
        DeValue::Array(items) => items
            .iter()
            .map(|item| scalar(item.get_ref()))
            .collect::<Result<_, _>>()
            .map(FileValue::Array)
            .map_err(|type_name| if type_name == "an array" { "an array of arrays" } else { type_name }),
        other => scalar(other).map(FileValue::Scalar),
    }
}

fn scalar(value: &DeValue<'_>) -> Result<Scalar, &'static str> {
    match value {
        DeValue::String(text) => Ok(Scalar::String(text.to_string())),
        DeValue::Integer(integer) => i128::from_str_radix(integer.as_str(), integer.radix())
            .map(|number| Scalar::Integer(number.to_string()))
            .map_err(|_| "an integer this large"),
        DeValue::Float(float) => Ok(Scalar::Float(float.as_str().to_owned())),
        DeValue::Boolean(value) => Ok(Scalar::Boolean(*value)),
        DeValue::Datetime(_) => Err("a date or time (write it as a string)"),
        DeValue::Array(_) => Err("an array"),
        DeValue::Table(_) => Err("a table"),
    }
}

/// The 1-based line of the byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|byte| **byte == b'\n').count() + 1
}
