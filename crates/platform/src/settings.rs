//! Process settings: where Postgres, NATS and the HTTP listener are, and how to log.
//!
//! [`Settings`] is read once, in `main`, from environment variables with the defaults
//! the README documents, and then handed to each service explicitly. Parsing
//! takes any iterator of `(name, value)` pairs ([`Settings::from_vars`]) so tests never
//! touch the process environment, which is shared by every test thread.
//!
//! The business rules (pipelines, workflow, routing) are not here: they live in the TOML
//! file that `DEALSTREAM_CONFIG` points at, and the crate that uses them parses it.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

/// Names of the environment variables [`Settings`] reads.
pub mod vars {
    /// Postgres connection string, URL (`postgres://...`) or key-value form.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// NATS server URL; several may be separated by commas.
    pub const NATS_URL: &str = "NATS_URL";
    /// Socket address the HTTP API listens on.
    pub const HTTP_ADDR: &str = "DEALSTREAM_HTTP_ADDR";
    /// Path of the TOML rules file; unset means the built-in defaults.
    pub const CONFIG: &str = "DEALSTREAM_CONFIG";
    /// Name of the JetStream stream that carries the events.
    pub const NATS_STREAM: &str = "DEALSTREAM_NATS_STREAM";
    /// First token of every NATS subject and the base of durable consumer names.
    pub const SUBJECT_PREFIX: &str = "DEALSTREAM_SUBJECT_PREFIX";
    /// `text` (default) or `json`.
    pub const LOG_FORMAT: &str = "DEALSTREAM_LOG_FORMAT";
    /// Days a handled command id (an `Idempotency-Key`) is remembered.
    pub const COMMAND_RETENTION_DAYS: &str = "DEALSTREAM_COMMAND_RETENTION_DAYS";
    /// How long an HTTP request may run before it is answered 503.
    pub const HTTP_REQUEST_TIMEOUT: &str = "DEALSTREAM_HTTP_REQUEST_TIMEOUT";
    /// Socket address of the admin server (`/healthz`, `/readyz`, `/metrics`); unset: none.
    pub const ADMIN_ADDR: &str = "DEALSTREAM_ADMIN_ADDR";
    /// `on` (default): every `/v1` request needs a bearer token; `off`: local experiments only.
    pub const AUTH: &str = "DEALSTREAM_AUTH";
    /// Requests per second each API token may send; unset: no limit.
    pub const RATE_LIMIT: &str = "DEALSTREAM_RATE_LIMIT";
    /// Connection of the table owner, for `dealstream migrate`; unset: `DATABASE_URL`.
    pub const MIGRATION_URL: &str = "DEALSTREAM_MIGRATION_URL";

    /// Every variable above, in the order they are documented.
    pub const ALL: [&str; 13] = [
        DATABASE_URL,
        NATS_URL,
        HTTP_ADDR,
        CONFIG,
        NATS_STREAM,
        SUBJECT_PREFIX,
        LOG_FORMAT,
        COMMAND_RETENTION_DAYS,
        HTTP_REQUEST_TIMEOUT,
        ADMIN_ADDR,
        AUTH,
        RATE_LIMIT,
        MIGRATION_URL,
    ];
}

