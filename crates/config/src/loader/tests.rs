//! The loader over a small command shaped like `hourglass`'s: roles sharing flags, a role's own default,
//! a global flag, list and boolean flags of every kind, a secret, flags that require each other, nested
//! subcommands. Environments are maps; files are written to a temporary directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use super::*;

#[derive(Parser, Debug)]
#[command(name = "prog")]
struct Cli {
    /// Log filter.
    #[arg(long = "log-filter", env = "TEST_LOG", default_value = "info", global = true)]
    log_filter: String,
    #[command(subcommand)]
    command: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    Collector(Collector),
    Query(Query),
    Standalone(Collector),
    Keys {
        /// A flag of `keys` itself, given before its subcommand.
        #[arg(long = "keys-database", env = "TEST_KEYS_DATABASE", default_value = "default-db")]
        database: String,
        #[command(subcommand)]
        command: KeysCommand,
    },
    Tool(Tool),
}

#[derive(clap::Args, Debug, Clone, PartialEq)]
struct Collector {
    /// Address the server listens on.
    #[arg(long = "listen-addr", env = "TEST_COLLECTOR_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    listen_addr: SocketAddr,
    /// Identifies this collector; the host name when unset.
    #[arg(long = "collector-id", env = "TEST_COLLECTOR_ID")]
    collector_id: Option<String>,
    /// Bytes held at once.
    #[arg(long = "max-in-flight-bytes", env = "TEST_MAX_IN_FLIGHT_BYTES", default_value_t = 4096,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..))]
    max_in_flight_bytes: usize,
    /// Extra options, one a flag.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
    /// Nodes, comma-separated.
    #[arg(long = "cql-nodes", env = "TEST_CQL_NODES", default_value = "127.0.0.1:9042", value_delimiter = ',')]
    cql_nodes: Vec<String>,
    /// Apply migrations at start-up.
    #[arg(long = "cql-migrate", env = "TEST_CQL_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    cql_migrate: bool,
    /// Keep the topic.
    #[arg(long = "keep-topic", env = "TEST_KEEP_TOPIC")]
    keep_topic: bool,
    /// Database URL.
    #[arg(
        long = "database-url",
        env = "TEST_DATABASE_URL",
        default_value = "postgres://app:default-password@db/h",
        hide_env_values = true
    )]
    database_url: String,
    /// Ratio of something.
    #[arg(long = "ratio", env = "TEST_RATIO", default_value_t = 0.5)]
    ratio: f64,
    /// TLS certificate.
    #[arg(long = "tls-cert-path", env = "TEST_TLS_CERT_PATH", requires = "tls_key_path")]
    tls_cert_path: Option<PathBuf>,
    /// TLS key.
    #[arg(long = "tls-key-path", env = "TEST_TLS_KEY_PATH", requires = "tls_cert_path")]
    tls_key_path: Option<PathBuf>,
    /// A variable every process has: the loader must not read it from the process.
    #[arg(long = "path-like", env = "PATH", default_value = "flag default")]
    path_like: String,
}

#[derive(clap::Args, Debug)]
struct Query {
    /// Address the server listens on.
    #[arg(long = "listen-addr", env = "TEST_QUERY_LISTEN_ADDR", default_value = "0.0.0.0:50052")]
    listen_addr: SocketAddr,
    /// Required, possibly from a lower layer.
    #[arg(long = "page-token-secret", env = "TEST_PAGE_TOKEN_SECRET", required = true, hide_env_values = true)]
    page_token_secret: String,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    Create {
        #[arg(long = "label", env = "TEST_LABEL", default_value = "none")]
        label: String,
    },
}

#[derive(clap::Args, Debug)]
struct Tool {
    /// A value that may begin with a dash.
    #[arg(long = "offset", allow_hyphen_values = true, default_value_t = 0)]
    offset: i64,
    /// Positional arguments after the flags.
    rest: Vec<String>,
}

const STANDALONE_LISTEN_ADDR: &str = "127.0.0.1:50051";

