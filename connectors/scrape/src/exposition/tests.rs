use super::*;
use promflow_storage::gofmt::format_openmetrics_float;

fn text(body: &str) -> Exposition {
    match parse(body.as_bytes(), Format::Text) {
        Ok(e) => e,
        Err(e) => panic!("unexpected error: {e}\n--- body ---\n{body}"),
    }
}

fn om(body: &str) -> Exposition {
    match parse(body.as_bytes(), Format::OpenMetrics) {
        Ok(e) => e,
        Err(e) => panic!("unexpected error: {e}\n--- body ---\n{body}"),
    }
}

fn text_err(body: &str) -> ParseError {
    match parse(body.as_bytes(), Format::Text) {
        Ok(e) => panic!("expected an error, got {e:?}\n--- body ---\n{body}"),
        Err(e) => e,
    }
}

fn om_err(body: &str) -> ParseError {
    match parse(body.as_bytes(), Format::OpenMetrics) {
        Ok(e) => panic!("expected an error, got {e:?}\n--- body ---\n{body}"),
        Err(e) => e,
    }
}

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// Finds the sample with exactly these labels.
fn find<'e>(e: &'e Exposition, pairs: &[(&str, &str)]) -> &'e ParsedSample {
    let want = ls(pairs);
    e.samples.iter().find(|s| s.labels == want).unwrap_or_else(|| {
        panic!(
            "no sample {want}; have: {:#?}",
            e.samples.iter().map(|s| s.labels.to_string()).collect::<Vec<_>>()
        )
    })
}

fn meta<'e>(e: &'e Exposition, family: &str) -> &'e MetricMetadata {
    e.metadata.iter().find(|m| m.family == family).unwrap_or_else(|| panic!("no metadata for {family}"))
}

