//! Hourglass's configuration: where each setting of a role comes from.
//!
//! - [`defaults`]: a configuration struct at its flags' defaults.

#![warn(missing_docs)]

mod defaults;

pub use defaults::defaults;
