//! The servers and the deliveries `benches/load.sh` uses.
//!
//! ```text
//! load_server emit N            # N distinct signed deliveries, one per line: signature<TAB>body
//! load_server layer PORT        # axum + WebhookLayer, a no-op handler
//! load_server bare PORT         # the same handler without the layer
//! ```
//!
//! The servers run on one thread (a current-thread runtime), so pinning the process pins them.

use std::io::Write;

use aisoule_webhooks::Receiver;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, SignatureForm, SignatureHeader, test_verifier};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("emit"), Some(n)) => emit(n.parse().expect("a count")),
        (Some(mode @ ("layer" | "bare")), Some(port)) => {
            serve(mode == "layer", port.parse().expect("a port"))
        }
        _ => {
            eprintln!("usage: load_server emit N | layer PORT | bare PORT");
            std::process::exit(2);
        }
    }
}

fn emit(n: u64) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..n {
        // About 300 bytes, the size of a typical message event.
        let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
            .message_id(format!("msg_load_{i:012x}"))
            .set("/data/body", "Hi there! I need pricing info for forty units, delivered to Pune before Friday, please.")
            .header(SignatureHeader::AisouleSignature)
            .form(SignatureForm::Prefixed)
            .build();
        out.write_all(delivery.signature_value().as_bytes())
            .unwrap();
        out.write_all(b"\t").unwrap();
        out.write_all(delivery.body()).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

fn serve(layered: bool, port: u16) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let handler = post(|| async { StatusCode::OK });
        let app = if layered {
            Router::new()
                .route("/webhook", handler)
                .layer(WebhookLayer::new(Receiver::new(test_verifier())))
        } else {
            Router::new().route("/webhook", handler)
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        println!("ready");
        axum::serve(listener, app).await.unwrap();
    });
}