const NODE_EXPORTER: &str = r##"# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.1581e-05
go_gc_duration_seconds{quantile="0.25"} 3.0327e-05
go_gc_duration_seconds{quantile="0.5"} 3.5652e-05
go_gc_duration_seconds{quantile="0.75"} 4.3947e-05
go_gc_duration_seconds{quantile="1"} 0.000176845
go_gc_duration_seconds_sum 0.012664164
go_gc_duration_seconds_count 297
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 8
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1.23456789e+06
node_cpu_seconds_total{cpu="0",mode="iowait"} 123.45
node_cpu_seconds_total{cpu="1",mode="idle"} 1.2346e+06
# HELP node_disk_io_time_seconds_total Total seconds spent doing I/Os.
# TYPE node_disk_io_time_seconds_total counter
node_disk_io_time_seconds_total{device="sda"} 88.152
# HELP node_filesystem_avail_bytes Filesystem space available to non-root users in bytes.
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 2.1939109888e+10
node_filesystem_avail_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"} 4.12745728e+08
# HELP node_scrape_collector_duration_seconds node_exporter: Duration of a collector scrape.
# TYPE node_scrape_collector_duration_seconds gauge
node_scrape_collector_duration_seconds{collector="cpu"} 0.000505982
# HELP node_scrape_collector_success node_exporter: Whether a collector succeeded.
# TYPE node_scrape_collector_success gauge
node_scrape_collector_success{collector="cpu"} 1
# HELP node_uname_info Labeled system information as provided by the uname system call.
# TYPE node_uname_info gauge
node_uname_info{domainname="(none)",machine="x86_64",nodename="host",release="6.1.0-13-amd64",sysname="Linux",version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)"} 1
# HELP promhttp_metric_handler_requests_total Total number of scrapes by HTTP status code.
# TYPE promhttp_metric_handler_requests_total counter
promhttp_metric_handler_requests_total{code="200"} 3
promhttp_metric_handler_requests_total{code="500"} 0
promhttp_metric_handler_requests_total{code="503"} 0
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="1"} 100392
http_request_duration_seconds_bucket{le="10"} 129389
http_request_duration_seconds_bucket{le="1e+06"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
"##;

#[test]
fn node_exporter_style_output() {
    let e = text(NODE_EXPORTER);
    assert_eq!(e.samples.len(), 28);
    assert!(e.samples.iter().all(|s| s.timestamp_ms.is_none()));

    let s = find(&e, &[("__name__", "node_cpu_seconds_total"), ("cpu", "0"), ("mode", "idle")]);
    assert_eq!(s.value, 1.23456789e6);
    let s = find(&e, &[("__name__", "go_gc_duration_seconds_count")]);
    assert_eq!(s.value, 297.0);
    let s = find(
        &e,
        &[
            ("__name__", "node_uname_info"),
            ("domainname", "(none)"),
            ("machine", "x86_64"),
            ("nodename", "host"),
            ("release", "6.1.0-13-amd64"),
            ("sysname", "Linux"),
            ("version", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)"),
        ],
    );
    assert_eq!(s.value, 1.0);
    // Zero-valued samples are kept.
    assert_eq!(
        find(&e, &[("__name__", "promhttp_metric_handler_requests_total"), ("code", "500")]).value,
        0.0
    );

    // quantile / le normalisation (Prometheus 3).
    find(&e, &[("__name__", "go_gc_duration_seconds"), ("quantile", "0.0")]);
    find(&e, &[("__name__", "go_gc_duration_seconds"), ("quantile", "0.25")]);
    find(&e, &[("__name__", "go_gc_duration_seconds"), ("quantile", "1.0")]);
    find(&e, &[("__name__", "http_request_duration_seconds_bucket"), ("le", "1.0")]);
    find(&e, &[("__name__", "http_request_duration_seconds_bucket"), ("le", "10.0")]);
    find(&e, &[("__name__", "http_request_duration_seconds_bucket"), ("le", "0.05")]);
    find(&e, &[("__name__", "http_request_duration_seconds_bucket"), ("le", "1e+06")]);
    find(&e, &[("__name__", "http_request_duration_seconds_bucket"), ("le", "+Inf")]);

    assert_eq!(e.metadata.len(), 10);
    let m = meta(&e, "go_gc_duration_seconds");
    assert_eq!(m.metric_type, MetricType::Summary);
    assert_eq!(m.help, "A summary of the pause duration of garbage collection cycles.");
    assert_eq!(m.unit, "");
    assert_eq!(meta(&e, "node_cpu_seconds_total").metric_type, MetricType::Counter);
    assert_eq!(meta(&e, "http_request_duration_seconds").metric_type, MetricType::Histogram);
    assert_eq!(e.metadata[0].family, "go_gc_duration_seconds"); // order of appearance
}

#[test]
fn text_whitespace_and_comment_leniency() {
    let body = "# A free comment\n#no space comment\n# HELPful note\n# TYPE\n\n  \t\n\
                # \tTYPE  tabbed gauge\n\
                tabbed\t42\t \n\
                  leading 1   \n\
                spaced { a = \"1\" , b= \"2\", } 3 1000  \n\
                nocomma{a=\"1\" b=\"2\"} 4\n\
                trailing{a=\"x\",} 5\n\
                empty{} 6\n\
                colons:rule:rate5m{a_b=\"c\"} 7\n\
                _underscore 8\n\
                last 9";
    let e = text(body);
    assert_eq!(e.samples.len(), 9);
    assert_eq!(find(&e, &[("__name__", "tabbed")]).value, 42.0);
    assert_eq!(find(&e, &[("__name__", "leading")]).value, 1.0);
    let s = find(&e, &[("__name__", "spaced"), ("a", "1"), ("b", "2")]);
    assert_eq!((s.value, s.timestamp_ms), (3.0, Some(1000)));
    find(&e, &[("__name__", "nocomma"), ("a", "1"), ("b", "2")]);
    find(&e, &[("__name__", "trailing"), ("a", "x")]);
    find(&e, &[("__name__", "empty")]);
    find(&e, &[("__name__", "colons:rule:rate5m"), ("a_b", "c")]);
    find(&e, &[("__name__", "_underscore")]);
    assert_eq!(find(&e, &[("__name__", "last")]).value, 9.0); // no final newline
                                                              // Prometheus strips exactly one blank after the name; the rest belongs to the text.
    assert_eq!(meta(&e, "tabbed").metric_type, MetricType::Gauge);
    assert_eq!(e.metadata.len(), 1);
}

#[test]
fn text_type_after_samples_and_help_without_text() {
    let body = "foo 1\n# TYPE foo counter\n# HELP foo\n# HELP bar \n# HELP baz  two  spaces \n";
    let e = text(body);
    assert_eq!(e.samples.len(), 1);
    assert_eq!(meta(&e, "foo").metric_type, MetricType::Counter);
    assert_eq!(meta(&e, "foo").help, "");
    assert_eq!(meta(&e, "bar").help, "");
    assert_eq!(meta(&e, "baz").help, " two  spaces ");
    assert_eq!(meta(&e, "bar").metric_type, MetricType::Unknown);
    assert_eq!(text("# TYPE u untyped\nu 1\n").metadata[0].metric_type, MetricType::Unknown);
}

#[test]
fn text_escapes() {
    let body = concat!(
        "# HELP esc Help with \\\\ backslash, \\n newline, \\\" kept quote and \\t unknown.\n",
        r#"esc{path="/a\\b",msg="quote\" nl\n",other="tab\t x\\\"y"} 1"#,
        "\n",
    );
    let e = text(body);
    assert_eq!(meta(&e, "esc").help, "Help with \\ backslash, \n newline, \\\" kept quote and \\t unknown.");
    let s = &e.samples[0];
    assert_eq!(s.labels.get("path"), "/a\\b");
    assert_eq!(s.labels.get("msg"), "quote\" nl\n");
    assert_eq!(s.labels.get("other"), "tab\\t x\\\"y");
}

#[test]
fn text_raw_newline_inside_label_value_is_accepted_like_prometheus() {
    let e = text("a{b=\"x\ny\"} 1\nc 2\n");
    assert_eq!(e.samples[0].labels.get("b"), "x\ny");
    assert_eq!(e.samples[1].labels.metric_name(), "c");
    // And the line count in errors follows physical lines.
    assert_eq!(text_err("a{b=\"x\ny\"} 1\nc 2\n!\n").place, Place::Line(4));
}

#[test]
fn special_values() {
    let body = "a NaN\nb nan\nc +Inf\nd -Inf\ne Inf\nf inf\ng +infinity\nh -INFINITY\ni 1e3\nj 1E-3\n\
                k .5\nl 5.\nm -0\nn +12\no 0.000000001\n";
    let e = text(body);
    let v = |n: &str| find(&e, &[("__name__", n)]).value;
    assert!(v("a").is_nan() && v("b").is_nan());
    assert_eq!(v("c"), f64::INFINITY);
    assert_eq!(v("d"), f64::NEG_INFINITY);
    assert_eq!(v("e"), f64::INFINITY);
    assert_eq!(v("f"), f64::INFINITY);
    assert_eq!(v("g"), f64::INFINITY);
    assert_eq!(v("h"), f64::NEG_INFINITY);
    assert_eq!(v("i"), 1000.0);
    assert_eq!(v("j"), 0.001);
    assert_eq!(v("k"), 0.5);
    assert_eq!(v("l"), 5.0);
    assert_eq!(v("m"), 0.0);
    assert_eq!(v("n"), 12.0);
    assert_eq!(v("o"), 1e-9);
    // A scraped NaN is never the staleness marker.
    assert!(!promflow_storage::is_stale_nan(v("a")));
    assert_eq!(v("a").to_bits(), f64::NAN.to_bits());

    for bad in [
        "+nan", "-NaN", "0x1p-3", "0x10", "1_000", "1e400", "-1e400", "true", "1e", ".", "--1", "1..2",
        "infinit",
    ] {
        let err = text_err(&format!("x {bad}\n"));
        assert_eq!(err.place, Place::Line(1), "{bad}");
        assert!(err.message.contains("float"), "{bad}: {err}");
    }
    assert!(text_err("x 1_0\n").message.contains("unsupported character"));
    assert!(text_err("x 1e400\n").message.contains("out of range"));
}

#[test]
fn text_timestamps() {
    let e = text("a 1 1700000000000\nb 2 -5000\nc 3 0\n");
    assert_eq!(e.samples[0].timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(e.samples[1].timestamp_ms, Some(-5000));
    assert_eq!(e.samples[2].timestamp_ms, Some(0));
    assert!(text_err("a 1 99999999999999999999\n").message.contains("out of range"));
    assert!(text_err("a 1 1.5\n").message.contains("end of line after timestamp"));
    assert!(text_err("a 1 1e3\n").message.contains("end of line after timestamp"));
    assert!(text_err("a 1 abc\n").message.contains("timestamp"));
    assert!(text_err("a 1 2 3\n").message.contains("end of line after timestamp"));
}

#[test]
fn text_crlf_is_rejected_like_prometheus() {
    let err = text_err("a 1\r\nb 2\r\n");
    assert_eq!(err.place, Place::Line(1));
    assert!(err.message.contains("\\r"), "{err}");
    assert_eq!(text_err("a 1 100\r\n").place, Place::Line(1));
    assert_eq!(text_err("\r\n").place, Place::Line(1));
}

#[test]
fn text_errors_name_the_line() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"a 1\nb{c='d'} 1\n", 2, "expected quoted label value, got \"'d'}\""),
        (b"a 1\nb 2\n{A}0\n", 3, "expected '=' after label name, got \"}0\""),
        (b"x{=\"\"} 0\n", 1, "expected label name or '}', got \"=\\\"\\\"}\""),
        (b"a\n", 1, "expected value after metric, got newline"),
        (b"a", 1, "expected value after metric, got end of input"),
        (b"a{b=\n", 1, "expected quoted label value, got newline"),
        (b"a{b=\"c\"", 1, "expected label name or '}', got end of input"),
        (b"ok 1\n{a=\"ok\"} 1\n", 2, "metric name not set"),
        (b"# TYPE foo counters\n", 1, "invalid metric type \"counters\""),
        (b"# TYPE foo counter \n", 1, "invalid metric type \"counter \""),
        (b"# TYPE foo\n", 1, "invalid metric type \"\""),
        (b"# TYPE #\n", 1, "expected metric name after TYPE, got \"#\""),
        (b"# HELP \n", 1, "expected metric name after HELP, got newline"),
        (b"a{b=\"c\",b=\"d\"} 1\n", 1, "duplicate label name \"b\""),
        (b"a{__name__=\"b\"} 1\n", 1, "duplicate label name \"__name__\""),
        (b"a{\"b\"} 1\n", 1, "metric name already set"),
        (b"{\"a\",\"b\"} 1\n", 1, "metric name already set"),
        (b"{\"\"} 1\n", 1, "metric name is empty"),
        (b"a{\"\"=\"x\"} 1\n", 1, "label name is empty"),
        (b"a{b=\"\xff\"} 1\n", 1, "label value is not valid UTF-8"),
        (b"a{\xff=\"foo\"} 1\n", 1, "expected label name or '}'"),
        (b"a{b\\nc=\"d\"} 1\n", 1, "expected '=' after label name, got \"\\\\nc=\\\"d\\\"}\""),
        (b"\n\n  9 1\n", 3, "expected a metric name, '{' or '#' at the start of a line, got \"9\""),
        (b"a 1 # comment\n", 1, "timestamp"),
        (b"a{b=\"c\"}} 1\n", 1, "invalid float syntax \"}\""),
    ];
    for (body, line, msg) in cases {
        let err = parse(body, Format::Text).unwrap_err();
        assert_eq!(err.place, Place::Line(*line), "{:?}: {err}", String::from_utf8_lossy(body));
        assert!(err.message.contains(msg), "{:?}: got {err}, want {msg}", String::from_utf8_lossy(body));
    }
    // Display names the line.
    let err = text_err("a 1\nb{c='d'} 1\n");
    assert!(err.to_string().starts_with("line 2: expected quoted label value"), "{err}");
}

