//! OpenTelemetry export of the engine's spans over OTLP (cargo feature `otel`, on by default;
//! docs/observability.md). When an endpoint is configured (`FLUJO_OTLP_ENDPOINT`, the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, or `[telemetry] otlp_endpoint` in
//! flujo.toml), [`from_config`] gives a `tracing` layer that hands the `flujo.run`, `flujo.step` and
//! `gen_ai.chat` spans — and nothing else — to an OpenTelemetry batch processor, which sends them over
//! http/protobuf (reqwest with rustls) or gRPC (tonic). The batch processor runs on its own thread; the
//! exports themselves run on the command's Tokio runtime, each bounded in time, so an unreachable collector
//! costs a warning on stderr (once) and never fails or holds up a run. [`Exporter::shutdown`] flushes what
//! is left when the command ends (at most [`FLUSH_TIMEOUT`]). Without the feature, [`from_config`] returns
//! no layer, and a configured endpoint gets a warning.

// Without the feature only the settings are read (to warn that nothing is exported).
#![cfg_attr(not(feature = "otel"), allow(dead_code))]

use std::time::Duration;

/// The longest the end of a command waits for the last spans to be delivered.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The `tracing` layer [`from_config`] returns (with its per-layer filter inside).
pub type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The wire protocol of the OTLP exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf` (the default): `POST {endpoint}/v1/traces` with an `ExportTraceServiceRequest`.
    HttpProtobuf,
    /// `grpc`: the `TraceService/Export` call.
    Grpc,
}

/// Where and how spans are exported, as resolved from the environment and flujo.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The full URL spans are sent to (`…/v1/traces` for http/protobuf; the server's URL for gRPC).
    pub url: String,
    /// The setting the URL came from (for messages).
    pub source: &'static str,
    pub protocol: Protocol,
    /// The `service.name` resource attribute: `OTEL_SERVICE_NAME`, else `flujo`.
    pub service_name: String,
}

/// The standard header of extra request headers (`key=value,key2=value2`, values URL-encoded).
const HEADER_VARS: &[&str] = &["OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The export settings, `None` when no endpoint is configured or export is switched off
/// (`OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`). `table` is the whole flujo.toml.
/// Errors are configuration errors (an unknown protocol, a malformed URL or header list), with secrets
/// (URL passwords, header values) masked.
pub fn settings(table: &toml::Table) -> Result<Option<Settings>, String> {
    let (file_endpoint, file_protocol) = telemetry_table(table)?;
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let protocol = match ["FLUJO_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
        .iter()
        .find_map(|v| env(v).map(|p| (p, *v)))
        .or(file_protocol.map(|p| (p, "[telemetry] otlp_protocol")))
    {
        None => Protocol::HttpProtobuf,
        Some((p, from)) => match p.as_str() {
            "http/protobuf" => Protocol::HttpProtobuf,
            "grpc" => Protocol::Grpc,
            other => {
                return Err(format!(
                    "{from}: unknown OTLP protocol '{other}' (known: http/protobuf, grpc; http/json is not supported)"
                ))
            }
        },
    };
    // A base URL gets the signal's path (`/v1/traces`) with http/protobuf; the per-signal variable is used
    // as it is (the OTLP exporter specification).
    let found = [
        ("FLUJO_OTLP_ENDPOINT", true),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", false),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", true),
    ]
    .iter()
    .find_map(|(v, base)| env(v).map(|e| (e, *v, *base)))
    .or(file_endpoint.map(|e| (e, "[telemetry] otlp_endpoint", true)));
    let Some((endpoint, source, base)) = found else {
        return Ok(None);
    };
    let url = check_url(&endpoint).map_err(|why| format!("{source}: '{}' {why}", mask_url(&endpoint)))?;
    for var in HEADER_VARS {
        if let Some(list) = env(var) {
            check_headers(&list).map_err(|why| format!("{var}: {why}"))?;
        }
    }
    let url = match protocol {
        Protocol::HttpProtobuf if base && !url.trim_end_matches('/').ends_with("/v1/traces") => {
            format!("{}/v1/traces", url.trim_end_matches('/'))
        }
        _ => url,
    };
    let service_name = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "flujo".to_owned());
    Ok(Some(Settings { url, source, protocol, service_name }))
}

/// `[telemetry] otlp_endpoint` and `otlp_protocol` of flujo.toml.
fn telemetry_table(table: &toml::Table) -> Result<(Option<String>, Option<String>), String> {
    let Some(t) = table.get("telemetry") else {
        return Ok((None, None));
    };
    let t = t.as_table().ok_or("[telemetry] must be a table")?;
    let (mut endpoint, mut protocol) = (None, None);
    for (k, v) in t {
        let slot = match k.as_str() {
            "otlp_endpoint" => &mut endpoint,
            "otlp_protocol" => &mut protocol,
            other => return Err(format!("unknown key telemetry.{other} (known: otlp_endpoint, otlp_protocol)")),
        };
        let s = v.as_str().ok_or_else(|| format!("telemetry.{k} must be a string"))?;
        *slot = Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    }
    Ok((endpoint, protocol))
}

/// The endpoint as a URL string, checked: `http` or `https` with a host.
fn check_url(endpoint: &str) -> Result<String, &'static str> {
    let (scheme, rest) = endpoint.split_once("://").ok_or("is not a URL (expected http://HOST:PORT)")?;
    if !matches!(scheme, "http" | "https") {
        return Err("is not an http:// or https:// URL");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() || endpoint.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("is not a valid URL (no host)");
    }
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => host_port.split_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err("is not a valid URL (bad port)");
    }
    Ok(endpoint.to_owned())
}

/// `key=value,…` with a non-empty key in each item; never quotes a value.
fn check_headers(list: &str) -> Result<(), String> {
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((k, _)) if !k.trim().is_empty() && k.trim().bytes().all(|b| b.is_ascii_graphic()) => {}
            Some((k, _)) => return Err(format!("'{}=***' has an invalid header name", k.trim())),
            None => return Err("an item is not key=value (values are masked here)".to_owned()),
        }
    }
    Ok(())
}

/// `url` with a password in its user part replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{}", &rest[end..])
        }
        None => url.to_owned(),
    }
}

/// The values of `OTEL_EXPORTER_OTLP_*HEADERS` and the URL's password, to mask in messages.
fn secrets(url: &str) -> Vec<String> {
    let mut out: Vec<String> = HEADER_VARS
        .iter()
        .filter_map(|v| env(v))
        .flat_map(|list| {
            list.split(',').filter_map(|i| i.split_once('=').map(|(_, v)| v.trim().to_owned())).collect::<Vec<_>>()
        })
        .collect();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((user, _)) = authority.rsplit_once('@') {
            if let Some((_, pass)) = user.split_once(':') {
                out.push(pass.to_owned());
            }
        }
    }
    out.retain(|s| s.len() >= 3);
    out
}

fn masked(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |t, s| t.replace(s.as_str(), "***"))
}

/// The spans that are exported: the run, its steps and their model calls.
pub fn is_exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && matches!(meta.name(), "flujo.run" | "flujo.step" | "gen_ai.chat")
}

/// The exporter's layer and its handle for the end of the command, or `None` when export is not configured.
/// Must be called inside the Tokio runtime that runs the command (`rt.enter()`): exports run on it.
#[cfg(feature = "otel")]
pub fn from_config(table: &toml::Table) -> Result<Option<(BoxedLayer, Exporter)>, String> {
    match settings(table)? {
        None => Ok(None),
        Some(s) => imp::install(&s).map(Some),
    }
}

/// Without the `otel` feature: never a layer; a configured endpoint gets a warning.
#[cfg(not(feature = "otel"))]
pub fn from_config(table: &toml::Table) -> Result<Option<(BoxedLayer, Exporter)>, String> {
    if let Some(s) = settings(table)? {
        crate::errln!(
            "warning: {} is set but this flujo was built without the `otel` feature; spans are not exported",
            s.source
        );
    }
    Ok(None)
}

/// The running exporter; [`Exporter::shutdown`] delivers the spans still buffered.
#[derive(Debug)]
pub struct Exporter {
    #[cfg(feature = "otel")]
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Exporter {
    /// Flushes and stops the exporter, waiting at most [`FLUSH_TIMEOUT`]. Call it while the command's runtime
    /// is still alive (the exports run on it).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        {
            // On a thread of its own: a bounded wait even if the processor does not answer.
            let (tx, rx) = std::sync::mpsc::channel();
            let provider = self.provider;
            let spawned = std::thread::Builder::new().name("flujo-otel-shutdown".into()).spawn(move || {
                let _ = provider.shutdown_with_timeout(FLUSH_TIMEOUT);
                let _ = tx.send(());
            });
            if spawned.is_ok() {
                let _ = rx.recv_timeout(FLUSH_TIMEOUT + Duration::from_millis(200));
            }
        }
    }
}

#[cfg(feature = "otel")]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use opentelemetry_sdk::Resource;
    use tracing_subscriber::Layer as _;

    use super::{mask_url, masked, secrets, BoxedLayer, Exporter, Protocol, Settings};

    /// One export's bound (the request's own timeout is shorter); a slow collector drops the batch.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(4);
    /// The exporter's request timeout.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

    pub(super) fn install(s: &Settings) -> Result<(BoxedLayer, Exporter), String> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| "OTLP export needs the async runtime (internal error)".to_owned())?;
        let secrets = secrets(&s.url);
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "{}: cannot set up OTLP export to '{}': {}",
                s.source,
                mask_url(&s.url),
                masked(&e.to_string(), &secrets)
            )
        };
        // Retries stay short: a collector that is down must not hold up the end of a command.
        let retry = RetryPolicy::recommended()
            .with_max_retries(1)
            .with_initial_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(400))
            .with_max_jitter(Duration::from_millis(50));
        let resource = Resource::builder()
            .with_service_name(s.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let target =
            format!("{} ({})", mask_url(&s.url), if s.protocol == Protocol::Grpc { "grpc" } else { "http/protobuf" });
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let builder = match s.protocol {
            Protocol::HttpProtobuf => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(s.url.clone())
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_retry_policy(retry)
                    .with_http_client(http_client().map_err(|e| fail(&e))?)
                    .build()
                    .map_err(|e| fail(&e))?;
                builder.with_batch_exporter(OnRuntime::new(exporter, rt, target, secrets.clone()))
            }
            Protocol::Grpc => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(s.url.clone())
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_retry_policy(retry)
                    .build()
                    .map_err(|e| fail(&e))?;
                builder.with_batch_exporter(OnRuntime::new(exporter, rt, target, secrets.clone()))
            }
        };
        let provider = builder.build();
        let tracer = provider.tracer("flujo");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(super::is_exported));
        Ok((Box::new(layer), Exporter { provider }))
    }

    /// The http/protobuf client: the workspace's reqwest with rustls (`flujo_http`: the ring provider and the
    /// web PKI roots), no OpenSSL.
    fn http_client() -> Result<flujo_http::reqwest::Client, String> {
        flujo_http::client_builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// Runs each export of `inner` on the command's runtime (the batch processor's thread has none), bounded
    /// by [`EXPORT_TIMEOUT`]; the first failure is reported on stderr, later ones are not.
    #[derive(Debug)]
    struct OnRuntime<E> {
        inner: Arc<E>,
        rt: tokio::runtime::Handle,
        warned: Arc<AtomicBool>,
        /// The masked URL and protocol, for the warning.
        target: Arc<str>,
        secrets: Arc<[String]>,
    }

    impl<E> OnRuntime<E> {
        fn new(inner: E, rt: tokio::runtime::Handle, target: String, secrets: Vec<String>) -> Self {
            OnRuntime {
                inner: Arc::new(inner),
                rt,
                warned: Arc::new(AtomicBool::new(false)),
                target: target.into(),
                secrets: secrets.into(),
            }
        }
    }

    impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
        fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            let inner = self.inner.clone();
            let task = self.rt.spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, inner.export(batch)).await });
            let (warned, target, secrets) = (self.warned.clone(), self.target.clone(), self.secrets.clone());
            async move {
                let result = match task.await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(OTelSdkError::Timeout(EXPORT_TIMEOUT)),
                    Err(e) => Err(OTelSdkError::InternalFailure(format!("the export task ended: {e}"))),
                };
                if let Err(e) = &result {
                    if !warned.swap(true, Ordering::Relaxed) {
                        let why = match e {
                            OTelSdkError::Timeout(d) => format!("no answer within {d:?}"),
                            other => masked(&other.to_string(), &secrets),
                        };
                        crate::errln!("warning: cannot export traces to {target}: {why}; spans are dropped (further failures are not reported)");
                    }
                }
                result
            }
        }

        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.inner.shutdown_with_timeout(timeout)
        }

        fn force_flush(&self) -> OTelSdkResult {
            self.inner.force_flush()
        }

        fn set_resource(&mut self, resource: &Resource) {
            if let Some(inner) = Arc::get_mut(&mut self.inner) {
                inner.set_resource(resource);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_masked() {
        assert!(check_url("http://127.0.0.1:4318").is_ok());
        assert!(check_url("https://user:pw@collector.example/otlp").is_ok());
        assert!(check_url("http://[::1]:4317").is_ok());
        assert!(check_url("localhost:4318").is_err());
        assert!(check_url("ftp://host").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://host:99999").is_err());
        assert!(check_url("http://host:port").is_err());
        assert_eq!(mask_url("https://me:s3cret@h:1/x?y"), "https://me:***@h:1/x?y");
        assert_eq!(mask_url("http://h:1/x"), "http://h:1/x");
    }

    #[test]
    fn header_lists_are_checked_without_quoting_values() {
        assert!(check_headers("api-key=abc,x-tenant=t1").is_ok());
        let e = check_headers("api-key").unwrap_err();
        assert!(!e.contains("api-key"), "{e}");
        let e = check_headers("bad name=s3cret").unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("bad name"), "{e}");
        assert_eq!(masked("failed: token s3cret", &["s3cret".into()]), "failed: token ***");
    }

    #[test]
    fn the_telemetry_table_knows_two_keys() {
        let t: toml::Table =
            toml::from_str("[telemetry]\notlp_endpoint = \"http://h:1\"\notlp_protocol = \"grpc\"\n").unwrap();
        assert_eq!(telemetry_table(&t).unwrap(), (Some("http://h:1".into()), Some("grpc".into())));
        let t: toml::Table = toml::from_str("[telemetry]\nendpoint = \"x\"\n").unwrap();
        assert!(telemetry_table(&t).unwrap_err().contains("unknown key telemetry.endpoint"));
    }

    #[test]
    fn only_the_run_step_and_model_call_spans_are_exported() {
        // Callsites of this crate: names decide, not targets.
        let _g = tracing::subscriber::set_default(tracing_subscriber::registry());
        let run = tracing::info_span!("flujo.run");
        let other = tracing::info_span!("http.request");
        assert!(is_exported(run.metadata().unwrap()));
        assert!(!is_exported(other.metadata().unwrap()));
    }
}