fn loader() -> Loader {
    let command = Cli::command().mut_subcommand("standalone", |standalone| {
        standalone.mut_arg("listen_addr", |arg| arg.default_value(STANDALONE_LISTEN_ADDR))
    });
    Loader::new(command).unwrap()
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

struct ConfigDir(tempfile::TempDir);

impl ConfigDir {
    fn new() -> ConfigDir {
        ConfigDir(tempfile::tempdir().unwrap())
    }

    /// Writes `text` as `name` in the directory; returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn load(argv: &[&str], environment: &HashMap<String, String>) -> Result<(Cli, Loaded), ConfigError> {
    let loaded = loader().load(argv, environment)?;
    Ok((Cli::from_arg_matches(loaded.matches()).unwrap(), loaded))
}

fn collector(cli: &Cli) -> &Collector {
    match &cli.command {
        Role::Collector(collector) | Role::Standalone(collector) => collector,
        other => panic!("not a collector: {other:?}"),
    }
}

fn file_origin(path: &Path, line: usize, table: Option<&str>) -> Origin {
    Origin::File { path: path.to_owned(), line, table: table.map(str::to_owned) }
}

fn invalid_problems(error: ConfigError) -> Vec<String> {
    match error {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("not an invalid file: {other:?}"),
    }
}

#[test]
fn each_setting_takes_the_highest_layer_that_has_it() {
    let dir = ConfigDir::new();
    let file = dir.file(
        "hourglass.toml",
        "listen-addr = \"10.0.0.1:1000\"\n\
         max-in-flight-bytes = 2048\n\
         collector-id = \"from-the-top\"\n\
         ratio = 0.25\n\
         [collector]\n\
         max-in-flight-bytes = 8192\n",
    );
    let config = file.to_str().unwrap();
    let environment = env(&[("TEST_COLLECTOR_LISTEN_ADDR", "10.0.0.2:2000"), ("TEST_MAX_IN_FLIGHT_BYTES", "16384")]);

    // Every layer present: the flag wins, then the variable, then the role's table, then the top level.
    let (cli, loaded) =
        load(&["prog", "collector", "--config", config, "--listen-addr", "10.0.0.3:3000"], &environment).unwrap();
    let every_layer = collector(&cli);
    assert_eq!(every_layer.listen_addr, "10.0.0.3:3000".parse().unwrap());
    assert_eq!(loaded.origin("listen-addr"), Some(Origin::Flag));
    assert_eq!(every_layer.max_in_flight_bytes, 16384);
    assert_eq!(loaded.origin("max-in-flight-bytes"), Some(Origin::Env("TEST_MAX_IN_FLIGHT_BYTES".into())));
    assert_eq!(every_layer.collector_id.as_deref(), Some("from-the-top"));
    assert_eq!(loaded.origin("collector-id"), Some(file_origin(&file, 3, None)));
    assert_eq!(every_layer.ratio, 0.25);
    assert_eq!(every_layer.cql_nodes, ["127.0.0.1:9042"]);
    assert_eq!(loaded.origin("cql-nodes"), Some(Origin::Default));

    // Without the flag the variable wins; without the variable, the table over the top level.
    let (cli, _) = load(&["prog", "collector", "--config", config], &environment).unwrap();
    assert_eq!(collector(&cli).listen_addr, "10.0.0.2:2000".parse().unwrap());
    let (cli, loaded) = load(&["prog", "collector", "--config", config], &env(&[])).unwrap();
    assert_eq!(collector(&cli).listen_addr, "10.0.0.1:1000".parse().unwrap());
    assert_eq!(collector(&cli).max_in_flight_bytes, 8192);
    assert_eq!(loaded.origin("max-in-flight-bytes"), Some(file_origin(&file, 6, Some("collector"))));

    // The top level applies to every role with the flag; [collector] to the collector only.
    let (cli, _) = load(&["prog", "standalone", "--config", config], &env(&[])).unwrap();
    assert_eq!(collector(&cli).max_in_flight_bytes, 2048);

    // No layer at all: the defaults.
    let (cli, loaded) = load(&["prog", "collector"], &env(&[])).unwrap();
    assert_eq!(collector(&cli).listen_addr, "0.0.0.0:50051".parse().unwrap());
    assert_eq!(loaded.origin("listen-addr"), Some(Origin::Default));
    assert_eq!(loaded.origin("collector-id"), None, "unset");
}

#[test]
fn the_process_environment_is_never_read() {
    assert!(std::env::var_os("PATH").is_some(), "the test needs PATH set in the process");
    let (cli, loaded) = load(&["prog", "collector"], &env(&[])).unwrap();
    assert_eq!(collector(&cli).path_like, "flag default");
    assert_eq!(loaded.origin("path-like"), Some(Origin::Default));
    let (cli, _) = load(&["prog", "collector"], &env(&[("PATH", "from the map")])).unwrap();
    assert_eq!(collector(&cli).path_like, "from the map");
}

#[test]
fn the_config_file_is_named_by_the_flag_or_the_variable_and_the_flag_wins() {
    let dir = ConfigDir::new();
    let by_variable = dir.file("by-variable.toml", "collector-id = \"by-variable\"\n");
    let by_flag = dir.file("by-flag.toml", "collector-id = \"by-flag\"\n");
    let environment = env(&[(CONFIG_ENV, by_variable.to_str().unwrap())]);
    let (cli, _) = load(&["prog", "collector"], &environment).unwrap();
    assert_eq!(collector(&cli).collector_id.as_deref(), Some("by-variable"));
    // --config is global: before or after the role's name.
    let (cli, _) = load(&["prog", "--config", by_flag.to_str().unwrap(), "collector"], &environment).unwrap();
    assert_eq!(collector(&cli).collector_id.as_deref(), Some("by-flag"));

    let missing = dir.0.path().join("missing.toml");
    let error = load(&["prog", "collector"], &env(&[(CONFIG_ENV, missing.to_str().unwrap())])).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("missing.toml") && message.contains(CONFIG_ENV), "{message}");
}