#[test]
fn text_utf8_quoted_names() {
    let body = r#"# HELP "go.gc_duration_seconds" A summary of the GC invocation durations.
# 	TYPE "go.gc_duration_seconds" summary
{"go.gc_duration_seconds",quantile="0"} 4.9351e-05
{"go.gc_duration_seconds",quantile="0.25",} 7.424100000000001e-05
{ "go.gc_duration_seconds", quantile = "1.0", a = "b" } 8.3835e-05
{"go.gc_duration_seconds_count"} 99
{"my.dotted.metric", "error.message"="Not Found"} 1
plain{"a.b"="c", d="e"} 2
{"Heizölrückstoßabdämpfung 10€ metric with \"interesting\" {character\nchoices}","strange©™\n'quoted' \"name\""="6"} 10.0
"#;
    let e = text(body);
    assert_eq!(e.samples.len(), 7);
    find(&e, &[("__name__", "go.gc_duration_seconds"), ("quantile", "0.0")]);
    find(&e, &[("__name__", "go.gc_duration_seconds"), ("quantile", "0.25")]);
    find(&e, &[("__name__", "go.gc_duration_seconds"), ("quantile", "1.0"), ("a", "b")]);
    find(&e, &[("__name__", "go.gc_duration_seconds_count")]);
    find(&e, &[("__name__", "my.dotted.metric"), ("error.message", "Not Found")]);
    find(&e, &[("__name__", "plain"), ("a.b", "c"), ("d", "e")]);
    let s = find(
        &e,
        &[
            ("__name__", "Heizölrückstoßabdämpfung 10€ metric with \"interesting\" {character\nchoices}"),
            ("strange©™\n'quoted' \"name\"", "6"),
        ],
    );
    assert_eq!(s.value, 10.0);
    let m = meta(&e, "go.gc_duration_seconds");
    assert_eq!(m.metric_type, MetricType::Summary);
    assert_eq!(m.help, "A summary of the GC invocation durations.");
}

#[test]
fn normalisation_follows_the_last_type_line() {
    let body = "# TYPE h histogram\n\
                h_bucket{le=\"1\"} 1\n\
                h_bucket{le=\"0.10\"} 1\n\
                h_bucket{le=\"100000\"} 1\n\
                h_bucket{le=\"1000000\"} 1\n\
                h_bucket{le=\"1e-05\"} 1\n\
                h_bucket{le=\"0.0001\"} 1\n\
                h_bucket{le=\"inf\"} 1\n\
                h_bucket{le=\"-0\"} 1\n\
                h_bucket{le=\"abc\"} 1\n\
                h_sum{quantile=\"1\"} 1\n\
                # TYPE c counter\n\
                c{le=\"10\"} 1\n\
                # TYPE s summary\n\
                s{quantile=\"0.990\",le=\"5\"} 1\n";
    let e = text(body);
    let les: Vec<&str> = e.samples.iter().take(9).map(|s| s.labels.get("le")).collect();
    assert_eq!(les, ["1.0", "0.1", "100000.0", "1e+06", "1e-05", "0.0001", "+Inf", "0.0", "abc"]);
    assert_eq!(e.samples[9].labels.get("quantile"), "1"); // quantile is only normalised for summaries
    assert_eq!(e.samples[10].labels.get("le"), "10");
    assert_eq!(e.samples[11].labels.get("quantile"), "0.99");
    assert_eq!(e.samples[11].labels.get("le"), "5");
}

