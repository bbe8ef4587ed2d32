//! `sign`: the headers for a body, ready to paste into curl.

use std::path::PathBuf;

use aisoule_webhooks::sign;
use clap::Args;
use serde_json::json;

use super::{FormArg, HeaderArg, header_value};
use crate::error::CliError;
use crate::input::{SecretArgs, read_file, stdin_or};

/// Arguments of `sign`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  export AISOULE_WEBHOOK_SECRET=whsec_…
  aisoule-webhooks sign body.json
  # a whole curl command, to run or paste
  aisoule-webhooks sign --curl http://127.0.0.1:8080/webhook body.json
  printf '%s' \"$BODY\" | aisoule-webhooks sign --header webhook")]
pub(crate) struct SignArgs {
    /// The body to sign, byte for byte (`-` or nothing for stdin).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The signature header.
    #[arg(long, value_enum, default_value = "aisoule")]
    header: HeaderArg,
    /// How to write the digest; by default as the platform does in that header.
    #[arg(long, value_enum)]
    form: Option<FormArg>,
    /// Print a whole curl command posting the body to this URL, instead of header lines.
    #[arg(long, value_name = "URL")]
    curl: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// Runs `sign`.
pub(crate) fn run(args: SignArgs, json_output: bool) -> Result<(), CliError> {
    let secret = args.secret.secret()?;
    let body = read_file(&stdin_or(args.file.clone()))?;
    let form = args.form.map_or(args.header.usual_form(), FormArg::form);
    let signature = sign(&secret, &body);
    let value = header_value(&signature, form);
    let name = args.header.display_name();
    if json_output {
        let line = json!({
            "headers": { "Content-Type": "application/json", name: value },
            "signature_hex": signature.to_hex(),
            "body_bytes": body.len(),
        });
        println!("{line}");
    } else if let Some(url) = &args.curl {
        let data = match &args.file {
            Some(path) if path.as_os_str() != "-" => {
                format!("@{}", shell_quote(&path.display().to_string()))
            }
            _ => shell_quote(&String::from_utf8_lossy(&body)),
        };
        println!(
            "curl -sS -X POST {} -H 'Content-Type: application/json' -H '{name}: {value}' --data-binary {data}",
            shell_quote(url)
        );
    } else {
        println!("Content-Type: application/json");
        println!("{name}: {value}");
    }
    Ok(())
}

/// `text` in single quotes for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
