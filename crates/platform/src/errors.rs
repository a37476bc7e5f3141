//! Rendering an error with its causes, for logs and operator messages.

/// The error and every `source()` below it, joined with `": "`, so that one log field carries
/// the whole story (the top-level message alone often just says "unavailable").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