#[test]
fn openmetrics_float_format_matches_go() {
    let cases: &[(f64, &str)] = &[
        (1.0, "1.0"),
        (0.0, "0.0"),
        (-0.0, "0.0"),
        (-1.0, "-1.0"),
        (0.5, "0.5"),
        (10.0, "10.0"),
        (123456.0, "123456.0"),
        (1234567.0, "1.234567e+06"),
        (1e6, "1e+06"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (0.000123, "0.000123"),
        (1.5e-7, "1.5e-07"),
        (-2.5, "-2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
    ];
    for (f, want) in cases {
        assert_eq!(format_openmetrics_float(*f), *want, "{f:e}");
    }
}

const OM_BODY: &str = r#"# TYPE acme_http_router_request_seconds summary
# UNIT acme_http_router_request_seconds seconds
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.
acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32
acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0
acme_http_router_request_seconds_created{path="/api/v1",method="GET"} 1605281325.0
acme_http_router_request_seconds{quantile="0.5",path="/api/v1",method="GET"} 0.01
# TYPE foo counter
# HELP foo Counter with \"escapes\" \\ and \n newline
foo_total 17.0 1520879607.789 # {id="counter-test"} 5
foo_created 1520872607.123
foo_total{a="b"} 17.0 # {trace_id="KOO5S4vxi0o"} 0.67 1520879607.5
# TYPE hh histogram
hh_bucket{le="0.01"} 0 # {} 0.005
hh_bucket{le="1"} 2
hh_bucket{le="+Inf"} 3 # {id="histogram-bucket-test",xx="yy"} 4 123.123
hh_count 3
hh_sum 1.5
hh_created 1520872607
# TYPE gh gaugehistogram
gh_bucket{le="1"} 1
gh_bucket{le="+Inf"} 2
gh_gcount 2
gh_gsum 0.7
# TYPE build info
build_info{version="1.2",revision="abc"} 1
# TYPE state stateset
state{state="a"} 1
state{state="b"} 0
# TYPE un unknown
un 1.5e3
# TYPE g gauge
g NaN
g{x="y"} -Inf 0
g{x="z"} +inf -1.5
{"my.dotted",q="0.9","a.b"="c"} 1
# EOF
"#;

#[test]
fn openmetrics_full_exposition() {
    let e = om(OM_BODY);
    assert_eq!(e.samples.len(), 25);
    let s = find(&e, &[("__name__", "foo_total")]);
    assert_eq!((s.value, s.timestamp_ms), (17.0, Some(1_520_879_607_789)));
    // _created is an ordinary series (Prometheus without start-timestamp features).
    let s = find(&e, &[("__name__", "foo_created")]);
    assert_eq!(s.value, 1520872607.123);
    find(&e, &[("__name__", "hh_created")]);
    find(
        &e,
        &[("__name__", "acme_http_router_request_seconds_created"), ("path", "/api/v1"), ("method", "GET")],
    );
    // Exemplars are dropped, samples kept.
    assert_eq!(find(&e, &[("__name__", "foo_total"), ("a", "b")]).timestamp_ms, None);
    find(&e, &[("__name__", "hh_bucket"), ("le", "0.01")]);
    find(&e, &[("__name__", "hh_bucket"), ("le", "1.0")]);
    find(&e, &[("__name__", "hh_bucket"), ("le", "+Inf")]);
    // gaugehistogram le values are not normalised (Prometheus only does it for histograms).
    find(&e, &[("__name__", "gh_bucket"), ("le", "1")]);
    find(&e, &[("__name__", "gh_gcount")]);
    find(&e, &[("__name__", "gh_gsum")]);
    find(
        &e,
        &[
            ("__name__", "acme_http_router_request_seconds"),
            ("quantile", "0.5"),
            ("path", "/api/v1"),
            ("method", "GET"),
        ],
    );
    find(&e, &[("__name__", "build_info"), ("version", "1.2"), ("revision", "abc")]);
    assert_eq!(find(&e, &[("__name__", "state"), ("state", "b")]).value, 0.0);
    assert_eq!(find(&e, &[("__name__", "un")]).value, 1500.0);
    assert!(find(&e, &[("__name__", "g")]).value.is_nan());
    let s = find(&e, &[("__name__", "g"), ("x", "y")]);
    assert_eq!((s.value, s.timestamp_ms), (f64::NEG_INFINITY, Some(0)));
    let s = find(&e, &[("__name__", "g"), ("x", "z")]);
    assert_eq!((s.value, s.timestamp_ms), (f64::INFINITY, Some(-1500)));
    find(&e, &[("__name__", "my.dotted"), ("q", "0.9"), ("a.b", "c")]);

    let m = meta(&e, "acme_http_router_request_seconds");
    assert_eq!(m.metric_type, MetricType::Summary);
    assert_eq!(m.unit, "seconds");
    assert_eq!(m.help, "Latency though all of ACME's HTTP request router.");
    assert_eq!(meta(&e, "foo").help, "Counter with \"escapes\" \\ and \n newline");
    assert_eq!(meta(&e, "foo").metric_type, MetricType::Counter);
    assert_eq!(meta(&e, "gh").metric_type, MetricType::GaugeHistogram);
    assert_eq!(meta(&e, "build").metric_type, MetricType::Info);
    assert_eq!(meta(&e, "state").metric_type, MetricType::StateSet);
    assert_eq!(meta(&e, "un").metric_type, MetricType::Unknown);
    assert_eq!(MetricType::StateSet.to_string(), "stateset");
}

#[test]
fn openmetrics_eof_rules() {
    assert!(om("# EOF").samples.is_empty());
    assert!(om("# EOF\n").samples.is_empty());
    assert_eq!(om("a 1\n# EOF").samples.len(), 1);
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "must end with \"# EOF\""),
        ("a 1\n", 1, "must end with \"# EOF\""),
        ("a 1\nb 2\n", 2, "must end with \"# EOF\""),
        ("a 1", 1, "must end with \"# EOF\""),
        ("a_total 1 # {aa=\"bb\"} 4", 1, "must end with \"# EOF\""),
        ("# TYPE a counter", 1, "must end with \"# EOF\""),
        ("# EOF\na 1", 2, "unexpected data after # EOF"),
        ("# EOF\n\n", 2, "unexpected data after # EOF"),
        ("# EOFa 1", 1, "unexpected data after # EOF"),
        ("a 1\n#EOF\n", 2, "expected \"# HELP\""),
    ];
    for (body, line, msg) in cases {
        let err = om_err(body);
        assert_eq!(err.place, Place::Line(*line), "{body:?}: {err}");
        assert!(err.message.contains(msg), "{body:?}: got {err}, want {msg}");
    }
}

