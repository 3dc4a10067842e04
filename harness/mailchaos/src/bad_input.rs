//! The error every command returns for input it cannot take: printed as `mailchaos: <message>`
//! with exit code 2. Its own module so that the command line and the scenario sources both use
//! it without using each other.

use sim::scenario::ScenarioError;

pub struct BadInput(pub String);

impl From<ScenarioError> for BadInput {
    fn from(error: ScenarioError) -> Self {
        BadInput(error.to_string())
    }
}
