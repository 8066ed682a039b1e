use std::fmt;

/// One finding of `schemas check`: which file, which field (dotted path),
/// which rule, and what to do about it. Printed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub field: Option<String>,
    pub rule: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(file: impl Into<String>, rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            field: None,
            rule,
            message: message.into(),
        }
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}: {}: {}: {}",
                self.file, field, self.rule, self.message
            ),
            None => write!(f, "{}: -: {}: {}", self.file, self.rule, self.message),
        }
    }
}