/// Default of `DATABASE_URL`: the local server, user `postgres`, database `dealstream`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/dealstream";
/// Default of `NATS_URL`.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default of `DEALSTREAM_HTTP_ADDR`. Loopback only: exposing the API is a deliberate choice.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default of `DEALSTREAM_NATS_STREAM`.
pub const DEFAULT_NATS_STREAM: &str = "DEALSTREAM_EVENTS";
/// Default of `DEALSTREAM_SUBJECT_PREFIX`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "dealstream";
/// Long past any client's retry window and any redelivery of the workflow's reactions, short
/// enough that the table does not grow with the store.
pub const DEFAULT_COMMAND_RETENTION_DAYS: u32 = 30;
/// A request still running after this answers 503 with `Retry-After`. It is well above the
/// read-your-writes wait, so a query waiting for its read model gets that wait's own answer.
pub const DEFAULT_HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything a dealstream process needs to know about its surroundings.
///
/// `Debug` is safe to log: passwords in the connection URLs are replaced by `***`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `DATABASE_URL`.
    pub database_url: ConnectionUrl,
    /// `NATS_URL`.
    pub nats_url: ConnectionUrl,
    /// `DEALSTREAM_HTTP_ADDR`.
    pub http_addr: SocketAddr,
    /// `DEALSTREAM_CONFIG`; `None` means the built-in rules (deploy/dealstream.toml).
    pub config_path: Option<PathBuf>,
    /// `DEALSTREAM_NATS_STREAM`.
    pub nats_stream: StreamName,
    /// `DEALSTREAM_SUBJECT_PREFIX`.
    pub subject_prefix: SubjectPrefix,
    /// `DEALSTREAM_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `DEALSTREAM_COMMAND_RETENTION_DAYS`: at least 1.
    pub command_retention_days: u32,
    /// `DEALSTREAM_HTTP_REQUEST_TIMEOUT`: `15s`, `500ms` or plain seconds.
    pub http_request_timeout: Duration,
    /// `DEALSTREAM_ADMIN_ADDR`: where every process serves health, readiness and metrics.
    pub admin_addr: Option<SocketAddr>,
    /// `DEALSTREAM_AUTH`: false only when set to `off`.
    pub authentication: bool,
    /// `DEALSTREAM_RATE_LIMIT`: requests per second per token, at least 1.
    pub rate_limit: Option<u32>,
    /// `DEALSTREAM_MIGRATION_URL`: the table owner's connection, which only `migrate` uses.
    pub migration_url: Option<ConnectionUrl>,
}

impl Settings {
    /// Reads the settings from the process environment.
    ///
    /// Only the variables in [`vars::ALL`] are looked at; a value that is not valid
    /// UTF-8 is an error naming the variable.
    pub fn from_env() -> anyhow::Result<Settings> {
        let mut found = Vec::new();
        for name in vars::ALL {
            match std::env::var(name) {
                Ok(value) => found.push((name, value)),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    bail!("environment variable {name} is not valid UTF-8")
                }
            }
        }
        Settings::from_vars(found)
    }

    /// Builds the settings from `(name, value)` pairs, as if they were the environment.
    ///
    /// Unknown names are ignored and, as in a shell, a later pair wins over an earlier one.
    /// A set but empty `DEALSTREAM_CONFIG` counts as unset; any other variable set to an
    /// empty value is an error rather than a silent fallback to the default.
    pub fn from_vars<I, K, V>(pairs: I) -> anyhow::Result<Settings>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut given: HashMap<String, String> = HashMap::new();
        for (name, value) in pairs {
            let name = name.as_ref();
            if vars::ALL.contains(&name) {
                given.insert(name.to_owned(), value.into());
            }
        }
        let value_of = |name: &str, default: &str| -> String {
            given
                .get(name)
                .cloned()
                .unwrap_or_else(|| default.to_owned())
        };

        let database_url = ConnectionUrl::parse(
            vars::DATABASE_URL,
            &value_of(vars::DATABASE_URL, DEFAULT_DATABASE_URL),
        )?;
        let nats_url =
            ConnectionUrl::parse(vars::NATS_URL, &value_of(vars::NATS_URL, DEFAULT_NATS_URL))?;

        let http_addr_text = value_of(vars::HTTP_ADDR, DEFAULT_HTTP_ADDR);
        let http_addr = http_addr_text.trim().parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "invalid {}={http_addr_text:?}: expected an IP address and port such as {DEFAULT_HTTP_ADDR} or [::1]:8080",
                vars::HTTP_ADDR
            )
        })?;

        let config_path = given
            .get(vars::CONFIG)
            .filter(|path| !path.trim().is_empty())
            .map(PathBuf::from);

        let nats_stream = StreamName::from_str(&value_of(vars::NATS_STREAM, DEFAULT_NATS_STREAM))
            .with_context(|| format!("invalid {}", vars::NATS_STREAM))?;
        let subject_prefix =
            SubjectPrefix::from_str(&value_of(vars::SUBJECT_PREFIX, DEFAULT_SUBJECT_PREFIX))
                .with_context(|| format!("invalid {}", vars::SUBJECT_PREFIX))?;
        let log_format = LogFormat::from_str(&value_of(vars::LOG_FORMAT, "text"))
            .with_context(|| format!("invalid {}", vars::LOG_FORMAT))?;

        let retention_text = value_of(
            vars::COMMAND_RETENTION_DAYS,
            &DEFAULT_COMMAND_RETENTION_DAYS.to_string(),
        );
        let command_retention_days = retention_text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|days| (1..=36_500).contains(days))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid {}={retention_text:?}: expected a whole number of days from 1 to 36500",
                    vars::COMMAND_RETENTION_DAYS
                )
            })?;

        let http_request_timeout = match given.get(vars::HTTP_REQUEST_TIMEOUT) {
            None => DEFAULT_HTTP_REQUEST_TIMEOUT,
            Some(text) => parse_request_timeout(text).map_err(|reason| {
                anyhow::anyhow!("invalid {}: {reason}", vars::HTTP_REQUEST_TIMEOUT)
            })?,
        };

        let admin_addr = given
            .get(vars::ADMIN_ADDR)
            .map(|text| {
                text.trim().parse::<SocketAddr>().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid {}={text:?}: expected an IP address and port such as 0.0.0.0:9090",
                        vars::ADMIN_ADDR
                    )
                })
            })
            .transpose()?;

        let authentication = match value_of(vars::AUTH, "on").trim() {
            "on" => true,
            "off" => false,
            other => bail!("invalid {}={other:?}: expected on or off", vars::AUTH),
        };
        let rate_limit = given
            .get(vars::RATE_LIMIT)
            .map(|text| {
                text.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|limit| *limit >= 1)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "invalid {}={text:?}: expected a whole number of requests per second, \
                             at least 1",
                            vars::RATE_LIMIT
                        )
                    })
            })
            .transpose()?;
        let migration_url = given
            .get(vars::MIGRATION_URL)
            .map(|text| ConnectionUrl::parse(vars::MIGRATION_URL, text))
            .transpose()?;

        Ok(Settings {
            database_url,
            nats_url,
            http_addr,
            config_path,
            nats_stream,
            subject_prefix,
            log_format,
            command_retention_days,
            http_request_timeout,
            admin_addr,
            authentication,
            rate_limit,
            migration_url,
        })
    }
}

