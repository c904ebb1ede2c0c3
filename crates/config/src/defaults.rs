//! A configuration struct at its flags' defaults, for tests and for code that builds a configuration
//! without a command line.

/// A configuration struct with every field at the default its flag declares. The flags' attributes stay
/// the one place each default is written. No environment variable is read: a value from the environment
/// belongs to the layered loader ([`crate::Loader`]), which knows where it came from.
pub fn defaults<T: clap::Args>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
    let matches =
        command.try_get_matches_from(["defaults"]).expect("every flag of a configuration struct has a default");
    T::from_arg_matches(&matches).expect("every flag of a configuration struct has a default")
}

#[cfg(test)]
mod tests {
    #[derive(clap::Args)]
    struct Example {
        /// A flag read from a variable that is set while this test runs.
        #[arg(long = "path-flag", env = "PATH", default_value = "the default")]
        path_flag: String,
        #[arg(long = "count", default_value_t = 3)]
        count: u32,
        #[arg(long = "unset")]
        unset: Option<String>,
    }

    #[test]
    fn the_defaults_are_the_flags_own_and_no_environment_variable_is_read() {
        assert!(std::env::var_os("PATH").is_some(), "the test needs PATH set");
        let example: Example = super::defaults();
        assert_eq!(example.path_flag, "the default");
        assert_eq!(example.count, 3);
        assert_eq!(example.unset, None);
    }
}
