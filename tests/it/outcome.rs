//! Every delivery's outcome, named on the response (`aisoule-outcome`) for access logs and
//! proxies, and once in the log at INFO.

use aisoule_webhooks::OUTCOME_HEADER;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::Delivery;

use crate::e2e::{ANSWER_TIMEOUT, Framework, TEST_LIMIT, message, start, test_now, test_receiver};

/// The status and the outcome header of one delivery.
async fn send(url: &str, delivery: &Delivery) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .timeout(ANSWER_TIMEOUT)
        .body(delivery.body().clone());
    for (name, value) in &delivery.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let response = request.send().await.expect("the server answers");
    let outcome = response
        .headers()
        .get(OUTCOME_HEADER)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {OUTCOME_HEADER} header"));
    (response.status().as_u16(), outcome)
}

pub(crate) async fn every_answer_names_its_outcome<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let url = server.url();
    let fresh = message(Dialect::Developer, "outcome-1");
    assert_eq!(send(&url, &fresh).await, (200, "handled".into()));
    // A duplicate is also a 200: only the header tells it apart.
    assert_eq!(
        send(&url, &fresh.redelivery()).await,
        (200, "duplicate".into())
    );
    let failing = message(Dialect::Help, "fail-once-outcome");
    assert_eq!(send(&url, &failing).await, (500, "released".into()));
    assert_eq!(
        send(&url, &failing.redelivery()).await,
        (200, "handled".into())
    );
    let panicking = message(Dialect::Help, "panic-once-outcome");
    assert_eq!(send(&url, &panicking).await, (500, "released".into()));
    assert_eq!(
        send(&url, &message(Dialect::Help, "forged").forged()).await,
        (401, "signature".into())
    );
    let big = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .set("/data/text", "x".repeat(TEST_LIMIT))
        .timestamp_at(test_now())
        .build();
    assert_eq!(send(&url, &big).await, (413, "too_large".into()));
}

/// axum runs the handler inside the request's task, whose logs the test server captures; the
/// delivery's one INFO line says how its claim was settled.
pub(crate) async fn the_outcome_is_logged_once_at_info<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let url = server.url();
    send(&url, &message(Dialect::Developer, "logged-1")).await;
    send(&url, &message(Dialect::Help, "fail-once-logged")).await;
    let text = server.logs.text();
    let info: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(" INFO "))
        .collect();
    let handled: Vec<&&str> = info
        .iter()
        .filter(|line| line.contains("logged-1"))
        .collect();
    assert_eq!(handled.len(), 1, "{text}");
    assert!(
        handled[0].contains("claim committed") && handled[0].contains("outcome=\"handled\""),
        "{text}"
    );
    let released: Vec<&&str> = info
        .iter()
        .filter(|line| line.contains("fail-once-logged") && line.contains("claim released"))
        .collect();
    assert_eq!(released.len(), 1, "{text}");
    assert!(released[0].contains("status=500"), "{text}");
}

/// A panicking handler's delivery is settled and logged like any other failure: one warn line
/// naming the panic, and no "dropped before it was settled" warning.
pub(crate) async fn a_panic_is_logged_once_with_its_message<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let url = server.url();
    let panicking = message(Dialect::Help, "panic-once-logged");
    assert_eq!(send(&url, &panicking).await, (500, "released".into()));
    let text = server.logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("panic-once-logged"))
        .filter(|line| line.contains(" WARN ") || line.contains(" INFO "))
        .filter(|line| !line.contains("delivery admitted"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains(" WARN ")
            && lines[0].contains("the handler panicked; claim released")
            && lines[0].contains("the test handler panics on its first call")
            && lines[0].contains("outcome=\"released\""),
        "{text}"
    );
    assert!(!text.contains("dropped before it was settled"), "{text}");
}

macro_rules! outcome_cases {
    ($module:ident, $framework:ty; $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case::<$framework>().await;
                }
            )*
        }
    };
}

outcome_cases!(axum, crate::axum::Axum; every_answer_names_its_outcome, the_outcome_is_logged_once_at_info, a_panic_is_logged_once_with_its_message);
#[cfg(feature = "actix-web")]
outcome_cases!(actix, crate::actix::Actix; every_answer_names_its_outcome);
