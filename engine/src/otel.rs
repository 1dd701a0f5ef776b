//! The engine's metrics exported with OpenTelemetry to a collector (OTLP/HTTP,
//! protobuf), every `[engine] metrics_otlp_interval`: the counters and gauges
//! `/metrics` serves, read by observable instruments at each export, and the two latency
//! histograms, recorded as they are observed. Names are the Prometheus ones without
//! `_total` (an OTLP-to-Prometheus bridge adds it back).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::Counters;
use super::metrics::{BUCKETS, EXPORTED, Gauges, LABELLED};

/// A running exporter; [`OtelMetrics::shutdown`] sends the last values.
pub struct OtelMetrics {
    provider: SdkMeterProvider,
}

impl OtelMetrics {
    /// Exports to `endpoint` (e.g. `http://collector:4318/v1/metrics`) every `interval`.
    pub fn start(
        endpoint: &str,
        interval: Duration,
        counters: &Arc<Counters>,
        gauges: &Arc<Gauges>,
    ) -> Result<OtelMetrics> {
        let exporter = MetricExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .with_context(|| format!("the OTLP metrics exporter for {endpoint}"))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(
                Resource::builder()
                    .with_service_name("toolgate")
                    .with_attribute(KeyValue::new(
                        "service.version",
                        crate::outputs::PRODUCT_VERSION,
                    ))
                    .build(),
            )
            .build();
        let meter = provider.meter("toolgate");
        register(&meter, counters, gauges);
        Ok(OtelMetrics { provider })
    }

    /// Exports once more and stops.
    pub fn shutdown(self) -> Result<()> {
        self.provider
            .shutdown()
            .map_err(|e| anyhow!("the last OTLP metrics export: {e}"))
    }
}

fn register(meter: &Meter, counters: &Arc<Counters>, gauges: &Arc<Gauges>) {
    for (name, help, read) in EXPORTED {
        let counters = Arc::clone(counters);
        meter
            .u64_observable_counter(name.trim_end_matches("_total"))
            .with_description(help)
            .with_callback(move |o| o.observe(read(&counters).load(Ordering::Relaxed), &[]))
            .build();
    }
    for (name, help, label, read) in LABELLED {
        let g = Arc::clone(gauges);
        meter
            .u64_observable_counter(name.trim_end_matches("_total"))
            .with_description(help)
            .with_callback(move |o| {
                if let Ok(m) = read(&g).lock() {
                    for (value, n) in m.iter() {
                        o.observe(*n, &[KeyValue::new(label, value.clone())]);
                    }
                }
            })
            .build();
    }
    let g = Arc::clone(gauges);
    meter
        .i64_observable_gauge("toolgate_engine_lag")
        .with_description("Records not yet read, per partition.")
        .with_callback(move |o| {
            if let Ok(m) = g.lag.lock() {
                for (partition, lag) in m.iter() {
                    o.observe(*lag, &[KeyValue::new("partition", i64::from(*partition))]);
                }
            }
        })
        .build();
    let g = Arc::clone(gauges);
    meter
        .u64_observable_gauge("toolgate_detector_state")
        .with_description(
            "Detector and reorder-buffer state per partition, by the gauges' Prometheus names.",
        )
        .with_callback(move |o| {
            if let Ok(m) = g.state.lock() {
                for ((partition, gauge), value) in m.iter() {
                    o.observe(
                        *value,
                        &[
                            KeyValue::new("partition", i64::from(*partition)),
                            KeyValue::new("gauge", *gauge),
                        ],
                    );
                }
            }
        })
        .build();
    for (name, help, read) in [
        (
            "toolgate_engine_writer_queue",
            "Rows waiting for the history and output writers.",
            (|g: &Gauges| g.writer_queue.load(Ordering::Relaxed)) as fn(&Gauges) -> i64,
        ),
        (
            "toolgate_engine_worker_queue",
            "Records waiting for the workers.",
            |g: &Gauges| g.worker_queue.load(Ordering::Relaxed),
        ),
    ] {
        let g = Arc::clone(gauges);
        meter
            .i64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |o| o.observe(read(&g), &[]))
            .build();
    }
    let boundaries = BUCKETS.to_vec();
    gauges.processing_latency.export(
        meter
            .f64_histogram("toolgate_engine_processing_latency")
            .with_unit("s")
            .with_description("Age of each event when processed.")
            .with_boundaries(boundaries.clone())
            .build(),
    );
    gauges.verdict_latency.export(
        meter
            .f64_histogram("toolgate_engine_verdict_latency")
            .with_unit("s")
            .with_description(
                "From reading a held call's event to its verdict handed to the producer.",
            )
            .with_boundaries(boundaries)
            .build(),
    );
}
