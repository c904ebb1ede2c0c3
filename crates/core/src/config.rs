//! Configuration shared by every stage.

/// A configuration struct with every field at the default its flag declares (environment variables
/// included, as on the command line). The flags' attributes stay the one place each default is written.
pub fn defaults<T: clap::Args>() -> T {
    let matches = T::augment_args(clap::Command::new("defaults")).get_matches_from(["defaults"]);
    T::from_arg_matches(&matches).expect("every flag of a configuration struct has a default")
}