#[test]
fn list_flags_take_arrays_and_a_lower_layer_never_adds_to_the_values_typed() {
    let dir = ConfigDir::new();
    let file = dir.file(
        "lists.toml",
        "[collector]\nkafka-option = [\"a=1\", \"b=2,3\"]\ncql-nodes = [\"n1:9042\", \"n2:9042\"]\n",
    );
    let config = file.to_str().unwrap();
    let (cli, loaded) = load(&["prog", "collector", "--config", config], &env(&[])).unwrap();
    let collector_config = collector(&cli);
    // One flag per value: a comma inside a value stays in it.
    assert_eq!(collector_config.kafka_options, ["a=1", "b=2,3"]);
    assert_eq!(collector_config.cql_nodes, ["n1:9042", "n2:9042"]);
    let printed = loaded.settings().into_iter().find(|setting| setting.key == "kafka-option").unwrap();
    assert_eq!(printed.values, ["a=1", "b=2,3"]);

    // A variable holds a delimited list, as clap read it.
    let (cli, _) = load(&["prog", "collector", "--config", config], &env(&[("TEST_CQL_NODES", "e1:1,e2:2")])).unwrap();
    assert_eq!(collector(&cli).cql_nodes, ["e1:1", "e2:2"]);

    // Typed values replace the lower layers' values, never join them.
    let argv = ["prog", "collector", "--config", config, "--kafka-option", "typed=1", "--cql-nodes", "t:1"];
    let (cli, loaded) = load(&argv, &env(&[("TEST_CQL_NODES", "e1:1")])).unwrap();
    assert_eq!(collector(&cli).kafka_options, ["typed=1"]);
    assert_eq!(collector(&cli).cql_nodes, ["t:1"]);
    assert_eq!(loaded.origin("kafka-option"), Some(Origin::Flag));
}