#[test]
fn openmetrics_is_strict() {
    let cases: &[(&str, usize, &str)] = &[
        ("a 1\n\nb 1\n# EOF\n", 2, "blank lines are not allowed"),
        ("\n# EOF\n", 1, "blank lines are not allowed"),
        (" a 1\n# EOF\n", 1, "must not start with whitespace"),
        ("a  1\n# EOF\n", 1, "expected a single space and a value after the metric"),
        ("a\t1\n# EOF\n", 1, "expected a single space and a value after the metric, got \"\\t1\""),
        ("a 1 \n# EOF\n", 1, "expected timestamp or exemplar after value"),
        ("a 1 2 \n# EOF\n", 1, "expected end of line or exemplar after timestamp"),
        ("a 1 1 1\n# EOF\n", 1, "expected end of line or exemplar after timestamp"),
        ("a 1 2 #\n# EOF\n", 1, "expected end of line or exemplar after timestamp"),
        ("a 1\t2\n# EOF\n", 1, "invalid float syntax \"1\\t2\""),
        ("a 1 1z\n# EOF\n", 1, "invalid float syntax \"1z\""),
        ("a 1 NaN\n# EOF\n", 1, "invalid timestamp NaN"),
        ("a 1 -Inf\n# EOF\n", 1, "invalid timestamp -inf"),
        ("a {b=\"c\"} 1\n# EOF\n", 1, "invalid float syntax"),
        ("a{b=\"c\", d=\"e\"} 1\n# EOF\n", 1, "expected label name or '}', got \" d=\\\"e\\\"}\""),
        ("a{b = \"c\"} 1\n# EOF\n", 1, "expected '=' after label name"),
        ("a{b=\"c\"d=\"e\"} 1\n# EOF\n", 1, "expected ',' or '}' after label value, got \"d=\\\"e\\\"}\""),
        ("a{,b=\"c\"} 1\n# EOF\n", 1, "expected label name or '}', got \",b=\\\"c\\\"}\""),
        ("a{b=\"c\",,d=\"e\"} 1\n# EOF\n", 1, "expected label name or '}'"),
        ("a{b=\"c\nd\"} 1\n# EOF\n", 1, "expected quoted label value"),
        ("# a comment\n# EOF\n", 1, "other comments are not allowed"),
        ("#  TYPE c counter\n# EOF\n", 1, "expected \"# HELP\""),
        ("#\tTYPE c counter\n# EOF\n", 1, "expected \"# HELP\""),
        ("# TYPE u untyped\n# EOF\n", 1, "invalid metric type \"untyped\""),
        ("# TYPE c counter \n# EOF\n", 1, "invalid metric type \"counter \""),
        ("# TYPE c  counter\n# EOF\n", 1, "invalid metric type \" counter\""),
        ("# TYPE \n# EOF\n", 1, "expected metric name after TYPE, got newline"),
        ("# TYPE m\n# EOF\n", 1, "expected a space and text after the TYPE name, got newline"),
        ("# HELP m\n# EOF\n", 1, "expected a space and text after the HELP name"),
        ("# UNIT m\n# EOF\n", 1, "expected a space and text after the UNIT name"),
        ("# UNIT metric suffix\n# EOF\n", 1, "unit \"suffix\" not a suffix of metric \"metric\""),
        ("# UNIT metricsuffix suffix\n# EOF\n", 1, "unit \"suffix\" not a suffix of metric \"metricsuffix\""),
        ("# UNIT m suffix\n# EOF\n", 1, "not a suffix"),
        ("x 1\n{b=\"c\",} 1\n# EOF\n", 2, "metric name not set"),
        ("a{b=\"c\",b=\"d\"} 1\n# EOF\n", 1, "duplicate label name \"b\""),
        ("a 1\r\n# EOF\n", 1, "invalid float syntax \"1\\r\""),
        ("c_total 1 # {aa=bb}\n# EOF\n", 1, "expected quoted label value, got \"bb}\""),
        (
            "c_total 1 # {aa=\"bb\"}\n# EOF\n",
            1,
            "expected a single space and a value after exemplar labels, got newline",
        ),
        ("c_total 1 # {bb}\n# EOF\n", 1, "expected '=' after label name, got \"}\""),
        ("c_total 1 # {\"bb\"} 1\n# EOF\n", 1, "expected '=' after label name"),
        ("c_total 1 # {aa=\"bb\"} 1_2\n# EOF\n", 1, "exemplar value: unsupported character"),
        ("c_total 1 # {aa=\"bb\"} true\n# EOF\n", 1, "exemplar value: invalid float syntax"),
        ("c_total 1 # {aa=\"bb\"} 1 NaN\n# EOF\n", 1, "invalid exemplar timestamp NaN"),
        ("c_total 1 # {aa=\"bb\"} 1 2 3\n# EOF\n", 1, "expected end of line after exemplar timestamp"),
        ("c_total 1 # {aa=\"bb\"} 1 2\n", 1, "must end with \"# EOF\""),
        ("ok 1\nc_total 1 #{aa=\"bb\"} 1\n# EOF\n", 2, "invalid float syntax \"#{aa=\\\"bb\\\"}\""),
    ];
    for (body, line, msg) in cases {
        let err = om_err(body);
        assert_eq!(err.place, Place::Line(*line), "{body:?}: {err}");
        assert!(err.message.contains(msg), "{body:?}: got {err}, want {msg}");
    }
}

#[test]
fn openmetrics_timestamps_are_seconds() {
    let e = om("a 1 1520879607.789\nb 1 1e3\nc 1 -0.0015\nd 1 0\n# EOF\n");
    let ts: Vec<Option<i64>> = e.samples.iter().map(|s| s.timestamp_ms).collect();
    assert_eq!(ts, [Some(1_520_879_607_789), Some(1_000_000), Some(-1), Some(0)]);
}

