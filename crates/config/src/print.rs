//! `hourglass config print`: a loaded configuration written as a configuration file the loader accepts
//! back, each setting with its help and where its value came from, secrets hidden.

use std::fmt::Write;

use crate::loader::Loaded;
use crate::setting::Kind;

/// What a secret's value prints as.
pub const HIDDEN: &str = "<hidden>";

/// Width of the help comments.
const COMMENT_WIDTH: usize = 110;

impl Loaded {
    /// The selected command's settings as TOML, in the command's `[table]`: each with its help as a
    /// comment and its origin after it (`flag`, `env HOURGLASS_X`, `file PATH:LINE`, `default`). Secrets
    /// (`hide_env_values`) print as `"<hidden>"`, a Postgres URL with only its password hidden. A setting
    /// without a value is commented out. Loading the text back as a file gives the same values for
    /// every setting that is not a secret.
    pub fn to_toml(&self) -> String {
        let command_line = std::iter::once("hourglass").chain(self.subcommand_path().iter().map(String::as_str));
        let command_line = command_line.collect::<Vec<_>>().join(" ");
        let mut text = format!(
            "# The configuration `{command_line}` runs with, and where each value comes from: a flag, an\n\
             # environment variable, a configuration file, or the default. Secrets show as \"{HIDDEN}\".\n\
             # This file loads back: {command_line} --config FILE\n"
        );
        if let Some(table) = self.subcommand_path().first() {
            let _ = write!(text, "\n[{table}]\n");
        }
        let effective = self.settings();
        let mut printed_keys = std::collections::BTreeSet::new();
        for ((depth, setting), loaded) in self.settings.iter().zip(effective) {
            // A subcommand may reuse a parent's flag name: the file has one key for both, printed once.
            if !printed_keys.insert(setting.long.as_str()) {
                continue;
            }
            let matches = self.matches_at(*depth);
            text.push('\n');
            if let Some(help) = &setting.help {
                for line in wrap(help, COMMENT_WIDTH - 2) {
                    let _ = writeln!(text, "# {line}");
                }
            }
            let Some(origin) = loaded.origin else {
                let _ = writeln!(text, "# {} = <unset>", setting.long);
                continue;
            };
            let values: Vec<String> = if setting.secret {
                loaded.values.iter().map(|value| hidden(value)).collect()
            } else if setting.kind == Kind::Boolean {
                // Typed, not raw: a boolish parser may have taken "yes" for true, and the file wants a boolean.
                let booleans = matches.get_many::<bool>(&setting.id).into_iter().flatten();
                booleans.map(bool::to_string).collect()
            } else {
                loaded.values.iter().map(|value| toml_value(setting.kind, value)).collect()
            };
            let value = if setting.is_list() { format!("[{}]", values.join(", ")) } else { values.join(", ") };
            // "<hidden>" is a string: a secret of another type cannot be written back, so it stays a comment.
            let commented = if setting.secret && setting.kind != Kind::String { "# " } else { "" };
            let _ = writeln!(text, "{commented}{} = {value} # {origin}", setting.long);
        }
        text
    }
}

/// A value as TOML of its setting's type.
fn toml_value(kind: Kind, raw: &str) -> String {
    let as_string = || toml::Value::String(raw.to_owned()).to_string();
    match kind {
        Kind::Integer => raw.parse::<i128>().map(|number| number.to_string()).unwrap_or_else(|_| as_string()),
        Kind::Float => match raw.parse::<f64>() {
            Ok(number) => toml::Value::Float(number).to_string(),
            Err(_) => as_string(),
        },
        Kind::Boolean | Kind::String => as_string(),
    }
}

/// A secret as a TOML string: `"<hidden>"`, or a Postgres URL with only its password hidden (the rest
/// says which server and database; the user name is not a secret). A URL that carries parameters (which
/// may hold a password too) is hidden whole.
fn hidden(value: &str) -> String {
    toml::Value::String(shown_secret(value)).to_string()
}

/// A secret as logs and `Debug` may show it: a Postgres URL with only its password hidden, anything
/// else [`HIDDEN`] whole (the rules of `config print`). Debug impls of configurations that hold a secret
/// use it, so a configuration logged with `?` leaks nothing.
pub fn shown_secret(value: &str) -> String {
    postgres_url_without_password(value).unwrap_or_else(|| HIDDEN.to_owned())
}

fn postgres_url_without_password(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    if !matches!(scheme, "postgres" | "postgresql") || rest.contains(['?', '#']) {
        return None;
    }
    // The host part follows the last '@': a password may hold an unescaped '@', a host never does.
    let (user_info, host_part) = rest.rsplit_once('@')?;
    let (user, _password) = user_info.split_once(':')?;
    Some(format!("{scheme}://{user}:{HIDDEN}@{host_part}"))
}

/// `text` in lines of at most `width` characters, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_keeps_all_but_its_password() {
        assert_eq!(hidden("postgres://app:s3cret@db:5432/hourglass"), "\"postgres://app:<hidden>@db:5432/hourglass\"");
        assert_eq!(hidden("postgresql://app:p@ss@db/h"), "\"postgresql://app:<hidden>@db/h\"");
        // Parameters may carry a password: the whole URL is hidden.
        assert_eq!(hidden("postgres://app@db/h?password=s3cret"), "\"<hidden>\"");
        // No password to hide in the user part, or no user: hidden whole, as any other secret.
        assert_eq!(hidden("postgres://token@db/h"), "\"<hidden>\"");
        assert_eq!(hidden("postgres://db/h"), "\"<hidden>\"");
        assert_eq!(hidden("http://app:s3cret@collector:50051"), "\"<hidden>\"");
        assert_eq!(hidden("leaked"), "\"<hidden>\"");
    }

    #[test]
    fn values_print_as_toml_of_their_type() {
        assert_eq!(toml_value(Kind::Integer, "+0042"), "42");
        assert_eq!(toml_value(Kind::Float, "0.5"), "0.5");
        assert_eq!(toml_value(Kind::Float, "2"), "2.0");
        assert_eq!(
            toml_value(Kind::String, "a \"quoted\" \\ value"),
            toml::Value::String("a \"quoted\" \\ value".into()).to_string()
        );
        assert_eq!(toml_value(Kind::String, "127.0.0.1:50051"), "\"127.0.0.1:50051\"");
    }

    #[test]
    fn help_wraps_between_words() {
        assert_eq!(wrap("one two three four", 9), ["one two", "three", "four"]);
        assert_eq!(wrap("short", 80), ["short"]);
    }
}