impl Default for Settings {
    /// The documented defaults, the same as an empty environment.
    fn default() -> Settings {
        Settings {
            database_url: ConnectionUrl(DEFAULT_DATABASE_URL.to_owned()),
            nats_url: ConnectionUrl(DEFAULT_NATS_URL.to_owned()),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            config_path: None,
            nats_stream: StreamName(DEFAULT_NATS_STREAM.to_owned()),
            subject_prefix: SubjectPrefix(DEFAULT_SUBJECT_PREFIX.to_owned()),
            log_format: LogFormat::Text,
            command_retention_days: DEFAULT_COMMAND_RETENTION_DAYS,
            http_request_timeout: DEFAULT_HTTP_REQUEST_TIMEOUT,
            admin_addr: None,
            authentication: true,
            rate_limit: None,
            migration_url: None,
        }
    }
}

/// `15s`, `500ms` or a plain number of seconds; zero is refused, since it would refuse every
/// request.
fn parse_request_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, millis_per_unit) = match text.strip_suffix("ms") {
        Some(number) => (number, 1),
        None => (text.strip_suffix('s').unwrap_or(text), 1000),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|value| *value > 0)
        .and_then(|value| value.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is not a positive duration such as 15s or 500ms"))
}

/// A connection string that may carry a password.
///
/// `Debug` and `Display` show it with every password replaced by `***`, so it can be
/// logged; [`ConnectionUrl::expose`] gives the real string for the client library.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    /// Accepts any non-blank value; `variable` only names it in the error. The client
    /// library does the full parsing, because it knows every form it accepts.
    pub fn parse(variable: &str, value: &str) -> anyhow::Result<ConnectionUrl> {
        let value = value.trim();
        if value.is_empty() {
            bail!("{variable} is set but empty; unset it to use the default");
        }
        Ok(ConnectionUrl(value.to_owned()))
    }

    /// The string with its credentials, for the client library only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The string with passwords replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_credentials(&self.0)
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.redacted())
    }
}

impl fmt::Display for ConnectionUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.redacted())
    }
}