#[test]
fn openmetrics_utf8_and_exemplars() {
    let body = r#"# HELP "go.gc_duration_seconds" A summary of the GC invocation durations.
# TYPE "go.gc_duration_seconds" summary
# UNIT "go.gc_duration_seconds" seconds
{"go.gc_duration_seconds",quantile="0"} 4.9351e-05
{"go.gc_duration_seconds_created"} 1520872607.123
{q="0.9","http.status",a="b"} 8.3835e-05
{"Heizölrückstoßabdämpfung 10€ metric with \"interesting\" {character\nchoices}","strange©™\n'quoted' \"name\""="6"} 10.0
quotedexemplar_count 1 # {"id.thing"="histogram-count-test",other="hello"} 4
# EOF
"#;
    let e = om(body);
    assert_eq!(e.samples.len(), 5);
    find(&e, &[("__name__", "go.gc_duration_seconds"), ("quantile", "0.0")]);
    find(&e, &[("__name__", "go.gc_duration_seconds_created")]);
    find(&e, &[("__name__", "http.status"), ("q", "0.9"), ("a", "b")]);
    find(
        &e,
        &[
            ("__name__", "Heizölrückstoßabdämpfung 10€ metric with \"interesting\" {character\nchoices}"),
            ("strange©™\n'quoted' \"name\"", "6"),
        ],
    );
    find(&e, &[("__name__", "quotedexemplar_count")]);
    let m = meta(&e, "go.gc_duration_seconds");
    assert_eq!((m.metric_type, m.unit.as_str()), (MetricType::Summary, "seconds"));
}

#[test]
fn empty_label_values_are_dropped() {
    let e = text("a{b=\"\",c=\"d\"} 1\n");
    assert_eq!(e.samples[0].labels, ls(&[("__name__", "a"), ("c", "d")]));
}

#[test]
fn content_type_selection() {
    assert_eq!(format_from_content_type(None), Format::Text);
    assert_eq!(format_from_content_type(Some("text/plain; version=0.0.4; charset=utf-8")), Format::Text);
    assert_eq!(format_from_content_type(Some("text/plain;version=1.0.0;escaping=allow-utf-8")), Format::Text);
    assert_eq!(
        format_from_content_type(Some("application/openmetrics-text; version=1.0.0; charset=utf-8")),
        Format::OpenMetrics
    );
    assert_eq!(
        format_from_content_type(Some("Application/OpenMetrics-Text;version=0.0.1")),
        Format::OpenMetrics
    );
    assert_eq!(format_from_content_type(Some(" application/openmetrics-text ")), Format::OpenMetrics);
    assert_eq!(format_from_content_type(Some("text/html")), Format::Text);
    assert_eq!(format_from_content_type(Some("")), Format::Text);
}

#[test]
fn garbage_bodies_are_errors() {
    let html =
        "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>\n";
    for f in [Format::Text, Format::OpenMetrics] {
        let err = parse(html.as_bytes(), f).unwrap_err();
        assert_eq!(err.place, Place::Line(1), "{err}");
        assert!(parse(b"\x00\x01\x02\xff\xfe binary", f).is_err());
        assert!(parse(b"\xef\xbb\xbfa 1\n# EOF\n", f).is_err()); // BOM
        assert!(parse(b"{\"status\":\"success\"}", f).is_err());
    }
    assert!(parse(b"a 1\n\x00\n", Format::Text).is_err());
    // An empty text body is a valid (empty) exposition.
    assert_eq!(text(""), Exposition::default());
    assert_eq!(text("\n\n# only a comment\n"), Exposition::default());
}

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn fuzz_random_and_mutated_inputs_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet: &[u8] = b"abcxyz_:019 \t\n{}=,\"\\#.+-eEInfNa\r\x00\xff\xc3\xa9HELPTYPEUNITOF";
    // Random bytes, some drawn from an alphabet that reaches deep into the grammar.
    for i in 0..3000 {
        let len = rng.below(200);
        let body: Vec<u8> = (0..len)
            .map(|_| if i % 2 == 0 { rng.next() as u8 } else { alphabet[rng.below(alphabet.len())] })
            .collect();
        for f in [Format::Text, Format::OpenMetrics] {
            if let Err(e) = parse(&body, f) {
                assert!(matches!(e.place, Place::Line(l) if l >= 1 && l <= body.len() + 1));
            }
        }
    }
    // Mutations of valid inputs: flip, insert, delete, duplicate and truncate.
    let seeds: [&[u8]; 3] =
        [NODE_EXPORTER.as_bytes(), OM_BODY.as_bytes(), b"{\"a.b\",\"c.d\"=\"e\\\"f\"} 1 2\n# EOF\n"];
    for _ in 0..3000 {
        let seed = seeds[rng.below(seeds.len())];
        let mut body = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            if body.is_empty() {
                break;
            }
            let at = rng.below(body.len());
            match rng.below(5) {
                0 => body[at] = alphabet[rng.below(alphabet.len())],
                1 => body.insert(at, alphabet[rng.below(alphabet.len())]),
                2 => {
                    body.remove(at);
                }
                3 => {
                    let end = (at + rng.below(40)).min(body.len());
                    let chunk = body[at..end].to_vec();
                    body.splice(at..at, chunk);
                }
                _ => body.truncate(at),
            }
        }
        for f in [Format::Text, Format::OpenMetrics] {
            let _ = parse(&body, f);
        }
    }
}

#[test]
fn parses_ten_thousand_lines_quickly() {
    let mut body = String::new();
    body.push_str("# HELP http_requests_total Total requests.\n# TYPE http_requests_total counter\n");
    for i in 0..5000 {
        body.push_str(&format!(
            "http_requests_total{{method=\"GET\",code=\"200\",handler=\"/api/v1/item/{i}\",instance=\"host-{}\"}} {}.5 1700000000000\n",
            i % 7,
            i * 3
        ));
    }
    body.push_str("# TYPE latency_seconds histogram\n");
    for i in 0..5000 {
        body.push_str(&format!("latency_seconds_bucket{{le=\"{}\",shard=\"{}\"}} {i}\n", i % 10, i / 10));
    }
    let start = std::time::Instant::now();
    let e = text(&body);
    let text_elapsed = start.elapsed();
    assert_eq!(e.samples.len(), 10_000);
    assert_eq!(e.samples[9999].labels.get("le"), "9.0");

    let om_body = body.replace(" 1700000000000\n", " 1700000000.000\n") + "# EOF\n";
    let start = std::time::Instant::now();
    let e = om(&om_body);
    let om_elapsed = start.elapsed();
    assert_eq!(e.samples.len(), 10_000);
    assert_eq!(e.samples[0].timestamp_ms, Some(1_700_000_000_000));
    // Generous bounds: unoptimised test builds on a loaded 2-core machine.
    assert!(text_elapsed.as_secs_f64() < 2.0, "text took {text_elapsed:?}");
    assert!(om_elapsed.as_secs_f64() < 2.0, "openmetrics took {om_elapsed:?}");
}