#[test]
fn boolean_flags_layer_whether_they_take_a_value_or_not() {
    let dir = ConfigDir::new();
    let switched_on = dir.file("on.toml", "cql-migrate = false\nkeep-topic = true\n");
    let switched_off = dir.file("off.toml", "keep-topic = false\n");

    let (cli, loaded) = load(&["prog", "collector", "--config", switched_on.to_str().unwrap()], &env(&[])).unwrap();
    assert!(!collector(&cli).cql_migrate, "a true|false flag from the file");
    assert!(collector(&cli).keep_topic, "a switch from the file");
    assert_eq!(loaded.origin("keep-topic"), Some(file_origin(&switched_on, 2, None)));

    // The variable over the file, both ways; the flag over both.
    let argv = ["prog", "collector", "--config", switched_on.to_str().unwrap()];
    let (cli, loaded) = load(&argv, &env(&[("TEST_KEEP_TOPIC", "false"), ("TEST_CQL_MIGRATE", "true")])).unwrap();
    assert!(!collector(&cli).keep_topic);
    assert!(collector(&cli).cql_migrate);
    assert_eq!(loaded.origin("keep-topic"), Some(Origin::Env("TEST_KEEP_TOPIC".into())));
    let argv = ["prog", "collector", "--config", switched_off.to_str().unwrap()];
    let (cli, _) = load(&argv, &env(&[("TEST_KEEP_TOPIC", "true")])).unwrap();
    assert!(collector(&cli).keep_topic);
    let (cli, _) = load(
        &["prog", "collector", "--keep-topic", "--cql-migrate", "false"],
        &env(&[("TEST_KEEP_TOPIC", "false"), ("TEST_CQL_MIGRATE", "true")]),
    )
    .unwrap();
    assert!(collector(&cli).keep_topic);
    assert!(!collector(&cli).cql_migrate);

    // A variable the flag's parser refuses is refused, naming the variable.
    let error = load(&["prog", "collector"], &env(&[("TEST_KEEP_TOPIC", "maybe")])).unwrap_err();
    assert!(matches!(error, ConfigError::Value { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("TEST_KEEP_TOPIC (environment): invalid value 'maybe'"), "{message}");
}

#[test]
fn a_roles_own_default_holds_only_where_no_layer_set_the_value() {
    let dir = ConfigDir::new();
    let top = dir.file("top.toml", "listen-addr = \"10.0.0.1:1000\"\n");
    let table = dir.file("table.toml", "[standalone]\nlisten-addr = \"10.0.0.4:4000\"\n");
    let listen_addr = |argv: &[&str], environment: &HashMap<String, String>| {
        let (cli, loaded) = load(argv, environment).unwrap();
        (collector(&cli).listen_addr.to_string(), loaded.origin("listen-addr").unwrap())
    };
    assert_eq!(listen_addr(&["prog", "standalone"], &env(&[])), (STANDALONE_LISTEN_ADDR.to_owned(), Origin::Default));
    let environment = env(&[("TEST_COLLECTOR_LISTEN_ADDR", "10.0.0.2:2000")]);
    assert_eq!(listen_addr(&["prog", "standalone"], &environment).0, "10.0.0.2:2000");
    assert_eq!(listen_addr(&["prog", "standalone", "--config", top.to_str().unwrap()], &env(&[])).0, "10.0.0.1:1000");
    assert_eq!(listen_addr(&["prog", "standalone", "--config", table.to_str().unwrap()], &env(&[])).0, "10.0.0.4:4000");
    assert_eq!(listen_addr(&["prog", "standalone", "--listen-addr", "10.0.0.3:3000"], &env(&[])).0, "10.0.0.3:3000");
    // The collector's default is its own.
    assert_eq!(listen_addr(&["prog", "collector"], &env(&[])).0, "0.0.0.0:50051");
}

#[test]
fn unknown_keys_tables_and_wrong_types_are_refused_with_the_file_the_line_and_the_key_meant() {
    let dir = ConfigDir::new();
    let file = dir.file(
        "typos.toml",
        "listen-adr = \"10.0.0.1:1\"\n\
         TEST_MAX_IN_FLIGHT_BYTES = 4096\n\
         max-in-flight-bytes = \"4096\"\n\
         cql-nodes = \"n1:9042\"\n\
         collector = 3\n\
         [colector]\n\
         listen-addr = \"10.0.0.1:1\"\n\
         [query]\n\
         kafka-option = [\"a=1\"]\n\
         page_token_secret = \"s\"\n",
    );
    let problems =
        invalid_problems(load(&["prog", "query", "--config", file.to_str().unwrap()], &env(&[])).unwrap_err());
    let path = file.display();
    assert_eq!(
        problems,
        [
            format!(
                "{path}:1: unknown key `listen-adr`: no command of hourglass has a flag --listen-adr (did you mean `listen-addr`?)"
            ),
            format!(
                "{path}:2: unknown key `TEST_MAX_IN_FLIGHT_BYTES`: no command of hourglass has a flag --TEST_MAX_IN_FLIGHT_BYTES (did you mean `max-in-flight-bytes`?)"
            ),
            format!("{path}:3: `max-in-flight-bytes` takes an integer, not a string"),
            format!(
                "{path}:4: `cql-nodes` takes an array of strings (the flag can be given several times), e.g. cql-nodes = [\"a\", \"b\"]"
            ),
            format!("{path}:5: `collector` is a command: its settings go in a [collector] table"),
            format!("{path}:6: [colector] is not a command of hourglass (did you mean [collector]?)"),
            format!(
                "{path}:9: unknown key `kafka-option` in [query]: `hourglass query` has no flag --kafka-option; other commands have it"
            ),
            format!(
                "{path}:10: unknown key `page_token_secret` in [query]: `hourglass query` has no flag --page_token_secret (did you mean `page-token-secret`?)"
            ),
        ]
    );
    // The whole file is checked, whichever command runs.
    let other_role = load(&["prog", "collector", "--config", file.to_str().unwrap()], &env(&[])).unwrap_err();
    assert_eq!(invalid_problems(other_role).len(), 8);

    let not_toml = dir.file("broken.toml", "listen-addr = \n");
    let error = load(&["prog", "collector", "--config", not_toml.to_str().unwrap()], &env(&[])).unwrap_err();
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
}

#[test]
fn a_value_the_flag_refuses_is_refused_naming_where_it_came_from() {
    let dir = ConfigDir::new();
    let file = dir.file("values.toml", "[collector]\ncollector-id = \"c\"\nlisten-addr = \"not an address\"\n");
    let error = load(&["prog", "collector", "--config", file.to_str().unwrap()], &env(&[])).unwrap_err();
    assert!(matches!(error, ConfigError::Value { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:3: `listen-addr` in [collector]: invalid value 'not an address' for '--listen-addr <LISTEN_ADDR>': \
             invalid socket address syntax",
            file.display()
        )
    );
    let error = load(&["prog", "collector"], &env(&[("TEST_MAX_IN_FLIGHT_BYTES", "12")])).unwrap_err().to_string();
    assert!(error.starts_with("TEST_MAX_IN_FLIGHT_BYTES (environment): invalid value '12'"), "{error}");
    // A typed value keeps clap's own error.
    let typed = load(&["prog", "collector", "--listen-addr", "nope"], &env(&[])).unwrap_err();
    assert!(
        matches!(&typed, ConfigError::CommandLine(error) if error.kind() == clap::error::ErrorKind::ValueValidation)
    );
}

#[test]
fn rules_between_flags_hold_across_layers() {
    // A required flag may come from a lower layer.
    let environment = env(&[("TEST_PAGE_TOKEN_SECRET", "from the environment")]);
    let (cli, _) = load(&["prog", "query"], &environment).unwrap();
    let Role::Query(query) = cli.command else { panic!("not query") };
    assert_eq!(query.page_token_secret, "from the environment");
    let missing = load(&["prog", "query"], &env(&[])).unwrap_err();
    assert!(
        matches!(&missing, ConfigError::CommandLine(error) if error.kind() == clap::error::ErrorKind::MissingRequiredArgument)
    );

    // A flag another requires: the pair from different layers is fine; half of it names the layer.
    let dir = ConfigDir::new();
    let file = dir.file("tls.toml", "tls-key-path = \"key.pem\"\n");
    let environment = env(&[("TEST_TLS_CERT_PATH", "cert.pem")]);
    let (cli, _) = load(&["prog", "collector", "--config", file.to_str().unwrap()], &environment).unwrap();
    assert_eq!(collector(&cli).tls_key_path.as_deref(), Some(Path::new("key.pem")));
    let error = load(&["prog", "collector"], &environment).unwrap_err().to_string();
    assert_eq!(
        error,
        "TEST_TLS_CERT_PATH (environment): the following required arguments were not provided: \
         --tls-key-path <TLS_KEY_PATH>"
    );
}

#[test]
fn help_still_shows_each_flags_variable() {
    let error = load(&["prog", "collector", "--help"], &env(&[])).unwrap_err();
    let ConfigError::CommandLine(help) = error else { panic!("not help: {error:?}") };
    assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    let text = help.to_string();
    assert!(text.contains("[env: TEST_COLLECTOR_LISTEN_ADDR="), "{text}");
    assert!(text.contains("--config <FILE>") && text.contains("[env: HOURGLASS_CONFIG"), "{text}");
}

#[test]
fn layered_values_go_right_after_the_selected_commands_name() {
    // A global flag's value that is a command's name is not the command; a positional after the flags
    // does not swallow the layered tokens; a value beginning with a dash stays a value.
    let environment = env(&[("TEST_LOG", "debug")]);
    let argv = ["prog", "--log-filter", "collector", "tool", "--offset", "-3", "a", "b"];
    let (cli, loaded) = load(&argv, &environment).unwrap();
    assert_eq!(loaded.subcommand_path(), ["tool"]);
    assert_eq!(cli.log_filter, "collector");
    let Role::Tool(tool) = cli.command else { panic!("not the tool") };
    assert_eq!((tool.offset, tool.rest.as_slice()), (-3, ["a".to_owned(), "b".to_owned()].as_slice()));
    assert_eq!(loaded.without_subcommands(1), ["prog", "--log-filter", "collector", "--offset", "-3", "a", "b"]);

    // A global flag from a lower layer reaches the top-level struct; nested subcommands layer too, and
    // so does the parent's own flag, which is written before the subcommand's name.
    let environment = env(&[("TEST_LOG", "debug"), ("TEST_LABEL", "l"), ("TEST_KEYS_DATABASE", "env-db")]);
    let (cli, loaded) = load(&["prog", "keys", "create"], &environment).unwrap();
    assert_eq!(cli.log_filter, "debug");
    assert_eq!(loaded.subcommand_path(), ["keys", "create"]);
    let Role::Keys { database, command: KeysCommand::Create { label } } = cli.command else {
        panic!("not keys create")
    };
    assert_eq!((database.as_str(), label.as_str()), ("env-db", "l"));
    assert_eq!(loaded.origin("keys-database"), Some(Origin::Env("TEST_KEYS_DATABASE".into())));

    let dir = ConfigDir::new();
    let file = dir.file("keys.toml", "[keys]\nkeys-database = \"file-db\"\nlabel = \"file-label\"\n");
    let argv = ["prog", "--config", file.to_str().unwrap(), "keys", "create", "--label", "typed"];
    let (cli, loaded) = load(&argv, &env(&[])).unwrap();
    let Role::Keys { database, command: KeysCommand::Create { label } } = cli.command else {
        panic!("not keys create")
    };
    assert_eq!((database.as_str(), label.as_str()), ("file-db", "typed"));
    assert_eq!(loaded.origin("keys-database"), Some(file_origin(&file, 2, Some("keys"))));
    let (cli, _) = load(&["prog", "keys", "--keys-database", "typed-db", "create"], &environment).unwrap();
    let Role::Keys { database, .. } = cli.command else { panic!("not keys") };
    assert_eq!(database, "typed-db");
}

#[test]
fn printed_settings_load_back_with_secrets_hidden_and_unset_ones_commented_out() {
    let dir = ConfigDir::new();
    let file = dir.file("given.toml", "[collector]\nkafka-option = [\"a=1\", \"b=2\"]\nratio = 0.75\n");
    let environment = env(&[("TEST_DATABASE_URL", "postgres://app:s3cret@db:5432/h"), ("TEST_KEEP_TOPIC", "true")]);
    let argv = ["prog", "collector", "--config", file.to_str().unwrap(), "--cql-nodes", "n1:1,n2:2"];
    let loaded = loader().load(argv, &environment).unwrap();
    let printed = loaded.to_toml();
    assert!(printed.contains("\n[collector]\n"), "{printed}");
    assert!(printed.contains("cql-nodes = [\"n1:1\", \"n2:2\"] # flag\n"), "{printed}");
    assert!(printed.contains("keep-topic = true # env TEST_KEEP_TOPIC\n"), "{printed}");
    assert!(printed.contains(&format!("ratio = 0.75 # file {}:3 [collector]\n", file.display())), "{printed}");
    assert!(printed.contains("max-in-flight-bytes = 4096 # default\n"), "{printed}");
    assert!(
        printed.contains("database-url = \"postgres://app:<hidden>@db:5432/h\" # env TEST_DATABASE_URL"),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("# collector-id = <unset>\n"), "{printed}");
    assert!(printed.contains("# Address the server listens on\n"), "{printed}");

    // Loaded back with nothing else, every setting has the same values, from the printed file.
    let reprinted = dir.file("printed.toml", &printed);
    let reloaded = loader().load(["prog", "collector", "--config", reprinted.to_str().unwrap()], &env(&[])).unwrap();
    for (before, after) in loaded.settings().into_iter().zip(reloaded.settings()) {
        assert_eq!(before.key, after.key);
        match before.key.as_str() {
            "database-url" => assert_eq!(after.values, ["postgres://app:<hidden>@db:5432/h"]),
            // `--config` is not a setting; the file's path is in every origin instead.
            _ => assert_eq!(before.values, after.values, "{}", before.key),
        }
        let from_printed = matches!(&after.origin, Some(Origin::File { path, .. }) if *path == reprinted);
        assert!(from_printed || after.origin.is_none(), "{}: {:?}", after.key, after.origin);
    }
}

#[test]
fn a_flag_whose_variable_cannot_be_honoured_is_refused_when_the_loader_is_built() {
    let command = clap::Command::new("prog")
        .arg(clap::Arg::new("verbose").short('v').long("verbose").env("TEST_VERBOSE").action(clap::ArgAction::Count));
    let error = Loader::new(command).unwrap_err();
    assert!(matches!(error, ConfigError::Unlayerable { .. }), "{error:?}");
}
