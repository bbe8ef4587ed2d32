//! Where the tool's inputs come from: the secret (flag, environment or prompt) and files or
//! stdin.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use aisoule_webhooks::WebhookSecret;
use clap::Args;

use crate::error::CliError;

/// The secret's three sources, shared by every command that signs or verifies.
#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    /// The webhook secret from Settings → Webhooks. Prefer AISOULE_WEBHOOK_SECRET or the
    /// prompt: a flag stays in your shell history.
    #[arg(
        long,
        env = "AISOULE_WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,
}

impl SecretArgs {
    /// The secret as given, untrimmed, or prompted for (without echo) when stdin is a
    /// terminal. Kept as a `String` only long enough to build the secret from it.
    pub(crate) fn raw(&self) -> Result<RawSecret, CliError> {
        if let Some(secret) = &self.secret {
            return Ok(RawSecret(secret.clone()));
        }
        if std::io::stdin().is_terminal() {
            let typed = rpassword::prompt_password("Webhook secret (input hidden): ")
                .map_err(CliError::Prompt)?;
            return Ok(RawSecret(typed));
        }
        Err(CliError::NoSecret)
    }

    /// The secret, refused when empty or with surrounding whitespace (the library's checks).
    pub(crate) fn secret(&self) -> Result<WebhookSecret, CliError> {
        Ok(WebhookSecret::new(self.raw()?.0.clone())?)
    }
}

/// The secret as given, before the library's checks. No `Display`, and a `Debug` that
/// redacts it.
pub(crate) struct RawSecret(pub(crate) String);

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawSecret([redacted])")
    }
}

/// Reads a whole file, or stdin for `-`.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let result = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|read| bytes = read)
    };
    result.map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes)
}

/// `-` or a path: for arguments that default to stdin.
pub(crate) fn stdin_or(path: Option<PathBuf>) -> PathBuf {
    path.unwrap_or_else(|| PathBuf::from("-"))
}

/// Parses `90`, `90s`, `15m`, `24h` or `7d` into a duration.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(count * seconds))
}
