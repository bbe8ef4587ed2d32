//! Verifies a delivery saved to disk, the way a receiver would.
//!
//! ```text
//! AISOULE_WEBHOOK_SECRET=whsec_… cargo run --example verify_saved_delivery -- body.json "sha256=…"
//! ```

use std::process::ExitCode;

use aisoule_webhooks::{Verifier, WebhookSecret};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(body_path), Some(signature)) = (args.next(), args.next()) else {
        eprintln!("usage: verify_saved_delivery <body-file> <signature-header-value>");
        return ExitCode::from(2);
    };
    let secret = match std::env::var("AISOULE_WEBHOOK_SECRET")
        .map_err(|_| "AISOULE_WEBHOOK_SECRET is not set".to_owned())
        .and_then(|s| WebhookSecret::new(s).map_err(|e| e.to_string()))
    {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let body = match std::fs::read(&body_path) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("error: cannot read {body_path}: {e}");
            return ExitCode::from(2);
        }
    };
    match Verifier::new(secret).verify_value(signature.as_bytes(), &body) {
        Ok(verified) => {
            println!(
                "valid: signed with the {:?} secret",
                verified.secret_label()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("invalid: {e}");
            ExitCode::FAILURE
        }
    }
}