/// Replaces the passwords in a connection string with `***`.
///
/// Handles the forms our clients accept: `scheme://user:password@host/...` (several of
/// them separated by commas, as NATS allows), a `password=` query parameter, and the
/// libpq key-value form `host=... password=...`. A Postgres user name alone is kept: it
/// is not a secret and it helps when reading logs. A lone user part in any other scheme
/// is hidden, because NATS reads `nats://token@host` as an authentication token.
pub fn redact_credentials(text: &str) -> String {
    const HIDDEN: &str = "***";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Userinfo of each `scheme://` occurrence.
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        let scheme_start = rest[..scheme_end]
            .rfind(|character: char| character == ',' || character.is_whitespace())
            .map_or(0, |separator| separator + 1);
        let user_is_public = rest[scheme_start..scheme_end].starts_with("postgres");
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        let authority_len = after.find(['/', '?', '#', ',']).unwrap_or(after.len());
        let authority = &after[..authority_len];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(HIDDEN);
                    }
                    None if user_is_public => out.push_str(userinfo),
                    None => out.push_str(HIDDEN),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);

    // `password=...` as a query parameter or a libpq keyword, quoted or not.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(found) = find_password_key(rest) {
        let value_start = found + "password=".len();
        result.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            // A quoted libpq value ends at the next unescaped quote.
            let mut end = quoted.len();
            let mut escaped = false;
            for (index, character) in quoted.char_indices() {
                match character {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = index + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            1 + end
        } else {
            value
                .find(|character: char| character == '&' || character.is_whitespace())
                .unwrap_or(value.len())
        };
        result.push_str(HIDDEN);
        rest = &value[value_len..];
    }
    result.push_str(rest);
    result
}

/// Position of a `password=` key that starts a parameter (not, say, `old_password=`).
fn find_password_key(text: &str) -> Option<usize> {
    let mut offset = 0;
    while let Some(found) = text[offset..].find("password=") {
        let position = offset + found;
        let starts_key = text[..position]
            .chars()
            .next_back()
            .is_none_or(|before| before == '?' || before == '&' || before.is_whitespace());
        if starts_key {
            return Some(position);
        }
        offset = position + "password=".len();
    }
    None
}

/// A single NATS subject token: non-empty, and free of `.`, `*`, `>` and whitespace.
fn check_nats_token(kind: &str, value: &str) -> anyhow::Result<()> {
    if value.is_empty() {
        bail!("{kind} must not be empty");
    }
    if let Some(bad) = value
        .chars()
        .find(|character| matches!(character, '.' | '*' | '>') || character.is_whitespace())
    {
        bail!("{kind} {value:?} must be a single NATS subject token, without {bad:?}");
    }
    Ok(())
}

/// The first token of every subject dealstream publishes or subscribes to, `dealstream` by
/// default; durable consumer names derive from it too, so two deployments can share one
/// NATS server by choosing different prefixes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubjectPrefix(String);

impl SubjectPrefix {
    /// The prefix itself, e.g. `dealstream`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SubjectPrefix {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<SubjectPrefix> {
        check_nats_token("subject prefix", value)?;
        Ok(SubjectPrefix(value.to_owned()))
    }
}

impl fmt::Display for SubjectPrefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A JetStream stream name, `DEALSTREAM_EVENTS` by default.
///
/// JetStream refuses names with `.`, `*`, `>`, whitespace or path separators (the name
/// becomes a directory on the server), so this type refuses them before any connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamName(String);

