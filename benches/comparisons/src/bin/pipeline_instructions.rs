//! The tower layer's cost per delivery in instructions, for callgrind, which counts the same
//! on these noisy VMs however loaded they are.
//!
//! ```text
//! pipeline_instructions layer N   # N fresh deliveries through axum + WebhookLayer, no-op handler
//! pipeline_instructions bare N    # the same deliveries to the same handler, without the layer
//! pipeline_instructions layer-fmt N  # `layer` under a tracing fmt subscriber at INFO (to a sink)
//! pipeline_instructions bare-fmt N   # `bare` under the same subscriber
//! pipeline_instructions parse N   # Event::parse of one ~290 B delivery body, N times
//! pipeline_instructions payload N # the same, and its typed payload read too
//! pipeline_instructions derive N  # the same body into a #[derive(Deserialize)] struct that
//!                                 # borrows every field: what a hand-written handler would do
//! ```
//!
//! `benches/instructions.sh` runs both under callgrind at two values of N and prints the
//! difference per delivery, so start-up and request building cancel out.

use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::Delivery;
use aisoule_webhooks_comparisons::{pipeline_app, pipeline_request};
use tower::ServiceExt;

/// The developer dialect's message, every field borrowed, as a user would declare it.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // read by serde only: the point is the parse
struct HandWritten<'a> {
    event: &'a str,
    timestamp: u64,
    #[serde(borrow)]
    data: HandWrittenData<'a>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct HandWrittenData<'a> {
    message_id: &'a str,
    waba_number: &'a str,
    sender: &'a str,
    recipient: &'a str,
    #[serde(rename = "type")]
    message_type: &'a str,
    body: &'a str,
}

/// Parses one delivery body `count` times the way `mode` says.
fn parse_only(mode: &str, count: u64) {
    let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer).build();
    let body = delivery.body().to_vec();
    for _ in 0..count {
        let body = std::hint::black_box(body.as_slice());
        match mode {
            "parse" => {
                std::hint::black_box(aisoule_webhooks::Event::parse(body).expect("an event"));
            }
            "payload" => {
                let event = aisoule_webhooks::Event::parse(body).expect("an event");
                std::hint::black_box(event.payload());
            }
            _ => {
                std::hint::black_box(
                    serde_json::from_slice::<HandWritten<'_>>(body).expect("the sample's shape"),
                );
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, count) = match (args.get(1).map(String::as_str), args.get(2)) {
        (
            Some(
                mode @ ("layer" | "bare" | "layer-fmt" | "bare-fmt" | "parse" | "payload"
                | "derive" | "actix" | "actix-bare"),
            ),
            Some(n),
        ) => (mode, n.parse::<u64>().expect("N is a count")),
        _ => {
            eprintln!(
                "usage: pipeline_instructions \
                 layer|bare|layer-fmt|bare-fmt|parse|payload|derive|actix|actix-bare N"
            );
            std::process::exit(2);
        }
    };
    if matches!(mode, "parse" | "payload" | "derive") {
        return parse_only(mode, count);
    }
    if mode.starts_with("actix") {
        #[cfg(feature = "actix")]
        return actix_pipeline(mode == "actix", count);
        #[cfg(not(feature = "actix"))]
        {
            eprintln!("the actix modes need the `actix` feature");
            std::process::exit(2);
        }
    }
    if mode.ends_with("-fmt") {
        // What most services run: a fmt subscriber at INFO. Its lines go nowhere, so the
        // count is the formatting, not the terminal.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let app = pipeline_app(mode.starts_with("layer"));
    for n in 0..count {
        let response = runtime
            .block_on(app.clone().oneshot(pipeline_request(n)))
            .expect("infallible");
        assert_eq!(response.status(), http::StatusCode::OK);
    }
}

#[cfg(feature = "actix")]
/// `count` fresh deliveries through actix-web's test service, with the middleware or to the
/// bare handler, on actix-web's own single-threaded runtime.
fn actix_pipeline(layered: bool, count: u64) {
    use actix_web::{App, HttpResponse, test, web};
    use aisoule_webhooks::Receiver;
    use aisoule_webhooks::actix::WebhookMiddleware;
    use aisoule_webhooks::event::{Dialect, EventKind};
    use aisoule_webhooks::test_util::{Delivery, test_verifier};

    actix_web::rt::System::new().block_on(async move {
        let resource = web::resource("/webhook").route(web::post().to(HttpResponse::Ok));
        let app = if layered {
            test::init_service(
                App::new()
                    .service(resource.wrap(WebhookMiddleware::new(Receiver::new(test_verifier())))),
            )
            .await
        } else {
            test::init_service(App::new().service(resource)).await
        };
        for n in 0..count {
            let request = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
                .message_id(format!("msg_{n:016x}"))
                .build()
                .actix_request("/webhook")
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), actix_web::http::StatusCode::OK);
        }
    });
}
