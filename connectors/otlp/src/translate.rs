//! An OTLP metrics request as Prometheus 3 stores it: one float sample or native histogram
//! per data point (classic histograms and summaries as their `_bucket`/`_sum`/`_count`
//! series), labels from the data point's attributes plus `job` and `instance` from the
//! resource, and a `target_info` series carrying the resource's other attributes.

use std::collections::{BTreeMap, HashSet};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, Exemplar as OtlpExemplar, ExponentialHistogramDataPoint, HistogramDataPoint,
    Metric, NumberDataPoint, SummaryDataPoint,
};
use promflow_storage::exemplars::{Exemplar, MAX_LABELS_LENGTH};
use promflow_storage::native_histogram::{
    CounterResetHint, FloatHistogram, CUSTOM_BUCKETS_SCHEMA, EXPONENTIAL_SCHEMAS,
};
use promflow_storage::{stale_nan, Labels, METRIC_NAME};

use crate::names::{Kind, Namer};

/// The zero threshold of every histogram made from an exponential one: OTel's own is not
/// carried over, as in Prometheus.
const ZERO_THRESHOLD: f64 = 1e-128;

/// The OTLP data point flag for "no recorded value": stored as a staleness marker.
const NO_RECORDED_VALUE: u32 = 1;

/// The identifying resource attributes: they make `job` and `instance`, and stay off
/// `target_info` unless kept.
const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// Which resource attributes become labels of every series of the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Promotion {
    /// Those named (`promote_resource_attributes`).
    Listed(Vec<String>),
    /// All but those named (`promote_all_resource_attributes`, `ignore_resource_attributes`).
    AllBut(Vec<String>),
}

/// What delta temporality becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deltas {
    /// Refused: the request fails, naming the metric (Prometheus's default).
    Refused,
    /// Stored as they come (`--enable-feature=otlp-native-delta-ingestion`); histograms are
    /// gauge histograms.
    Stored,
    /// Added up into cumulative series (`--enable-feature=otlp-deltatocumulative`), as the
    /// OpenTelemetry Collector's `deltatocumulative` processor does ([`crate::cumulative`]).
    Accumulated,
}

/// How requests are translated: the `otlp` section and the flags that bear on it.
#[derive(Clone, Debug)]
pub struct Translation {
    /// Metric and label names.
    pub namer: Namer,
    /// Resource attributes promoted to labels.
    pub promotion: Promotion,
    /// `keep_identifying_resource_attributes`: `service.*` stay on `target_info`.
    pub keep_identifying: bool,
    /// `convert_histograms_to_nhcb`: explicit-bucket histograms become custom-bucket ones.
    pub histograms_to_custom_buckets: bool,
    /// `promote_scope_metadata`: `otel_scope_*` labels.
    pub scope_labels: bool,
    /// Delta temporality.
    pub deltas: Deltas,
    /// `--query.lookback-delta` in milliseconds: `target_info` gets a sample every half of it
    /// over the request's time span, so that it stays visible to queries.
    pub lookback_ms: i64,
}

/// The samples of one request, ready for the appender.
#[derive(Debug, Default)]
pub struct Batch {
    /// Float samples: labels, timestamp (ms), value.
    pub floats: Vec<(Labels, i64, f64)>,
    /// Native histograms: labels, timestamp (ms), histogram.
    pub histograms: Vec<(Labels, i64, FloatHistogram)>,
    /// Exemplars, by the labels of the series they belong to.
    pub exemplars: Vec<(Labels, Exemplar)>,
    /// Start timestamps (`start_time_unix_nano`) of the samples of sums, histograms and
    /// summaries: labels, timestamp (ms), start timestamp (ms).
    pub starts: Vec<(Labels, i64, i64)>,
    /// Metrics dropped for having no data points.
    pub empty_metrics: usize,
    /// The series whose samples are deltas to add up (with [`Deltas::Accumulated`]).
    pub deltas: HashSet<Labels>,
}