impl StreamName {
    /// The name itself, e.g. `DEALSTREAM_EVENTS`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamName {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<StreamName> {
        check_nats_token("stream name", value)?;
        if value.contains(['/', '\\']) {
            bail!("stream name {value:?} must not contain '/' or '\\'");
        }
        Ok(StreamName(value.to_owned()))
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, the default for local work.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<LogFormat> {
        match value.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => bail!("log format {value:?} is not one of: text, json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        Settings::from_vars(pairs.iter().copied())
    }

    fn error_text(pairs: &[(&str, &str)]) -> String {
        format!(
            "{:#}",
            settings(pairs).expect_err("settings should be refused")
        )
    }

    #[test]
    fn an_empty_environment_gives_the_documented_defaults() {
        let parsed = settings(&[]).unwrap();
        assert_eq!(
            parsed.database_url.expose(),
            "postgres://postgres@127.0.0.1:5432/dealstream"
        );
        assert_eq!(parsed.nats_url.expose(), "nats://127.0.0.1:4222");
        assert_eq!(parsed.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(parsed.config_path, None);
        assert_eq!(parsed.nats_stream.as_str(), "DEALSTREAM_EVENTS");
        assert_eq!(parsed.subject_prefix.as_str(), "dealstream");
        assert_eq!(parsed.log_format, LogFormat::Text);
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn every_variable_can_be_overridden() {
        let parsed = settings(&[
            (
                "DATABASE_URL",
                "postgres://app:secret@db.internal:6432/sales",
            ),
            ("NATS_URL", "nats://nats-1:4222,nats://nats-2:4222"),
            ("DEALSTREAM_HTTP_ADDR", "0.0.0.0:9000"),
            ("DEALSTREAM_CONFIG", "/etc/dealstream/rules.toml"),
            ("DEALSTREAM_NATS_STREAM", "STAGING_EVENTS"),
            ("DEALSTREAM_SUBJECT_PREFIX", "staging"),
            ("DEALSTREAM_LOG_FORMAT", "JSON"),
            ("DEALSTREAM_COMMAND_RETENTION_DAYS", "7"),
        ])
        .unwrap();
        assert_eq!(parsed.command_retention_days, 7);
        assert_eq!(
            parsed.database_url.expose(),
            "postgres://app:secret@db.internal:6432/sales"
        );
        assert_eq!(
            parsed.nats_url.expose(),
            "nats://nats-1:4222,nats://nats-2:4222"
        );
        assert_eq!(parsed.http_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            parsed.config_path,
            Some(PathBuf::from("/etc/dealstream/rules.toml"))
        );
        assert_eq!(parsed.nats_stream.as_str(), "STAGING_EVENTS");
        assert_eq!(parsed.subject_prefix.as_str(), "staging");
        assert_eq!(parsed.log_format, LogFormat::Json);
    }

    #[test]
    fn security_settings_are_read_and_checked() {
        let parsed = settings(&[
            ("DEALSTREAM_AUTH", "off"),
            ("DEALSTREAM_RATE_LIMIT", "20"),
            (
                "DEALSTREAM_MIGRATION_URL",
                "postgres://owner:hunter2@db:5432/sales",
            ),
        ])
        .unwrap();
        assert!(!parsed.authentication);
        assert_eq!(parsed.rate_limit, Some(20));
        assert_eq!(
            parsed.migration_url.as_ref().map(ConnectionUrl::expose),
            Some("postgres://owner:hunter2@db:5432/sales")
        );
        assert!(!format!("{parsed:?}").contains("hunter2"));
        for (name, value) in [
            ("DEALSTREAM_AUTH", "false"),
            ("DEALSTREAM_RATE_LIMIT", "0"),
            ("DEALSTREAM_RATE_LIMIT", "fast"),
        ] {
            assert!(
                error_text(&[(name, value)]).contains(name),
                "{name}={value}"
            );
        }
    }

    #[test]
    fn unknown_variables_are_ignored_and_the_last_value_wins() {
        let parsed = settings(&[
            ("HOME", "/root"),
            ("DEALSTREAM_HTTP_ADDR", "127.0.0.1:1"),
            ("DEALSTREAM_HTTP_ADDR", "[::1]:8081"),
        ])
        .unwrap();
        assert_eq!(parsed.http_addr, "[::1]:8081".parse().unwrap());
    }

    #[test]
    fn an_empty_config_path_means_no_file() {
        let parsed = settings(&[("DEALSTREAM_CONFIG", "")]).unwrap();
        assert_eq!(parsed.config_path, None);
    }

    #[test]
    fn the_admin_address_is_optional_and_checked() {
        assert_eq!(settings(&[]).unwrap().admin_addr, None);
        let parsed = settings(&[("DEALSTREAM_ADMIN_ADDR", "0.0.0.0:9090")]).unwrap();
        assert_eq!(parsed.admin_addr, Some("0.0.0.0:9090".parse().unwrap()));
        let message = error_text(&[("DEALSTREAM_ADMIN_ADDR", "localhost")]);
        assert!(
            message.contains("DEALSTREAM_ADMIN_ADDR") && message.contains("localhost"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_http_address_names_the_variable_and_the_value() {
        for bad in [
            "localhost",
            "127.0.0.1",
            "127.0.0.1:99999",
            "",
            "localhost:8080",
        ] {
            let message = error_text(&[("DEALSTREAM_HTTP_ADDR", bad)]);
            assert!(message.contains("DEALSTREAM_HTTP_ADDR"), "{message}");
            assert!(message.contains(&format!("{bad:?}")), "{message}");
        }
    }

    #[test]
    fn a_subject_prefix_must_be_one_nats_token() {
        for bad in [
            "",
            "dealstream.prod",
            "deal*",
            "deal>",
            "deal stream",
            "tab\t",
        ] {
            let message = error_text(&[("DEALSTREAM_SUBJECT_PREFIX", bad)]);
            assert!(message.contains("DEALSTREAM_SUBJECT_PREFIX"), "{message}");
        }
        for good in ["dealstream", "staging-2", "test_4f1c"] {
            let parsed = settings(&[("DEALSTREAM_SUBJECT_PREFIX", good)]).unwrap();
            assert_eq!(parsed.subject_prefix.as_str(), good);
        }
    }

    #[test]
    fn a_stream_name_must_be_usable_by_jetstream() {
        for bad in ["", "EVENTS.V1", "A/B", "A B", "A>"] {
            let message = error_text(&[("DEALSTREAM_NATS_STREAM", bad)]);
            assert!(message.contains("DEALSTREAM_NATS_STREAM"), "{message}");
        }
    }

    #[test]
    fn request_timeouts_are_read_in_seconds_or_milliseconds() {
        let timeout = |text: &str| {
            settings(&[("DEALSTREAM_HTTP_REQUEST_TIMEOUT", text)])
                .map(|parsed| parsed.http_request_timeout)
        };
        assert_eq!(timeout("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(timeout("20").unwrap(), Duration::from_secs(20));
        assert_eq!(
            Settings::default().http_request_timeout,
            Duration::from_secs(15)
        );
        for bad in ["0s", "-1", "soon", "99999999999999999999"] {
            let message = error_text(&[("DEALSTREAM_HTTP_REQUEST_TIMEOUT", bad)]);
            assert!(
                message.contains("DEALSTREAM_HTTP_REQUEST_TIMEOUT"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_command_retention_must_be_a_positive_number_of_days() {
        for bad in ["0", "-1", "30d", "99999999999"] {
            let message = error_text(&[("DEALSTREAM_COMMAND_RETENTION_DAYS", bad)]);
            assert!(
                message.contains("DEALSTREAM_COMMAND_RETENTION_DAYS"),
                "{message}"
            );
        }
    }

    #[test]
    fn an_unknown_log_format_is_refused() {
        let message = error_text(&[("DEALSTREAM_LOG_FORMAT", "yaml")]);
        assert!(message.contains("DEALSTREAM_LOG_FORMAT"), "{message}");
        assert!(message.contains("text, json"), "{message}");
    }

    #[test]
    fn empty_connection_urls_are_refused() {
        assert!(error_text(&[("DATABASE_URL", " ")]).contains("DATABASE_URL"));
        assert!(error_text(&[("NATS_URL", "")]).contains("NATS_URL"));
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let parsed = settings(&[
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/sales"),
            ("NATS_URL", "nats://relay:s3cret@nats:4222"),
        ])
        .unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db:5432/sales"),
            "{shown}"
        );
        assert!(shown.contains("nats://relay:***@nats:4222"), "{shown}");
        assert_eq!(
            parsed.database_url.to_string(),
            "postgres://app:***@db:5432/sales"
        );
        // The client still gets the real value.
        assert_eq!(
            parsed.database_url.expose(),
            "postgres://app:hunter2@db:5432/sales"
        );
    }

    #[test]
    fn redaction_covers_every_form_the_clients_accept() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/dealstream",
                "postgres://postgres@127.0.0.1:5432/dealstream",
            ),
            ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
            // A password may itself contain ':' and (escaped or not) '@'.
            ("postgres://u:a:b@c@h:1/db", "postgres://u:***@h:1/db"),
            (
                "postgres://u@h/db?sslmode=require&password=pw",
                "postgres://u@h/db?sslmode=require&password=***",
            ),
            (
                "host=h user=u password=pw dbname=db",
                "host=h user=u password=*** dbname=db",
            ),
            (
                "host=h password='it\\'s secret' dbname=db",
                "host=h password=*** dbname=db",
            ),
            ("user=u old_password=x", "user=u old_password=x"),
            (
                "nats://a:1@n1:4222,nats://b:2@n2:4222",
                "nats://a:***@n1:4222,nats://b:***@n2:4222",
            ),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            // For NATS a lone user part is an authentication token.
            ("nats://s3cret@n:4222", "nats://***@n:4222"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_credentials(input), expected, "input {input:?}");
        }
    }
}
