//! One receiver for many AISoule accounts, on axum: each account posts to
//! `/webhooks/aisoule/{account}` and signs with its own secret.
//!
//! ```text
//! AISOULE_ACCOUNTS=acme=whsec_…,globex=whsec_… [PORT=8080] \
//!     cargo run --example multi_account --features axum
//! ```
//!
//! The accounts' secrets live in a map here; a real integrator keeps them in a database and
//! looks them up the same way. The receiver caches each account's answer for a minute, so a
//! rotated secret written to the store is taken without a restart. An unknown account is
//! answered 404, a failing store 503 with `Retry-After`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::receiver::{ResolveError, SecretResolver};
use aisoule_webhooks::{Receiver, VerifiedEvent, Verifier, WebhookSecret};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

/// The accounts' secrets, by account name: stands in for the integrator's database.
#[derive(Clone, Default)]
struct AccountSecrets(Arc<RwLock<HashMap<String, Verifier>>>);

impl SecretResolver for AccountSecrets {
    async fn resolve(&self, account: &str) -> Result<Option<Verifier>, ResolveError> {
        // A database query here; its error goes in `ResolveError::lookup`, and the delivery
        // is answered 503 so that the platform sends it again.
        let accounts = self
            .0
            .read()
            .map_err(|_| ResolveError::lookup("the account map's lock is poisoned"))?;
        Ok(accounts.get(account).cloned())
    }
}

async fn handle(event: VerifiedEvent) -> StatusCode {
    // The account whose secret verified the delivery, from the route's `{account}`.
    let account = event.account().unwrap_or("?");
    println!(
        "{account}: {} {}",
        event.kind(),
        event.message_id().unwrap_or("-")
    );
    StatusCode::OK
}

/// `acme=whsec_…,globex=whsec_…`, one verifier per account.
fn accounts_from(text: &str) -> Result<HashMap<String, Verifier>, String> {
    text.split(',')
        .map(|pair| {
            let (account, secret) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not account=secret"))?;
            let secret = WebhookSecret::new(secret)
                .map_err(|error| format!("the secret of {account:?}: {error}"))?;
            Ok((account.to_owned(), Verifier::new(secret)))
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(text) = std::env::var("AISOULE_ACCOUNTS") else {
        eprintln!("set AISOULE_ACCOUNTS=account=whsec_…[,account=whsec_…]");
        return ExitCode::FAILURE;
    };
    let accounts = match accounts_from(&text) {
        Ok(accounts) => accounts,
        Err(error) => {
            eprintln!("AISOULE_ACCOUNTS: {error}");
            return ExitCode::FAILURE;
        }
    };
    let secrets = AccountSecrets(Arc::new(RwLock::new(accounts)));
    let receiver = match Receiver::for_accounts(secrets).build() {
        Ok(receiver) => receiver,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new().route(
        "/webhooks/aisoule/{account}",
        // On the method router, so the layer runs after routing and sees `{account}`.
        post(handle).layer(WebhookLayer::new(receiver)),
    );
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = match tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("listening on http://127.0.0.1:{port}/webhooks/aisoule/{{account}}");
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
