//! The trace context of a batch in event-log record headers, so the ingestor's span continues the
//! collector's (W3C Trace Context: `traceparent`, and `tracestate` when there is one).
//!
//! The collector injects the context of the span that handles and publishes a batch into each record
//! it appends ([`inject_span_context`]); the ingest loop extracts it and makes its span for the record
//! a child of it ([`set_parent_from_headers`]). Both go through the process's global
//! [`TextMapPropagator`](opentelemetry::propagation::TextMapPropagator), which the `hourglass` binary
//! sets to W3C Trace Context: libraries use the OpenTelemetry API only and never the SDK or an
//! exporter. Without an OpenTelemetry layer (tracing off) spans carry no context, so nothing is
//! injected and extraction is a no-op. A record without the headers (written before tracing was on,
//! replayed, dead-lettered) simply starts a new trace.

use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::event_log::ConsumedRecord;

/// The W3C Trace Context header naming the trace and the parent span.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C Trace Context header carrying vendor-specific trace state.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Adds the trace context of `span` to record headers (an event log's header names are static, so only
/// the two W3C headers are written; a propagator that wants others is not used by Hourglass). Adds
/// nothing when `span` has no OpenTelemetry context (tracing off, or the span filtered out).
pub fn inject_span_context(span: &tracing::Span, headers: &mut Vec<(&'static str, Vec<u8>)>) {
    let context = span.context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector { headers: &mut *headers })
    });
}

/// Makes `span` a child of the trace context in `record`'s headers, if it has one; otherwise `span`
/// keeps the parent it was created with (create it with `parent: None` so a record without a context
/// starts a new trace). Call it before the span is first entered.
pub fn set_parent_from_headers(span: &tracing::Span, record: &ConsumedRecord) {
    if record.header(TRACEPARENT_HEADER).is_none() {
        return;
    }
    let context = global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor { record }));
    // It fails only when the span is disabled or no OpenTelemetry layer is installed: nothing to trace.
    let _ = span.set_parent(context);
}

struct HeaderInjector<'a> {
    headers: &'a mut Vec<(&'static str, Vec<u8>)>,
}

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            TRACEPARENT_HEADER => TRACEPARENT_HEADER,
            TRACESTATE_HEADER => TRACESTATE_HEADER,
            _ => return,
        };
        self.headers.retain(|(existing, _)| *existing != name);
        self.headers.push((name, value.into_bytes()));
    }
}

struct HeaderExtractor<'a> {
    record: &'a ConsumedRecord,
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // A header that is not UTF-8 is not a valid trace context: the record starts a new trace.
        self.record.header(key).and_then(|value| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.record.headers.iter().map(|(name, _)| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    use super::*;

    /// A W3C-like propagator for the test (the SDK's lives in the binary): it writes and reads the two
    /// headers as the real one does, so the adapters are what is tested.
    #[derive(Debug)]
    struct TwoHeaders;

    impl TextMapPropagator for TwoHeaders {
        fn inject_context(&self, context: &opentelemetry::Context, injector: &mut dyn Injector) {
            let span_context = context.span().span_context().clone();
            if !span_context.is_valid() {
                return;
            }
            injector.set(TRACEPARENT_HEADER, format!("00-{}-{}-01", span_context.trace_id(), span_context.span_id()));
            injector.set(TRACESTATE_HEADER, span_context.trace_state().header());
            injector.set("baggage", "ignored".to_owned());
        }

        fn extract_with_context(
            &self,
            context: &opentelemetry::Context,
            extractor: &dyn Extractor,
        ) -> opentelemetry::Context {
            let Some(parts) = extractor.get(TRACEPARENT_HEADER).map(|value| value.split('-').collect::<Vec<_>>())
            else {
                return context.clone();
            };
            let trace_id = TraceId::from_hex(parts[1]).unwrap();
            let span_id = SpanId::from_hex(parts[2]).unwrap();
            let span_context = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::NONE);
            context.with_remote_span_context(span_context)
        }

        fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
            unimplemented!("not used by the adapters")
        }
    }

    #[test]
    fn the_injector_writes_only_the_two_w3c_headers_once_each() {
        let span_context = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c),
            SpanId::from(0xb7ad6b7169203331),
            TraceFlags::SAMPLED,
            false,
            "vendor=value".parse().unwrap(),
        );
        let context = opentelemetry::Context::new().with_remote_span_context(span_context);
        let mut headers = vec![("hg-schema-version", b"1".to_vec()), (TRACEPARENT_HEADER, b"stale".to_vec())];
        TwoHeaders.inject_context(&context, &mut HeaderInjector { headers: &mut headers });
        let by_name: HashMap<_, _> = headers.iter().map(|(name, value)| (*name, value.clone())).collect();
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert_eq!(by_name[TRACEPARENT_HEADER], b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_eq!(by_name[TRACESTATE_HEADER], b"vendor=value");
    }

    #[test]
    fn the_extractor_reads_a_consumed_records_headers() {
        let record = ConsumedRecord {
            partition: 0,
            offset: 7,
            key: "acme".to_owned(),
            payload: Vec::new(),
            headers: vec![
                ("hg-schema-version".to_owned(), b"1".to_vec()),
                (TRACEPARENT_HEADER.to_owned(), b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
            ],
            source: "events/0/7".to_owned(),
        };
        let context = TwoHeaders.extract(&HeaderExtractor { record: &record });
        let span_context = context.span().span_context().clone();
        assert_eq!(span_context.trace_id(), TraceId::from(0x0af7651916cd43dd8448eb211c80319c));
        assert_eq!(span_context.span_id(), SpanId::from(0xb7ad6b7169203331));
        assert_eq!(HeaderExtractor { record: &record }.keys(), vec!["hg-schema-version", TRACEPARENT_HEADER]);

        let not_utf8 = ConsumedRecord { headers: vec![(TRACEPARENT_HEADER.to_owned(), vec![0xff, 0xfe])], ..record };
        assert_eq!(HeaderExtractor { record: &not_utf8 }.get(TRACEPARENT_HEADER), None);
    }
}
