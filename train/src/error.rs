//! The one error type of the train crate: a message for the user, already naming the file,
//! flag or value at fault, printed as one line by the CLI.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainError(pub String);

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrainError {}

impl From<String> for TrainError {
    fn from(s: String) -> Self {
        TrainError(s)
    }
}

impl From<&str> for TrainError {
    fn from(s: &str) -> Self {
        TrainError(s.to_string())
    }
}

impl From<model::weights::WeightsError> for TrainError {
    fn from(e: model::weights::WeightsError) -> Self {
        TrainError(e.to_string())
    }
}

impl From<crate::tokenizer::TokenizerError> for TrainError {
    fn from(e: crate::tokenizer::TokenizerError) -> Self {
        TrainError(e.to_string())
    }
}

/// Attaches a path to an I/O error.
pub fn io_error(path: &std::path::Path, e: std::io::Error) -> TrainError {
    TrainError(format!("{}: {e}", path.display()))
}