mod protobuf_format {
    use super::super::protobuf::wire::{self, metric_type};
    use super::*;
    use promflow_storage::native_histogram::{CounterResetHint, Span};

    fn pair(name: &str, value: &str) -> wire::LabelPair {
        wire::LabelPair { name: Some(name.into()), value: Some(value.into()) }
    }

    fn family(name: &str, kind: i32, metric: Vec<wire::Metric>) -> wire::MetricFamily {
        wire::MetricFamily {
            name: Some(name.into()),
            help: Some("help".into()),
            r#type: Some(kind),
            metric,
            unit: None,
        }
    }

    /// A histogram with 3 classic buckets and 2 native ones (schema 0, buckets 1 and 2).
    fn both_kinds() -> wire::Histogram {
        let bucket = |le: f64, c: u64| wire::Bucket {
            cumulative_count: Some(c),
            upper_bound: Some(le),
            ..Default::default()
        };
        wire::Histogram {
            sample_count: Some(5),
            sample_sum: Some(7.5),
            bucket: vec![bucket(1.0, 2), bucket(2.0, 5), bucket(f64::INFINITY, 5)],
            schema: Some(0),
            zero_threshold: Some(0.001),
            zero_count: Some(0),
            positive_span: vec![wire::BucketSpan { offset: Some(1), length: Some(2) }],
            positive_delta: vec![2, 1],
            ..Default::default()
        }
    }

    fn body(families: &[wire::MetricFamily]) -> Vec<u8> {
        wire::encode_delimited(families)
    }

    fn names(e: &Exposition) -> Vec<String> {
        e.samples.iter().map(|s| s.labels.to_string()).collect()
    }

    #[test]
    fn counters_gauges_and_summaries_become_the_series_prometheus_makes() {
        let b = body(&[
            family(
                "requests_total",
                metric_type::COUNTER,
                vec![wire::Metric {
                    label: vec![pair("code", "200"), pair("empty", "")],
                    counter: Some(wire::Counter {
                        value: Some(12.0),
                        exemplar: Some(wire::Exemplar {
                            label: vec![pair("trace_id", "abc")],
                            value: Some(0.5),
                            timestamp: Some(wire::Timestamp { seconds: 1_700_000_000, nanos: 5_000_000 }),
                        }),
                        ..Default::default()
                    }),
                    timestamp_ms: Some(1_700_000_000_123),
                    ..Default::default()
                }],
            ),
            family(
                "temperature",
                metric_type::GAUGE,
                vec![wire::Metric {
                    gauge: Some(wire::Gauge { value: Some(f64::NAN) }),
                    ..Default::default()
                }],
            ),
            family(
                "latency",
                metric_type::SUMMARY,
                vec![wire::Metric {
                    summary: Some(wire::Summary {
                        sample_count: Some(3),
                        sample_sum: Some(1.5),
                        quantile: vec![wire::Quantile { quantile: Some(0.5), value: Some(0.4) }],
                        created_timestamp: None,
                    }),
                    ..Default::default()
                }],
            ),
        ]);
        let e = parse(&b, Format::Protobuf).unwrap();
        assert_eq!(
            names(&e),
            [
                "{__name__=\"requests_total\", code=\"200\"}",
                "{__name__=\"temperature\"}",
                "{__name__=\"latency_count\"}",
                "{__name__=\"latency_sum\"}",
                "{__name__=\"latency\", quantile=\"0.5\"}",
            ]
        );
        assert_eq!(e.samples[0].timestamp_ms, Some(1_700_000_000_123));
        assert_eq!(e.samples[0].value, 12.0);
        let exemplar = e.samples[0].exemplar.as_ref().expect("the counter's exemplar");
        assert_eq!(
            (exemplar.labels.get("trace_id"), exemplar.value, exemplar.timestamp_ms),
            ("abc", 0.5, Some(1_700_000_000_005))
        );
        // a scraped NaN is never the staleness marker
        assert!(e.samples[1].value.is_nan() && !promflow_storage::is_stale_nan(e.samples[1].value));
        assert_eq!(e.metadata[2].metric_type, MetricType::Summary);
        assert!(e.histograms.is_empty());
    }

    #[test]
    fn a_native_histogram_is_one_series_and_its_classic_buckets_only_when_asked_for() {
        let b = body(&[family(
            "rpc_seconds",
            metric_type::HISTOGRAM,
            vec![wire::Metric {
                label: vec![pair("svc", "a")],
                histogram: Some(both_kinds()),
                ..Default::default()
            }],
        )]);
        let native = HistogramOptions { native: true, ..Default::default() };
        let e = parse_with(&b, Format::Protobuf, &native).unwrap();
        assert!(e.samples.is_empty(), "{:?}", names(&e));
        assert_eq!(e.histograms.len(), 1);
        let h = &e.histograms[0];
        assert_eq!(h.labels.to_string(), "{__name__=\"rpc_seconds\", svc=\"a\"}");
        assert_eq!((h.histogram.count, h.histogram.sum, h.histogram.schema), (5.0, 7.5, 0));
        assert_eq!(h.histogram.positive_buckets(), &[(1, 2.0), (2, 3.0)]);
        assert_eq!(h.histogram.hint, CounterResetHint::Unknown);

        let both = HistogramOptions { native: true, keep_classic: true, ..Default::default() };
        let e = parse_with(&b, Format::Protobuf, &both).unwrap();
        assert_eq!(e.histograms.len(), 1);
        assert_eq!(
            names(&e),
            [
                "{__name__=\"rpc_seconds_count\", svc=\"a\"}",
                "{__name__=\"rpc_seconds_sum\", svc=\"a\"}",
                "{__name__=\"rpc_seconds_bucket\", le=\"1.0\", svc=\"a\"}",
                "{__name__=\"rpc_seconds_bucket\", le=\"2.0\", svc=\"a\"}",
                "{__name__=\"rpc_seconds_bucket\", le=\"+Inf\", svc=\"a\"}",
            ]
        );

        // native histograms not scraped: the classic histogram only
        let e = parse(&b, Format::Protobuf).unwrap();
        assert!(e.histograms.is_empty());
        assert_eq!(e.samples.len(), 5);
    }