impl Batch {
    /// Adds a float sample, with its start timestamp unless that is 0 (none).
    fn float(&mut self, labels: Labels, t: i64, v: f64, start: i64) {
        if start != 0 {
            self.starts.push((labels.clone(), t, start));
        }
        self.floats.push((labels, t, v));
    }

    /// Adds a native histogram, with its start timestamp unless that is 0 (none).
    fn histogram(&mut self, labels: Labels, t: i64, h: FloatHistogram, start: i64) {
        if start != 0 {
            self.starts.push((labels.clone(), t, start));
        }
        self.histograms.push((labels, t, h));
    }
}

/// Translates a whole request; the errors of every metric that could not be translated,
/// joined, when there is any (the request is then stored not at all, as in Prometheus).
pub fn translate(req: &ExportMetricsServiceRequest, t: &Translation) -> Result<Batch, String> {
    let mut batch = Batch::default();
    let mut errors: Vec<String> = Vec::new();
    let mut target_infos: HashSet<(Labels, i64)> = HashSet::new();
    for rm in &req.resource_metrics {
        let attributes: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let resource = match ResourceLabels::new(attributes, t) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let (mut earliest, mut latest) = (i64::MAX, i64::MIN);
        for sm in &rm.scope_metrics {
            let scope = if t.scope_labels {
                scope_labels(sm.scope.as_ref(), &sm.schema_url, &t.namer)
            } else {
                Vec::new()
            };
            for metric in &sm.metrics {
                let mut times = Times { earliest: &mut earliest, latest: &mut latest };
                let context = Context { t, resource: &resource, scope: &scope };
                if let Err(e) = context.metric(metric, &mut batch, &mut times) {
                    errors.push(e);
                }
            }
        }
        if earliest <= latest {
            if let Some(labels) = resource.target_info(attributes, t) {
                let step = (t.lookback_ms / 2).max(1);
                let mut at = earliest;
                while at < latest {
                    if target_infos.insert((labels.clone(), at)) {
                        batch.floats.push((labels.clone(), at, 1.0));
                    }
                    at += step;
                }
                if target_infos.insert((labels.clone(), latest)) {
                    batch.floats.push((labels, latest, 1.0));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(batch)
    } else {
        Err(errors.join("; "))
    }
}

/// The earliest and latest data point of a resource (for `target_info`).
struct Times<'a> {
    earliest: &'a mut i64,
    latest: &'a mut i64,
}

impl Times<'_> {
    fn saw(&mut self, t: i64) {
        *self.earliest = (*self.earliest).min(t);
        *self.latest = (*self.latest).max(t);
    }
}

/// What a resource gives every one of its series.
struct ResourceLabels {
    /// Promoted attributes, by label name.
    promoted: Vec<(String, String)>,
    job: String,
    instance: String,
}

impl ResourceLabels {
    fn new(attributes: &[KeyValue], t: &Translation) -> Result<ResourceLabels, String> {
        let value = |key: &str| attributes.iter().find(|kv| kv.key == key).map(|kv| text(kv.value.as_ref()));
        let job = match (value(SERVICE_NAME), value(SERVICE_NAMESPACE)) {
            (Some(name), Some(ns)) if !ns.is_empty() => format!("{ns}/{name}"),
            (Some(name), _) => name,
            (None, _) => String::new(),
        };
        let instance = value(SERVICE_INSTANCE_ID).unwrap_or_default();
        let mut promoted: Vec<(String, String)> = Vec::new();
        for kv in attributes {
            let wanted = match &t.promotion {
                Promotion::Listed(keys) => keys.contains(&kv.key),
                Promotion::AllBut(ignored) => !ignored.contains(&kv.key),
            };
            if !wanted {
                continue;
            }
            let name = t.namer.label(&kv.key)?;
            let v = text(kv.value.as_ref());
            // a later attribute that escapes to the same name wins
            match promoted.iter_mut().find(|p| p.0 == name) {
                Some(p) => p.1 = v,
                None => promoted.push((name, v)),
            }
        }
        Ok(ResourceLabels { promoted, job, instance })
    }

    /// `target_info`'s labels: the resource's attributes but the identifying ones (unless
    /// kept), with `job` and `instance`; `None` when it would say nothing more than them.
    fn target_info(&self, attributes: &[KeyValue], t: &Translation) -> Option<Labels> {
        let identifying = |k: &str| [SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID].contains(&k);
        if !attributes.iter().any(|kv| !identifying(&kv.key)) {
            return None;
        }
        let kept: Vec<&KeyValue> =
            attributes.iter().filter(|kv| t.keep_identifying || !identifying(&kv.key)).collect();
        let mut pairs = joined_attributes(&kept, &t.namer).ok()?;
        set(&mut pairs, "job", &self.job);
        set(&mut pairs, "instance", &self.instance);
        if !pairs.iter().any(|(n, v)| (n == "job" || n == "instance") && !v.is_empty()) {
            return None;
        }
        set(&mut pairs, METRIC_NAME, "target_info");
        Some(Labels::from_pairs(pairs))
    }
}

/// Sets (or replaces) a label among pairs; an empty value removes it.
fn set(pairs: &mut Vec<(String, String)>, name: &str, value: &str) {
    pairs.retain(|p| p.0 != name);
    if !value.is_empty() {
        pairs.push((name.to_string(), value.to_string()));
    }
}

/// Attributes as labels, sorted by their original keys; two keys that escape to one label
/// name have their values joined with `;`, as Prometheus joins them.
fn joined_attributes(attributes: &[&KeyValue], namer: &Namer) -> Result<Vec<(String, String)>, String> {
    let mut sorted: Vec<&KeyValue> = attributes.iter().copied().filter(|kv| kv.key != METRIC_NAME).collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out: Vec<(String, String)> = Vec::with_capacity(sorted.len());
    for kv in sorted {
        let name = namer.label(&kv.key)?;
        let value = text(kv.value.as_ref());
        match out.iter_mut().find(|p| p.0 == name) {
            Some(p) if !p.1.is_empty() => {
                p.1.push(';');
                p.1.push_str(&value);
            }
            Some(p) => p.1 = value,
            None => out.push((name, value)),
        }
    }
    Ok(out)
}

/// The `otel_scope_*` labels of a scope with a name (none for an unnamed one).
fn scope_labels(
    scope: Option<&InstrumentationScope>,
    schema_url: &str,
    namer: &Namer,
) -> Vec<(String, String)> {
    let Some(scope) = scope.filter(|s| !s.name.is_empty()) else { return Vec::new() };
    let mut out: Vec<(String, String)> = Vec::new();
    for kv in &scope.attributes {
        if let Ok(name) = namer.label(&format!("otel_scope_{}", kv.key)) {
            set(&mut out, &name, &text(kv.value.as_ref()));
        }
    }
    set(&mut out, "otel_scope_name", &scope.name);
    set(&mut out, "otel_scope_version", &scope.version);
    set(&mut out, "otel_scope_schema_url", schema_url);
    out
}

/// An attribute value as label text, as OTel's `AsString` writes it.
fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(any_value::Value::StringValueStrindex(_)) => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(f)) => json_float(*f),
        Some(any_value::Value::BytesValue(b)) => base64_standard(b),
        Some(v @ (any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_))) => json(v).to_string(),
    }
}

