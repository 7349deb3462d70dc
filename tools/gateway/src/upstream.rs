//! The pooled HTTP client that carries forwarded requests to the homeserver (hyper, rustls).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::metrics::Metrics;
use crate::translate::{UpstreamOutcome, UpstreamRequest, UpstreamResponse};

/// The homeserver URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Not an absolute http:// or https:// URL.
    InvalidUrl(String),
    /// The system's TLS roots could not be loaded.
    TlsRoots(String),
}

impl core::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InvalidUrl(url) => write!(
                f,
                "the homeserver URL {url:?} is not an absolute http:// or https:// URL"
            ),
            Self::TlsRoots(why) => write!(
                f,
                "the system's TLS root certificates could not be loaded: {why}"
            ),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// A connection pool to one homeserver.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Scheme and authority plus any base path, without a trailing slash.
    base: String,
    metrics: Metrics,
    max_response_body: usize,
}

impl Upstream {
    /// A client for `homeserver` (`http://host:port` or `https://host[/base]`).
    pub fn new(
        homeserver: &str,
        metrics: Metrics,
        max_response_body: usize,
    ) -> Result<Self, UpstreamError> {
        let uri: http::Uri = homeserver
            .parse()
            .map_err(|_| UpstreamError::InvalidUrl(homeserver.to_owned()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(UpstreamError::InvalidUrl(homeserver.to_owned()));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| UpstreamError::TlsRoots(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            // Mostly small Matrix JSON; a smaller first read buffer keeps the cost of each held
            // observer long-poll connection down (the buffer still grows for large bodies).
            .http1_read_buf_exact_size(2048)
            .build(connector);
        Ok(Self {
            client,
            base: homeserver.trim_end_matches('/').to_owned(),
            metrics,
            max_response_body,
        })
    }

    /// Performs one request; never fails, every problem is an outcome.
    pub async fn send(&self, request: UpstreamRequest) -> UpstreamOutcome {
        let timeout = request.timeout;
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(outcome) => outcome,
            Err(_) => UpstreamOutcome::Timeout,
        }
    }

    /// Sends `request` and reads the answer, without a timeout of its own: [`Self::send`] sets it.
    async fn exchange(&self, request: UpstreamRequest) -> UpstreamOutcome {
        let limit = request.max_response_body.unwrap_or(self.max_response_body);
        let Some(http_request) = self.http_request(request) else {
            return UpstreamOutcome::Unreachable;
        };
        let response = match self.client.request(http_request).await {
            Ok(r) => r,
            Err(e) => {
                // hyper's own message is "client error (Connect)": the why is in its sources.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    why = format!("{why}: {inner}");
                    source = inner.source();
                }
                tracing::warn!(error = %why, "the gateway cannot reach the homeserver at {}", self.base);
                return UpstreamOutcome::Unreachable;
            }
        };
        self.read_response(response, limit).await
    }

    /// The HTTP request for `request`, with its bearer token and body; `None` if the path
    /// makes no valid URI.
    fn http_request(&self, request: UpstreamRequest) -> Option<http::Request<Full<Bytes>>> {
        let url = format!("{}{}", self.base, request.path_and_query);
        let mut builder = http::Request::builder().method(request.method).uri(url);
        if let Some(token) = &request.access_token {
            builder = builder.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            );
        }
        let body = match request.json_body {
            Some(body) => {
                let content_type = request
                    .content_type
                    .as_deref()
                    .unwrap_or("application/json");
                builder = builder.header(http::header::CONTENT_TYPE, content_type);
                self.metrics.http_bytes_out.inc_by(body.len() as u64);
                Bytes::from(body)
            }
            None => Bytes::new(),
        };
        builder.body(Full::new(body)).ok()
    }

    /// The homeserver's response as an outcome: status, the headers the gateway passes on,
    /// and the body if it is at most `limit` bytes.
    async fn read_response(
        &self,
        response: http::Response<hyper::body::Incoming>,
        limit: usize,
    ) -> UpstreamOutcome {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match Limited::new(response.into_body(), limit).collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return UpstreamOutcome::TooLarge;
            }
            Err(_) => return UpstreamOutcome::Unreachable,
        };
        self.metrics.http_bytes_in.inc_by(body.len() as u64);
        UpstreamOutcome::Response(UpstreamResponse {
            status,
            retry_after,
            body,
            content_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homeserver_urls_are_checked() {
        assert!(Upstream::new("http://127.0.0.1:8008", Metrics::default(), 1024).is_ok());
        // https loads the system's roots (rustls with ring).
        assert!(Upstream::new("https://matrix.example.org/", Metrics::default(), 1024).is_ok());
        for bad in ["ftp://example.org", "example.org", "/relative", "http://"] {
            let err = Upstream::new(bad, Metrics::default(), 1024).unwrap_err();
            assert!(matches!(err, UpstreamError::InvalidUrl(_)), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn outcomes_for_unreachable_and_silent_homeservers() {
        let request = |timeout| UpstreamRequest {
            method: http::Method::GET,
            path_and_query: "/_matrix/client/versions".into(),
            access_token: None,
            json_body: None,
            content_type: None,
            max_response_body: None,
            timeout,
        };
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let upstream =
            Upstream::new(&format!("http://{closed}"), Metrics::default(), 1024).unwrap();
        assert_eq!(
            upstream.send(request(Duration::from_secs(5))).await,
            UpstreamOutcome::Unreachable
        );
        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream::new(
            &format!("http://{}", silent.local_addr().unwrap()),
            Metrics::default(),
            1024,
        )
        .unwrap();
        assert_eq!(
            upstream.send(request(Duration::from_millis(200))).await,
            UpstreamOutcome::Timeout
        );
    }
}