    #[test]
    fn float_gauge_and_classic_only_histograms() {
        let float = wire::Histogram {
            sample_count_float: Some(2.5),
            sample_sum: Some(3.0),
            schema: Some(-1),
            zero_threshold: Some(0.5),
            zero_count_float: Some(0.5),
            negative_span: vec![wire::BucketSpan { offset: Some(0), length: Some(1) }],
            negative_count: vec![2.0],
            ..Default::default()
        };
        let classic = wire::Histogram {
            sample_count: Some(4),
            sample_sum: Some(2.0),
            bucket: vec![wire::Bucket {
                cumulative_count: Some(1),
                upper_bound: Some(0.25),
                ..Default::default()
            }],
            ..Default::default()
        };
        let b = body(&[
            family(
                "queue_depth",
                metric_type::GAUGE_HISTOGRAM,
                vec![wire::Metric { histogram: Some(float), ..Default::default() }],
            ),
            family(
                "old",
                metric_type::HISTOGRAM,
                vec![wire::Metric { histogram: Some(classic), ..Default::default() }],
            ),
        ]);
        let e = parse_with(&b, Format::Protobuf, &HistogramOptions { native: true, ..Default::default() })
            .unwrap();
        let h = &e.histograms[0].histogram;
        assert_eq!((h.count, h.zero_count, h.hint), (2.5, 0.5, CounterResetHint::Gauge));
        assert_eq!(h.negative_buckets(), &[(0, 2.0)]);
        // the classic-only histogram gets its +Inf bucket, counting every observation
        assert_eq!(
            names(&e),
            [
                "{__name__=\"old_count\"}",
                "{__name__=\"old_sum\"}",
                "{__name__=\"old_bucket\", le=\"0.25\"}",
                "{__name__=\"old_bucket\", le=\"+Inf\"}"
            ]
        );
        assert_eq!(e.samples[3].value, 4.0);

        // and it converts to custom buckets when asked
        let nhcb = HistogramOptions { native: true, classic_to_custom_buckets: true, ..Default::default() };
        let e = parse_with(&b, Format::Protobuf, &nhcb).unwrap();
        assert!(e.samples.is_empty(), "{:?}", names(&e));
        let old = &e.histograms[1];
        assert_eq!(old.labels.to_string(), "{__name__=\"old\"}");
        assert_eq!(old.histogram.custom_bounds(), &[0.25]);
        assert_eq!(old.histogram.positive_buckets(), &[(0, 1.0), (1, 3.0)]);
        let _ = Span { offset: 0, length: 0 };
    }

    #[test]
    fn malformed_bodies_are_errors_naming_the_message() {
        let good = body(&[family(
            "x",
            metric_type::GAUGE,
            vec![wire::Metric { gauge: Some(wire::Gauge { value: Some(1.0) }), ..Default::default() }],
        )]);
        let mut truncated = good.clone();
        truncated.extend_from_slice(&good[..good.len() - 2]);
        let err = parse(&truncated, Format::Protobuf).unwrap_err();
        assert_eq!(err.place, Place::MetricFamily(2), "{err}");
        for bad in [
            b"<html>not protobuf</html>".to_vec(),
            vec![0xff; 12],
            body(&[family("", metric_type::GAUGE, vec![wire::Metric::default()])]),
            body(&[family("x", 99, vec![wire::Metric::default()])]),
            body(&[wire::MetricFamily {
                unit: Some("bytes".into()),
                ..family("x_seconds", metric_type::GAUGE, vec![wire::Metric::default()])
            }]),
            body(&[family(
                "x",
                metric_type::GAUGE,
                vec![wire::Metric { label: vec![pair("a", "1"), pair("a", "2")], ..Default::default() }],
            )]),
        ] {
            assert!(parse(&bad, Format::Protobuf).is_err(), "{bad:?}");
        }
        // spans that do not cover the deltas: the sender's error
        let mut h = both_kinds();
        h.positive_delta.pop();
        let b = body(&[family(
            "h",
            metric_type::HISTOGRAM,
            vec![wire::Metric { histogram: Some(h), ..Default::default() }],
        )]);
        let err = parse_with(&b, Format::Protobuf, &HistogramOptions { native: true, ..Default::default() })
            .unwrap_err();
        assert!(err.to_string().contains("spans cover 2 buckets"), "{err}");
    }

    #[test]
    fn content_type_picks_protobuf() {
        assert_eq!(
            format_from_content_type(Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            )),
            Format::Protobuf
        );
    }
}

#[test]
fn classic_text_histograms_convert_to_custom_buckets() {
    let body = "# TYPE http_seconds histogram\n\
                http_seconds_bucket{le=\"0.1\",path=\"/\"} 1\n\
                http_seconds_bucket{le=\"1\",path=\"/\"} 3\n\
                http_seconds_bucket{le=\"+Inf\",path=\"/\"} 4\n\
                http_seconds_sum{path=\"/\"} 2.5\n\
                http_seconds_count{path=\"/\"} 4\n\
                # TYPE broken histogram\n\
                broken_bucket{le=\"1\"} 5\n\
                broken_bucket{le=\"+Inf\"} 3\n\
                broken_count 3\n\
                other 1\n";
    let convert = HistogramOptions { classic_to_custom_buckets: true, ..Default::default() };
    let e = parse_with(body.as_bytes(), Format::Text, &convert).unwrap();
    assert_eq!(e.histograms.len(), 1);
    let h = &e.histograms[0];
    assert_eq!(h.labels.to_string(), "{__name__=\"http_seconds\", path=\"/\"}");
    assert_eq!(h.histogram.custom_bounds(), &[0.1, 1.0]);
    assert_eq!(h.histogram.positive_buckets(), &[(0, 1.0), (1, 2.0), (2, 1.0)]);
    assert_eq!((h.histogram.count, h.histogram.sum), (4.0, 2.5));
    // the broken histogram (not cumulative) stays classic; the converted one's series go
    let left: Vec<&str> = e.samples.iter().map(|s| s.labels.metric_name()).collect();
    assert_eq!(left, ["broken_bucket", "broken_bucket", "broken_count", "other"]);

    let keep = HistogramOptions { classic_to_custom_buckets: true, keep_classic: true, ..Default::default() };
    let e = parse_with(body.as_bytes(), Format::Text, &keep).unwrap();
    assert_eq!((e.histograms.len(), e.samples.len()), (1, 9));
}
