//! `--help` of every command of the built binary, with every secret-bearing `HOURGLASS_*` variable set:
//! clap shows an option's environment value in help unless told not to, and a help text ends up in
//! terminals, tickets and CI logs. No secret may appear.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");

/// Each secret-bearing variable, with a value that names it so a leak says which one it was.
const SECRETS: &[(&str, &str)] = &[
    ("HOURGLASS_KAFKA_OPTIONS", "sasl.username=app;sasl.password=leaked-kafka-password,with-comma"),
    ("HOURGLASS_DATABASE_URL", "postgres://app:leaked-database-password@db:5432/hourglass"),
    ("HOURGLASS_READ_DATABASE_URL", "postgres://app:leaked-replica-password@replica:5432/hourglass"),
    ("HOURGLASS_PAGE_TOKEN_SECRET", "leaked-page-token-secret"),
    ("HOURGLASS_API_KEY", "leaked-ingest-api-key"),
    ("HOURGLASS_QUERY_API_KEY", "leaked-query-api-key"),
    ("HOURGLASS_TARGET", "http://app:leaked-target-password@collector:50051"),
];

fn help(command_path: &[String]) -> String {
    let output = Command::new(BINARY)
        .args(command_path)
        .arg("--help")
        .envs(SECRETS.iter().copied())
        .output()
        .expect("run hourglass --help");
    assert!(output.status.success(), "{command_path:?} --help failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The subcommands a help text lists (without `help`).
fn subcommands(help_text: &str) -> Vec<String> {
    help_text
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_help_text_shows_a_secret_from_the_environment() {
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    let mut helps: Vec<(String, String)> = Vec::new();
    while let Some(command_path) = pending.pop() {
        let text = help(&command_path);
        for subcommand in subcommands(&text) {
            pending.push(command_path.iter().cloned().chain([subcommand]).collect());
        }
        helps.push((command_path.join(" "), text));
    }
    assert!(
        helps.len() > 20,
        "every command and subcommand: {:?}",
        helps.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );

    for (command, text) in &helps {
        assert!(!text.contains("leaked"), "`hourglass {command} --help` shows a secret:\n{text}");
    }
    // Not vacuous: the variables are there, named, without their values.
    let help_of = |command: &str| &helps.iter().find(|(name, _)| name == command).unwrap().1;
    assert!(help_of("collector").contains("HOURGLASS_KAFKA_OPTIONS"));
    assert!(help_of("collector").contains("--kafka-option <KEY=VALUE>"));
    assert!(help_of("query").contains("HOURGLASS_PAGE_TOKEN_SECRET"));
    assert!(help_of("query").contains("HOURGLASS_READ_DATABASE_URL"));
    assert!(help_of("aggregator").contains("HOURGLASS_DATABASE_URL"));
    assert!(help_of("send").contains("HOURGLASS_API_KEY"));
}
