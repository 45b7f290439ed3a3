//! Identifier newtypes. Each is a non-empty string without whitespace; parsing
//! rejects anything else so that ids are safe to use as store keys and subjects.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    /// Which kind of id (workflow, execution, trigger).
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                validate($kind, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                validate($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn validate(kind: &'static str, s: &str) -> Result<(), InvalidId> {
    let reason = if s.is_empty() {
        "must not be empty"
    } else if s.len() > 256 {
        "must be at most 256 bytes"
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(InvalidId {
        kind,
        value: s.to_owned(),
        reason,
    })
}

id_type!(
    /// Names a workflow definition.
    WorkflowId,
    "workflow id"
);
id_type!(
    /// Names one run of a workflow.
    ExecutionId,
    "execution id"
);
id_type!(
    /// Names a trigger within an execution.
    TriggerId,
    "trigger id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_and_whitespace() {
        assert!("".parse::<ExecutionId>().is_err());
        assert!("a b".parse::<TriggerId>().is_err());
        let id: WorkflowId = "wordcount".parse().expect("valid id");
        assert_eq!(id.to_string(), "wordcount");
        let err = serde_json::from_str::<ExecutionId>("\"\"").expect_err("empty rejected");
        assert!(err.to_string().contains("must not be empty"));
    }
}