/// A float as JavaScript (and Go's JSON encoder) writes it: plain decimals between 1e-6 and
/// 1e21, exponent form outside, and Go's error text for the values JSON cannot hold.
fn json_float(f: f64) -> String {
    if f.is_nan() {
        return "json: unsupported value: NaN".into();
    }
    if f.is_infinite() {
        return format!("json: unsupported value: {}Inf", if f > 0.0 { "+" } else { "-" });
    }
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let e = format!("{f:e}");
        match e.split_once('e') {
            Some((m, exp)) if !exp.starts_with('-') => format!("{m}e+{exp}"),
            _ => e,
        }
    } else {
        format!("{f}")
    }
}

fn json(v: &any_value::Value) -> serde_json::Value {
    use serde_json::Value as J;
    let inner = |v: &Option<AnyValue>| v.as_ref().and_then(|v| v.value.as_ref()).map_or(J::Null, json);
    match v {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        any_value::Value::BytesValue(b) => J::String(base64_standard(b)),
        any_value::Value::StringValueStrindex(_) => J::Null,
        any_value::Value::ArrayValue(a) => {
            J::Array(a.values.iter().map(|v| inner(&Some(v.clone()))).collect())
        }
        // Go's encoder writes map keys sorted
        any_value::Value::KvlistValue(l) => {
            let sorted: BTreeMap<&str, J> =
                l.values.iter().map(|kv| (kv.key.as_str(), inner(&kv.value))).collect();
            J::Object(sorted.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }
    }
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A bucket bound or quantile as Prometheus writes it in `le` and `quantile`: the shortest
/// decimal, never an exponent.
fn bound_text(f: f64) -> String {
    if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else if f.is_nan() {
        "NaN".into()
    } else {
        format!("{f}")
    }
}

/// Milliseconds from OTLP's nanoseconds, truncated.
fn millis(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

/// What translating one metric needs.
struct Context<'a> {
    t: &'a Translation,
    resource: &'a ResourceLabels,
    scope: &'a [(String, String)],
}

impl Context<'_> {
    fn metric(&self, m: &Metric, batch: &mut Batch, times: &mut Times<'_>) -> Result<(), String> {
        let Some(data) = &m.data else {
            return Err(format!(
                "could not get aggregation temporality for metric {:?}: it has no data",
                m.name
            ));
        };
        let kind = match data {
            Data::Gauge(_) => Kind::Gauge,
            Data::Sum(s) if s.is_monotonic => Kind::Counter,
            _ => Kind::Other,
        };
        let family = self.t.namer.metric(&m.name, &m.unit, kind)?;
        let temporality = match data {
            Data::Sum(s) => Some(s.aggregation_temporality),
            Data::Histogram(h) => Some(h.aggregation_temporality),
            Data::ExponentialHistogram(h) => Some(h.aggregation_temporality),
            Data::Gauge(_) | Data::Summary(_) => None,
        };
        let mut accumulated = false;
        let delta = match temporality.map(AggregationTemporality::try_from) {
            None | Some(Ok(AggregationTemporality::Cumulative)) => false,
            Some(Ok(AggregationTemporality::Delta)) if self.t.deltas == Deltas::Stored => true,
            // translated as the cumulative series it becomes, then added up
            Some(Ok(AggregationTemporality::Delta)) if self.t.deltas == Deltas::Accumulated => {
                accumulated = true;
                false
            }
            Some(_) => {
                return Err(format!("invalid temporality and type combination for metric {:?}", m.name));
            }
        };
        let points = match data {
            Data::Gauge(g) => g.data_points.len(),
            Data::Sum(s) => s.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            Data::ExponentialHistogram(h) => h.data_points.len(),
            Data::Summary(s) => s.data_points.len(),
        };
        if points == 0 {
            batch.empty_metrics += 1;
            return Ok(());
        }
        let (floats, histograms) = (batch.floats.len(), batch.histograms.len());
        self.points(data, &family, delta, batch, times)?;
        if accumulated {
            let series = batch.floats[floats..]
                .iter()
                .map(|f| &f.0)
                .chain(batch.histograms[histograms..].iter().map(|h| &h.0));
            let series: Vec<Labels> = series.cloned().collect();
            batch.deltas.extend(series);
        }
        Ok(())
    }

    /// Translates the data points of a metric named `family`.
    fn points(
        &self,
        data: &Data,
        family: &str,
        delta: bool,
        batch: &mut Batch,
        times: &mut Times<'_>,
    ) -> Result<(), String> {
        match data {
            Data::Gauge(g) => self.numbers(family, &g.data_points, false, batch, times),
            Data::Sum(s) => self.numbers(family, &s.data_points, true, batch, times),
            Data::Histogram(h) => {
                h.data_points.iter().try_for_each(|p| self.explicit_histogram(family, p, delta, batch, times))
            }
            Data::ExponentialHistogram(h) => h
                .data_points
                .iter()
                .try_for_each(|p| self.exponential_histogram(family, p, delta, batch, times)),
            Data::Summary(s) => s.data_points.iter().try_for_each(|p| self.summary(family, p, batch, times)),
        }
    }

    /// A data point's labels: its attributes, the promoted resource attributes it lacks,
    /// `job` and `instance`, the scope's labels, the name, and `le` or `quantile`.
    fn labels(
        &self,
        attributes: &[KeyValue],
        name: &str,
        extra: Option<(&str, String)>,
    ) -> Result<Labels, String> {
        let refs: Vec<&KeyValue> = attributes.iter().collect();
        let mut pairs = joined_attributes(&refs, &self.t.namer)?;
        for (n, v) in &self.resource.promoted {
            if !pairs.iter().any(|p| &p.0 == n && !p.1.is_empty()) {
                set(&mut pairs, n, v);
            }
        }
        set(&mut pairs, "job", &self.resource.job);
        set(&mut pairs, "instance", &self.resource.instance);
        for (n, v) in self.scope {
            set(&mut pairs, n, v);
        }
        set(&mut pairs, METRIC_NAME, name);
        if let Some((n, v)) = extra {
            set(&mut pairs, n, &v);
        }
        Ok(Labels::from_pairs(pairs))
    }

    /// Gauge and sum points (`with_exemplars` for sums: gauges carry none).
    fn numbers(
        &self,
        family: &str,
        points: &[NumberDataPoint],
        with_exemplars: bool,
        batch: &mut Batch,
        times: &mut Times<'_>,
    ) -> Result<(), String> {
        for p in points {
            let t = millis(p.time_unix_nano);
            times.saw(t);
            // a sum's count began at its start time; a gauge's start time means nothing
            let start = if with_exemplars { millis(p.start_time_unix_nano) } else { 0 };
            let value = if is_stale(p.flags) {
                stale_nan()
            } else {
                match p.value {
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    Some(number_data_point::Value::AsInt(v)) => v as f64,
                    None => 0.0,
                }
            };
            let labels = self.labels(&p.attributes, family, None)?;
            if with_exemplars && !is_stale(p.flags) {
                batch.exemplars.extend(p.exemplars.iter().map(|e| (labels.clone(), exemplar_of(e, t))));
            }
            batch.float(labels, t, value, start);
        }
        Ok(())
    }

    fn explicit_histogram(
        &self,
        family: &str,
        p: &HistogramDataPoint,
        delta: bool,
        batch: &mut Batch,
        times: &mut Times<'_>,
    ) -> Result<(), String> {
        let t = millis(p.time_unix_nano);
        times.saw(t);
        let start = millis(p.start_time_unix_nano);
        let stale = is_stale(p.flags);
        if self.t.histograms_to_custom_buckets {
            let labels = self.labels(&p.attributes, family, None)?;
            if stale {
                batch.float(labels, t, stale_nan(), start);
                return Ok(());
            }
            let buckets: Vec<(i32, f64)> =
                p.bucket_counts.iter().enumerate().map(|(i, c)| (i as i32, *c as f64)).collect();
            let total: f64 = buckets.iter().map(|b| b.1).sum();
            if total != p.count as f64 {
                return Err(format!(
                    "histogram {family:?}: count {} is not the sum of its buckets ({total})",
                    p.count
                ));
            }
            let h = FloatHistogram::from_buckets(
                reset_hint(delta),
                CUSTOM_BUCKETS_SCHEMA,
                0.0,
                0.0,
                p.count as f64,
                p.sum.unwrap_or(0.0),
                buckets,
                Vec::new(),
                p.explicit_bounds.clone(),
            )
            .map_err(|e| format!("histogram {family:?}: {e}"))?;
            batch.exemplars.extend(p.exemplars.iter().map(|e| (labels.clone(), exemplar_of(e, t))));
            batch.histogram(labels, t, h, start);
            return Ok(());
        }
        let value = |v: f64| if stale { stale_nan() } else { v };
        if let Some(sum) = p.sum {
            batch.float(self.labels(&p.attributes, &format!("{family}_sum"), None)?, t, value(sum), start);
        }
        batch.float(
            self.labels(&p.attributes, &format!("{family}_count"), None)?,
            t,
            value(p.count as f64),
            start,
        );
        let bucket = format!("{family}_bucket");
        let mut cumulative = 0u64;
        // each bucket takes the exemplars, in the order sent, up to its bound; the `+Inf`
        // bucket the rest
        let mut exemplars = if stale { [].iter() } else { p.exemplars.iter() }.peekable();
        for (bound, count) in p.explicit_bounds.iter().zip(&p.bucket_counts) {
            cumulative = cumulative.saturating_add(*count);
            let labels = self.labels(&p.attributes, &bucket, Some(("le", bound_text(*bound))))?;
            while let Some(e) = exemplars.next_if(|e| exemplar_value(e) <= *bound) {
                batch.exemplars.push((labels.clone(), exemplar_of(e, t)));
            }
            batch.float(labels, t, value(cumulative as f64), start);
        }
        let labels = self.labels(&p.attributes, &bucket, Some(("le", "+Inf".into())))?;
        batch.exemplars.extend(exemplars.map(|e| (labels.clone(), exemplar_of(e, t))));
        batch.float(labels, t, value(p.count as f64), start);
        Ok(())
    }

    fn exponential_histogram(
        &self,
        family: &str,
        p: &ExponentialHistogramDataPoint,
        delta: bool,
        batch: &mut Batch,
        times: &mut Times<'_>,
    ) -> Result<(), String> {
        let t = millis(p.time_unix_nano);
        times.saw(t);
        let start = millis(p.start_time_unix_nano);
        let labels = self.labels(&p.attributes, family, None)?;
        if is_stale(p.flags) {
            batch.float(labels, t, stale_nan(), start);
            return Ok(());
        }
        let lowest = *EXPONENTIAL_SCHEMAS.start();
        let highest = *EXPONENTIAL_SCHEMAS.end();
        if p.scale < lowest {
            return Err(format!(
                "cannot convert exponential to native histogram. Scale must be >= {lowest}, was {}",
                p.scale
            ));
        }
        let (schema, scale_down) =
            if p.scale > highest { (highest, p.scale - highest) } else { (p.scale, 0) };
        let positive =
            prometheus_buckets(p.positive.as_ref(), scale_down).map_err(|e| format!("{family:?}: {e}"))?;
        let negative =
            prometheus_buckets(p.negative.as_ref(), scale_down).map_err(|e| format!("{family:?}: {e}"))?;
        let in_buckets: f64 =
            positive.iter().chain(&negative).map(|b| b.1).sum::<f64>() + p.zero_count as f64;
        let sum = p.sum.unwrap_or(0.0);
        if !sum.is_nan() && in_buckets != p.count as f64 {
            return Err(format!(
                "histogram {family:?}: count {} is not the zero count and the buckets' ({in_buckets})",
                p.count
            ));
        }
        let h = FloatHistogram::from_buckets(
            reset_hint(delta),
            schema,
            ZERO_THRESHOLD,
            p.zero_count as f64,
            p.count as f64,
            sum,
            positive,
            negative,
            Vec::new(),
        )
        .map_err(|e| format!("histogram {family:?}: {e}"))?;
        batch.exemplars.extend(p.exemplars.iter().map(|e| (labels.clone(), exemplar_of(e, t))));
        batch.histogram(labels, t, h, start);
        Ok(())
    }

    fn summary(
        &self,
        family: &str,
        p: &SummaryDataPoint,
        batch: &mut Batch,
        times: &mut Times<'_>,
    ) -> Result<(), String> {
        let t = millis(p.time_unix_nano);
        times.saw(t);
        let start = millis(p.start_time_unix_nano);
        let stale = is_stale(p.flags);
        let value = |v: f64| if stale { stale_nan() } else { v };
        batch.float(self.labels(&p.attributes, &format!("{family}_sum"), None)?, t, value(p.sum), start);
        batch.float(
            self.labels(&p.attributes, &format!("{family}_count"), None)?,
            t,
            value(p.count as f64),
            start,
        );
        for q in &p.quantile_values {
            let labels = self.labels(&p.attributes, family, Some(("quantile", bound_text(q.quantile))))?;
            batch.float(labels, t, value(q.value), start);
        }
        Ok(())
    }
}

/// Whether a point is flagged "no recorded value" (stored as a staleness marker).
fn is_stale(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE != 0
}

fn exemplar_value(e: &OtlpExemplar) -> f64 {
    match e.value {
        Some(exemplar::Value::AsDouble(v)) => v,
        Some(exemplar::Value::AsInt(v)) => v as f64,
        None => 0.0,
    }
}

/// An OTLP exemplar as Prometheus keeps it: `trace_id` and `span_id` in lower-case hex when
/// set, and its other attributes (keys as sent) when all of them fit in the label limit;
/// without a time of its own it takes its point's.
fn exemplar_of(e: &OtlpExemplar, point_t: i64) -> Exemplar {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut pairs: Vec<(String, String)> = Vec::new();
    if e.trace_id.iter().any(|b| *b != 0) {
        pairs.push(("trace_id".into(), hex(&e.trace_id)));
    }
    if e.span_id.iter().any(|b| *b != 0) {
        pairs.push(("span_id".into(), hex(&e.span_id)));
    }
    let attributes: Vec<(String, String)> =
        e.filtered_attributes.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect();
    let length: usize =
        pairs.iter().chain(&attributes).map(|(k, v)| k.chars().count() + v.chars().count()).sum();
    if length <= MAX_LABELS_LENGTH {
        pairs.extend(attributes);
    }
    let t = if e.time_unix_nano == 0 { point_t } else { millis(e.time_unix_nano) };
    Exemplar { labels: Labels::from_pairs(pairs), value: exemplar_value(e), t }
}

/// Delta histograms are gauge histograms; cumulative ones say nothing about resets.
fn reset_hint(delta: bool) -> CounterResetHint {
    if delta {
        CounterResetHint::Gauge
    } else {
        CounterResetHint::Unknown
    }
}

/// OTel's exponential buckets as Prometheus's: OTel bucket `i` holds `(base^i, base^(i+1)]`,
/// Prometheus's bucket `i + 1`; with the resolution lowered by `scale_down`, `2^scale_down`
/// neighbours share a bucket.
fn prometheus_buckets(buckets: Option<&Buckets>, scale_down: i32) -> Result<Vec<(i32, f64)>, String> {
    let Some(b) = buckets else { return Ok(Vec::new()) };
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(b.bucket_counts.len());
    for (k, count) in b.bucket_counts.iter().enumerate() {
        let otel = i64::from(b.offset) + k as i64;
        let index = i32::try_from((otel >> scale_down) + 1)
            .map_err(|_| format!("bucket index {otel} out of range"))?;
        match out.last_mut() {
            Some((i, c)) if *i == index => *c += *count as f64,
            _ => out.push((index, *count as f64)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_otel_writes_them() {
        assert_eq!(json_float(2.0), "2");
        assert_eq!(json_float(0.5), "0.5");
        assert_eq!(json_float(1e-7), "1e-7");
        assert_eq!(json_float(1e21), "1e+21");
        assert_eq!(json_float(f64::NAN), "json: unsupported value: NaN");
        assert_eq!(base64_standard(b"ab"), "YWI=");
        assert_eq!(base64_standard(b"abc"), "YWJj");
        assert_eq!(base64_standard(b"a"), "YQ==");
        assert_eq!(bound_text(1e21), "1000000000000000000000");
        assert_eq!(bound_text(0.005), "0.005");
    }

    #[test]
    fn exponential_buckets_move_up_one_index_and_merge_when_scaled_down() {
        let b = Buckets { offset: -3, bucket_counts: vec![1, 2, 3, 4, 5] };
        // scale 10 → schema 8: four OTel buckets in one
        assert_eq!(prometheus_buckets(Some(&b), 2).unwrap(), [(0, 6.0), (1, 9.0)]);
        assert_eq!(
            prometheus_buckets(Some(&b), 0).unwrap(),
            [(-2, 1.0), (-1, 2.0), (0, 3.0), (1, 4.0), (2, 5.0)]
        );
    }
}
