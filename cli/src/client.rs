//! Sending one request, with errors a person can act on ("connection refused", "no answer
//! within 5 s") rather than the HTTP client's own wording.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{CliError, chain};

/// A checked target URL.
#[derive(Debug, Clone)]
pub(crate) struct Url(reqwest::Url);

impl Url {
    /// Parses `url`, refusing anything but `http://`.
    ///
    /// Only plain HTTP is built in (the tool targets local receivers and tunnels' local
    /// ends); `https://` is refused here rather than failing obscurely later.
    pub(crate) fn parse(url: &str) -> Result<Self, CliError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| CliError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        match parsed.scheme() {
            "http" => Ok(Self(parsed)),
            "https" => Err(CliError::Url {
                url: url.to_owned(),
                reason: "https is not supported by this build; send to the local http:// end \
                         of your tunnel"
                    .to_owned(),
            }),
            other => Err(CliError::Url {
                url: url.to_owned(),
                reason: format!("the scheme must be http, not {other}"),
            }),
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What one request got back.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The status code.
    pub(crate) status: u16,
    /// The body, as text (lossy).
    pub(crate) body: String,
    /// How long the answer took.
    pub(crate) latency: Duration,
}

/// A client for the tool's requests: no proxy (loopback targets), no redirects (the platform
/// follows none).
#[derive(Debug, Clone)]
pub(crate) struct Client(reqwest::Client);

impl Client {
    /// Builds the client.
    pub(crate) fn new() -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client without TLS builds");
        Self(client)
    }

    /// POSTs `body` with `headers` to `url`, waiting at most `timeout` for the answer.
    pub(crate) async fn post(
        &self,
        url: &Url,
        headers: &[(String, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, CliError> {
        let mut request = self.0.post(url.0.clone()).timeout(timeout).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let started = Instant::now();
        let fail = |e: reqwest::Error| CliError::Http {
            url: url.to_string(),
            reason: describe(&e, timeout),
        };
        let response = request.send().await.map_err(fail)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(fail)?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            latency: started.elapsed(),
        })
    }
}

fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    // The innermost I/O error says it best: "Connection refused (os error 111)".
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            let what = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (is the receiver running?)".to_owned()
                }
                _ => io.to_string(),
            };
            return what;
        }
        source = cause.source();
    }
    if error.is_connect() {
        return format!("cannot connect: {}", chain(error));
    }
    chain(error)
}
