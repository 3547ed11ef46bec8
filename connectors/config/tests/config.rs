//! Loading whole configuration files.

use std::collections::BTreeMap;
use std::time::Duration;

use promflow_config::{
    relabel, Action, Config, Error, LoadOptions, NameValidationScheme, ScrapeProtocol, TlsVersion,
};
use promflow_storage::Labels;

const REALISTIC: &str = r#"
# A realistic prometheus.yml
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels:
    cluster: prod-eu
    replica: "${REPLICA}"
    price: "$$5"

rule_files:
  - rules/*.yml
  - /etc/prometheus/alerts.yml

alerting:
  alertmanagers:
    - static_configs:
        - targets: ["am1:9093", "am2:9093"]
      path_prefix: /am

scrape_configs:
  - job_name: node
    <<: &common
      honor_labels: yes
    scrape_interval: 30s
    static_configs:
      - targets: ["host1:9100", "host2:9100"]
        labels:
          env: prod
          rack: 12
    relabel_configs:
      - source_labels: [__address__]
        regex: "([^:]+):\\d+"
        target_label: host
        replacement: "${1}"
      - source_labels: [env]
        regex: staging
        action: drop
      - source_labels: [env]
        regex: prod|staging
        action: keep
      - source_labels: [__address__]
        modulus: 4
        target_label: __tmp_shard
        action: hashmod
      - source_labels: [__meta_x]
        target_label: __tmp_shard
        action: keepequal
      - source_labels: [host]
        target_label: host
        action: dropequal
      - regex: __meta_(.+)
        action: labelmap
      - regex: __tmp_.*
        action: labeldrop
      - regex: (__.*|instance|job|host|env|rack|region)
        action: labelkeep
      - source_labels: [host]
        target_label: HOST_LOWER
        action: Lowercase
      - source_labels: [host]
        target_label: host_upper
        action: uppercase
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: go_.*
        action: drop

  - job_name: files
    <<: *common
    scheme: https
    metrics_path: /custom
    params:
      module: [http_2xx]
    basic_auth:
      username: admin
      password: s3cr3t
    tls_config:
      ca_file: certs/ca.pem
      cert_file: /abs/cert.pem
      key_file: certs/key.pem
      server_name: example.org
      insecure_skip_verify: true
      min_version: TLS12
    file_sd_configs:
      - files: [targets/*.json, more.yml]
        refresh_interval: 1m
    sample_limit: 1000
    body_size_limit: 10MB

  - job_name: cloud
    scrape_timeout: 5s
    bearer_token: tok3n
    kubernetes_sd_configs:
      - role: pod
        namespaces:
          names: [default]
    ec2_sd_configs:
      - region: eu-west-1
        secret_key: hunter2
        port: 9100
"#;

fn env() -> LoadOptions {
    LoadOptions {
        env: Some([("REPLICA".to_string(), "a".to_string())].into_iter().collect::<BTreeMap<_, _>>()),
        ..Default::default()
    }
}

fn parse(text: &str) -> Result<promflow_config::LoadedConfig, Error> {
    Config::parse_with(text, "prometheus.yml", &env())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn realistic_config() {
    let loaded = Config::parse_with(REALISTIC, "/etc/prometheus/prometheus.yml", &env()).unwrap();
    let c = &loaded.config;

    assert_eq!(c.global.scrape_interval, Duration::from_secs(15));
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(10));
    assert_eq!(c.global.evaluation_interval, Duration::from_secs(30));
    assert_eq!(
        c.global.external_labels,
        Labels::from_pairs([("cluster", "prod-eu"), ("replica", "a"), ("price", "$5")])
    );
    assert_eq!(c.rule_files, vec!["/etc/prometheus/rules/*.yml", "/etc/prometheus/alerts.yml"]);
    assert_eq!(c.alerting.alertmanagers[0].path_prefix, "/am");
    assert_eq!(c.alerting.alertmanagers[0].timeout, Duration::from_secs(10));
    assert_eq!(c.alerting.alertmanagers[0].api_version, "v2");

    assert_eq!(c.scrape_configs.len(), 3);
    let node = c.scrape_config("node").unwrap();
    assert!(node.honor_labels, "merge key and `yes`");
    assert!(node.honor_timestamps);
    assert_eq!(node.scrape_interval, Duration::from_secs(30));
    assert_eq!(node.scrape_timeout, Duration::from_secs(10));
    assert_eq!(node.metrics_path, "/metrics");
    assert_eq!(node.scheme, "http");
    assert_eq!(node.scrape_protocols, ScrapeProtocol::DEFAULT.to_vec());
    assert_eq!(node.metric_name_escaping_scheme, "allow-utf-8");
    assert_eq!(node.metric_name_validation_scheme, Some(NameValidationScheme::Utf8));
    assert_eq!(node.static_configs[0].targets, vec!["host1:9100", "host2:9100"]);
    assert_eq!(node.static_configs[0].labels, Labels::from_pairs([("env", "prod"), ("rack", "12")]));
    let actions: Vec<Action> = node.relabel_configs.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        vec![
            Action::Replace,
            Action::Drop,
            Action::Keep,
            Action::HashMod,
            Action::KeepEqual,
            Action::DropEqual,
            Action::LabelMap,
            Action::LabelDrop,
            Action::LabelKeep,
            Action::Lowercase,
            Action::Uppercase
        ]
    );
    assert_eq!(node.relabel_configs[0].regex.as_str(), "([^:]+):\\d+");
    assert_eq!(node.relabel_configs[0].separator, ";");
    assert_eq!(node.relabel_configs[3].modulus, 4);
    assert_eq!(node.metric_relabel_configs.len(), 1);

    // the first rule applied to a discovered target
    let target = Labels::from_pairs([("__address__", "host1:9100"), ("env", "prod")]);
    let out = relabel::process(&target, &node.relabel_configs[..1]).unwrap();
    assert_eq!(out.get("host"), "host1");

    let files = c.scrape_config("files").unwrap();
    assert_eq!(files.scheme, "https");
    assert_eq!(files.metrics_path, "/custom");
    assert_eq!(files.params["module"], vec!["http_2xx"]);
    let ba = files.basic_auth.as_ref().unwrap();
    assert_eq!(ba.username, "admin");
    assert_eq!(ba.password.as_deref(), Some("s3cr3t"));
    assert_eq!(files.tls_config.ca_file.as_deref(), Some("/etc/prometheus/certs/ca.pem"));
    assert_eq!(files.tls_config.cert_file.as_deref(), Some("/abs/cert.pem"));
    assert_eq!(files.tls_config.key_file.as_deref(), Some("/etc/prometheus/certs/key.pem"));
    assert_eq!(files.tls_config.server_name.as_deref(), Some("example.org"));
    assert!(files.tls_config.insecure_skip_verify);
    assert_eq!(files.tls_config.min_version, Some(TlsVersion::Tls12));
    assert_eq!(
        files.file_sd_configs[0].files,
        vec!["/etc/prometheus/targets/*.json", "/etc/prometheus/more.yml"]
    );
    assert_eq!(files.file_sd_configs[0].refresh_interval, Duration::from_secs(60));
    assert_eq!(files.sample_limit, 1000);
    assert_eq!(files.body_size_limit, 10 << 20);
    assert_eq!(files.scrape_interval, Duration::from_secs(15), "inherited");
    assert!(files.follow_redirects && files.enable_http2);

    let cloud = c.scrape_config("cloud").unwrap();
    assert_eq!(cloud.scrape_timeout, Duration::from_secs(5));
    let auth = cloud.authorization.as_ref().unwrap();
    assert_eq!((auth.type_.as_str(), auth.credentials.as_deref()), ("Bearer", Some("tok3n")));
    assert!(cloud.bearer_token.is_none());
    assert_eq!(cloud.kubernetes_sd_configs[0].role, "pod");
    assert_eq!(cloud.kubernetes_sd_configs[0].namespaces.names, vec!["default"]);
    assert_eq!(cloud.ec2_sd_configs.len(), 1);
    assert_eq!(cloud.service_discoveries(), vec![("kubernetes_sd_configs", 1), ("ec2_sd_configs", 1)]);

    assert_eq!(
        loaded.warnings,
        vec![
            "rule_files: not implemented yet; recording and alerting rules are not evaluated",
            "scrape_configs[job=\"cloud\"].kubernetes_sd_configs: not implemented yet; targets from it are not scraped",
            "scrape_configs[job=\"cloud\"].ec2_sd_configs: not implemented yet; targets from it are not scraped",
            "alerting.alertmanagers: not implemented yet; alerts are not sent to Alertmanager",
        ]
    );
    assert_eq!(loaded.source, REALISTIC);
}

#[test]
fn redacted_yaml_hides_secrets_and_reparses() {
    let loaded = parse(REALISTIC).unwrap();
    let yaml = loaded.config.to_redacted_yaml();
    for secret in ["s3cr3t", "tok3n", "hunter2"] {
        assert!(!yaml.contains(secret), "{secret} leaked:\n{yaml}");
    }
    assert!(yaml.contains("<secret>"), "{yaml}");
    assert!(yaml.contains("scrape_interval: 15s"), "{yaml}");
    assert!(yaml.contains("scrape_timeout: 10s"), "defaults are shown:\n{yaml}");
    assert!(yaml.contains("action: labelmap"), "{yaml}");
    // the rendering is itself a valid configuration with the same meaning
    let again = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let a = &loaded.config;
    let b = &again.config;
    // `$$5` was expanded to `$5` on load; loading that again expands `$5` (an unset
    // variable), exactly as Prometheus would
    let (mut ga, mut gb) = (a.global.clone(), b.global.clone());
    ga.external_labels.remove("price");
    gb.external_labels.remove("price");
    assert_eq!(ga, gb);
    if std::env::var("SHOW_YAML").is_ok() {
        println!("{yaml}");
    }
    assert_eq!(a.scrape_configs.len(), b.scrape_configs.len());
    for (x, y) in a.scrape_configs.iter().zip(&b.scrape_configs) {
        assert_eq!(x.job_name, y.job_name);
        assert_eq!(x.relabel_configs, y.relabel_configs);
        assert_eq!(x.scrape_interval, y.scrape_interval);
        assert_eq!(x.scrape_timeout, y.scrape_timeout);
        assert_eq!(x.static_configs, y.static_configs);
        assert_eq!(x.tls_config, y.tls_config);
    }
}

#[test]
fn empty_and_comment_only_files_are_valid() {
    for text in ["", "\n", "# nothing here\n", "---\n", "global:\n", "scrape_configs:\n"] {
        let loaded = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(loaded.config.global.scrape_interval, Duration::from_secs(60));
        assert_eq!(loaded.config.global.scrape_timeout, Duration::from_secs(10));
        assert_eq!(loaded.config.global.evaluation_interval, Duration::from_secs(60));
        assert!(loaded.config.scrape_configs.is_empty());
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}

#[test]
fn prometheus_stock_config() {
    let text = r#"# my global config
global:
  scrape_interval: 15s # Set the scrape interval to every 15 seconds. Default is every 1 minute.
  evaluation_interval: 15s # Evaluate rules every 15 seconds. The default is every 1 minute.
  # scrape_timeout is set to the global default (10s).

# Alertmanager configuration
alerting:
  alertmanagers:
    - static_configs:
        - targets:
          # - alertmanager:9093

# Load rules once and periodically evaluate them according to the global 'evaluation_interval'.
rule_files:
  # - "first_rules.yml"
  # - "second_rules.yml"

scrape_configs:
  - job_name: "prometheus"

    # metrics_path defaults to '/metrics'
    # scheme defaults to 'http'.

    static_configs:
      - targets: ["localhost:9090"]
       # The label name is added as a label `label_name=<label_value>` to any timeseries scraped from this config.
        labels:
          app: "prometheus"
"#;
    let loaded = parse(text).unwrap();
    let c = &loaded.config;
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(10));
    assert_eq!(c.scrape_configs[0].scrape_interval, Duration::from_secs(15));
    assert_eq!(c.scrape_configs[0].static_configs[0].labels.get("app"), "prometheus");
    assert!(c.rule_files.is_empty());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let text = "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [x:1]\n    scrape_intervall: 5s\n";
    let e = parse(text).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("prometheus.yml:7:5: "), "{msg}");
    assert!(msg.contains("unknown field \"scrape_intervall\" in scrape_configs[0]"), "{msg}");
    assert!(msg.contains("did you mean \"scrape_interval\""), "{msg}");
    match e {
        Error::Config { file, line, .. } => {
            assert_eq!(file, "prometheus.yml");
            assert_eq!(line, Some(7));
        }
        other => panic!("{other:?}"),
    }
    let msg = err("bogus_field: 1\n");
    assert!(msg.starts_with("prometheus.yml:1:1: unknown field \"bogus_field\""), "{msg}");
    let msg =
        err("scrape_configs:\n- job_name: a\n  relabel_configs:\n  - source_labels: [a]\n    target: b\n");
    assert!(msg.contains("prometheus.yml:5:"), "{msg}");
    assert!(msg.contains("unknown field \"target\" in scrape_configs[0].relabel_configs[0]"), "{msg}");
    let msg = err("global:\n  external_labels: {a: b}\n  bogus: 1\n");
    assert!(msg.contains("prometheus.yml:3:3: unknown field \"bogus\" in global"), "{msg}");
}

#[test]
fn bad_values_name_the_field() {
    let msg = err("global:\n  scrape_interval: 15x\n");
    assert!(msg.starts_with("prometheus.yml:2:"), "{msg}");
    assert!(msg.contains("global.scrape_interval"), "{msg}");
    assert!(msg.contains("unknown unit \"x\" in duration \"15x\""), "{msg}");
    let msg = err("scrape_configs:\n  - job_name: a\n    scrape_timeout: 1m1h\n");
    assert!(
        msg.contains("prometheus.yml:3:") && msg.contains("not a valid duration string: \"1m1h\""),
        "{msg}"
    );
    let msg = err("scrape_configs:\n  - job_name: a\n    honor_labels: maybe\n");
    assert!(msg.contains("prometheus.yml:3:") && msg.contains("honor_labels"), "{msg}");
    let msg = err("scrape_configs:\n  - job_name: a\n    sample_limit: lots\n");
    assert!(msg.contains("prometheus.yml:3:"), "{msg}");
    let msg = err("scrape_configs:\n  - job_name: a\n    body_size_limit: 10XB\n");
    assert!(msg.contains("unknown unit \"XB\""), "{msg}");
    let msg = err("scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: explode\n");
    assert!(msg.contains("prometheus.yml:4:") && msg.contains("unknown relabel action \"explode\""), "{msg}");
    let msg = err("scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - regex: '(unclosed'\n        action: drop\n");
    assert!(msg.contains("prometheus.yml:4:") && msg.contains("invalid regular expression"), "{msg}");
    let msg = err("global:\n  scrape_interval: 1m\n  scrape_interval: 2m\n");
    assert!(msg.contains("prometheus.yml:3:") && msg.contains("duplicate"), "{msg}");
    let msg = err("scrape_configs: {job_name: a}\n");
    assert!(msg.contains("prometheus.yml:1:"), "{msg}");
    let msg = err("global: [1, 2\n");
    assert!(msg.starts_with("prometheus.yml:"), "{msg}");
}

#[test]
fn relabel_rules_are_validated_with_position() {
    let cases = [
        ("- source_labels: [a]\n  action: replace\n", "requires 'target_label' value"),
        ("- source_labels: [a]\n  target_label: b\n  action: hashmod\n", "requires non-zero modulus"),
        ("- source_labels: [a]\n  regex: x\n  action: labeldrop\n", "labeldrop action requires only 'regex'"),
        ("- target_label: a\n  action: labelkeep\n", "labelkeep action requires only 'regex'"),
        (
            "- source_labels: [a]\n  target_label: b\n  regex: x\n  action: keepequal\n",
            "keepequal action requires only",
        ),
        (
            "- source_labels: [a]\n  target_label: b\n  replacement: x\n  action: uppercase\n",
            "'replacement' can not be set",
        ),
        ("- source_labels: ['']\n  target_label: b\n", "\"\" is not a valid label name"),
    ];
    for (rule, want) in cases {
        let indented: String = rule.lines().map(|l| format!("      {l}\n")).collect();
        let text = format!("scrape_configs:\n  - job_name: a\n    relabel_configs:\n{indented}");
        let msg = err(&text);
        assert!(msg.contains(want), "{rule}: {msg}");
        assert!(msg.starts_with("prometheus.yml:4:"), "{rule}: {msg}");
        assert!(msg.contains("scrape_configs[0].relabel_configs[0]"), "{rule}: {msg}");
    }
    // legacy name validation applies to relabel targets of that job
    let msg = err("scrape_configs:\n  - job_name: a\n    metric_name_validation_scheme: legacy\n    relabel_configs:\n      - target_label: foo.bar\n        replacement: x\n");
    assert!(msg.contains("\"foo.bar\" is invalid 'target_label' for replace action"), "{msg}");
    assert!(msg.starts_with("prometheus.yml:2:"), "{msg}");
    // ...but UTF-8 names are fine by default, and `$1` templates are allowed
    parse("scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - target_label: foo.bar\n        replacement: x\n      - source_labels: [x]\n        target_label: ${1}_y\n").unwrap();
}

#[test]
fn semantic_errors() {
    let msg = err("scrape_configs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n");
    assert!(msg.contains("found multiple scrape configs with job name \"a\""), "{msg}");
    assert!(msg.starts_with("prometheus.yml:4:"), "{msg}");

    let msg = err("scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n");
    assert!(
        msg.contains("scrape timeout greater than scrape interval for scrape config with job name \"a\""),
        "{msg}"
    );
    assert!(msg.starts_with("prometheus.yml:2:"), "{msg}");
    // an inherited timeout is capped instead
    let c = parse("scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n").unwrap().config;
    assert_eq!(c.scrape_configs[0].scrape_timeout, Duration::from_secs(5));
    let c = parse("global:\n  scrape_interval: 5s\n").unwrap().config;
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(5));
    let msg = err("global:\n  scrape_interval: 5s\n  scrape_timeout: 6s\n");
    assert!(msg.contains("global scrape timeout greater than scrape interval"), "{msg}");

    assert!(err("scrape_configs:\n  - scrape_interval: 5s\n").contains("job_name is empty"));
    assert!(err("scrape_configs:\n  - job_name: a\n    scheme: ftp\n").contains("invalid scheme \"ftp\""));
    assert!(err(
        "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['http://x:1/metrics']\n"
    )
    .contains("\"http://x:1/metrics\" is not a valid hostname"));
    assert!(err("scrape_configs:\n  - job_name: a\n    bearer_token: x\n    bearer_token_file: y\n")
        .contains("at most one of bearer_token & bearer_token_file must be configured"));
    assert!(err("scrape_configs:\n  - job_name: a\n    basic_auth: {username: u}\n    authorization: {credentials: c}\n")
        .contains("at most one of basic_auth, oauth2 & authorization must be configured"));
    assert!(err("scrape_configs:\n  - job_name: a\n    tls_config: {cert_file: c.pem}\n")
        .contains("exactly one of key or key_file must be configured"));
    assert!(err("scrape_configs:\n  - job_name: a\n    tls_config: {min_version: TLS9}\n")
        .contains("unknown TLS version: TLS9"));
    assert!(err("scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files: [a.txt]\n")
        .contains("path name \"a.txt\" is not valid for file discovery"));
    assert!(err("scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - refresh_interval: 1m\n")
        .contains("file service discovery config must contain at least one path name"));
    assert!(err("scrape_configs:\n  - job_name: a\n    http_sd_configs:\n      - url: ftp://x\n")
        .contains("URL scheme must be 'http' or 'https'"));
    assert!(err(
        "scrape_configs:\n  - job_name: a\n    dns_sd_configs:\n      - names: [x]\n        type: A\n"
    )
    .contains("a port is required"));
    assert!(err(
        "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - namespaces: {names: [x]}\n"
    )
    .contains("role missing"));
    assert!(err("scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: pods\n")
        .contains("unknown Kubernetes SD role \"pods\""));
    assert!(err("scrape_configs:\n  - job_name: a\n    ec2_sd_configs:\n      - not-a-mapping\n")
        .contains("expected a mapping"));
    assert!(err("scrape_configs:\n  - job_name: a\n    ec2_sd_configs: {region: x}\n")
        .contains("prometheus.yml:3:"));
    assert!(err("scrape_configs:\n  - job_name: a\n    scrape_protocols: [PrometheusText0.0.4, PrometheusText0.0.4]\n")
        .contains("duplicated protocol in scrape_protocols"));
    assert!(err("scrape_configs:\n  - job_name: a\n    scrape_protocols: [Bogus]\n")
        .contains("unknown scrape protocol Bogus"));
    assert!(err("rule_files: ['rules/*/x.yml']\n").contains("invalid rule file path"));
    assert!(err("remote_write:\n  - name: x\n").contains("url for remote_write is empty"));
    assert!(err("remote_write:\n  - url: http://a\n    name: x\n  - url: http://b\n    name: x\n")
        .contains("found multiple remote write configs with job name \"x\""));
    assert!(err("remote_write:\n  - url: http://a\n    queue_config: {min_shards: 5, max_shards: 2}\n")
        .contains("min_shards must not be greater than max_shards"));
    assert!(err("remote_write:\n  - url: http://a\n    headers: {Authorization: x}\n")
        .contains("authorization header"));
    assert!(err("alerting:\n  alertmanagers:\n    - api_version: v1\n").contains("api version"));
    assert!(err("tracing:\n  client_type: grpc\n").contains("tracing endpoint must be set"));
    assert!(err("global:\n  external_labels:\n    '': x\n").contains("is not a valid label name"));
    assert!(err("global:\n  metric_name_validation_scheme: legacy\n  external_labels:\n    a.b: x\n")
        .contains("\"a.b\" is not a valid label name"));
}

#[test]
fn yaml_dialect() {
    let c = parse("scrape_configs:\n  - job_name: 123\n    honor_labels: yes\n    honor_timestamps: off\n    static_configs:\n      - targets: [a:1]\n        labels: {port: 9100, on: true}\n")
        .unwrap()
        .config;
    let sc = &c.scrape_configs[0];
    assert_eq!(sc.job_name, "123");
    assert!(sc.honor_labels);
    assert!(!sc.honor_timestamps);
    assert_eq!(sc.static_configs[0].labels.get("port"), "9100");
    assert_eq!(sc.static_configs[0].labels.get("on"), "true");
}

#[test]
fn null_sections_are_empty() {
    let c = parse("global:\nscrape_configs:\n  - job_name: a\n    static_configs:\n      - targets:\n        labels:\n    relabel_configs:\n    params:\nrule_files:\nremote_write:\nstorage:\n  tsdb:\n").unwrap();
    let sc = &c.config.scrape_configs[0];
    assert!(sc.static_configs[0].targets.is_empty());
    assert!(sc.relabel_configs.is_empty());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn global_inheritance_and_protocols() {
    let text = "global:\n  scrape_interval: 20s\n  scrape_timeout: 15s\n  sample_limit: 100\n  label_limit: 5\n  body_size_limit: 1KB\n  scrape_native_histograms: true\n  metric_name_validation_scheme: legacy\nscrape_configs:\n  - job_name: a\n  - job_name: b\n    sample_limit: 7\n    scrape_protocols: [PrometheusText0.0.4]\n";
    let c = parse(text).unwrap().config;
    let a = &c.scrape_configs[0];
    assert_eq!(a.scrape_interval, Duration::from_secs(20));
    assert_eq!(a.scrape_timeout, Duration::from_secs(15));
    assert_eq!(a.sample_limit, 100);
    assert_eq!(a.label_limit, 5);
    assert_eq!(a.body_size_limit, 1024);
    assert_eq!(a.scrape_native_histograms, Some(true));
    assert_eq!(a.scrape_protocols, ScrapeProtocol::PROTO_FIRST.to_vec());
    assert_eq!(a.metric_name_validation_scheme, Some(NameValidationScheme::Legacy));
    assert_eq!(a.metric_name_escaping_scheme, "underscores");
    let b = &c.scrape_configs[1];
    assert_eq!(b.sample_limit, 7);
    assert_eq!(b.scrape_protocols, vec![ScrapeProtocol::PrometheusText0_0_4]);
    assert_eq!(b.accept_header(), "text/plain;version=0.0.4;q=0.6,*/*;q=0.5");
}

#[test]
fn external_labels_from_environment() {
    let opts = LoadOptions {
        env: Some([("DC".to_string(), "fra".to_string())].into_iter().collect()),
        ..Default::default()
    };
    let loaded = Config::parse_with(
        "global:\n  external_labels:\n    dc: $DC\n    zone: ${ZONE}\n    literal: a$$b\n",
        "p.yml",
        &opts,
    )
    .unwrap();
    let l = &loaded.config.global.external_labels;
    assert_eq!(l.get("dc"), "fra");
    assert!(!l.contains("zone"));
    assert_eq!(l.get("literal"), "a$b");
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("\"ZONE\""));
}

#[test]
fn unimplemented_sections_warn() {
    let text = r#"
remote_write:
  - url: http://mimir/api/v1/push
    basic_auth: {username: u, password: p}
    write_relabel_configs:
      - source_labels: [__name__]
        regex: expensive_.*
        action: drop
    queue_config: {max_shards: 10}
remote_read:
  - url: http://thanos/api/v1/read
storage:
  tsdb:
    out_of_order_time_window: 30m
    stale_series_compaction_threshold: 0.25
  exemplars:
    max_exemplars: 10
tracing:
  endpoint: localhost:4317
runtime:
  gogc: 50
otlp:
  promote_resource_attributes: [service.name]
scrape_configs:
  - job_name: c
    consul_sd_configs:
      - server: consul:8500
        services: [web]
    docker_sd_configs:
      - host: unix:///var/run/docker.sock
"#;
    let loaded = parse(text).unwrap();
    let c = &loaded.config;
    assert_eq!(c.remote_write[0].queue_config.max_shards, 10);
    assert_eq!(c.remote_write[0].queue_config.capacity, 10_000);
    assert_eq!(c.remote_write[0].remote_timeout, Duration::from_secs(30));
    assert!(!c.remote_write[0].enable_http2);
    assert_eq!(c.remote_read[0].remote_timeout, Duration::from_secs(60));
    assert!(c.remote_read[0].filter_external_labels);
    assert_eq!(c.storage.tsdb.out_of_order_time_window, Duration::from_secs(1800));
    assert_eq!(c.storage.tsdb.stale_series_compaction_threshold, 0.25);
    assert_eq!(c.storage.exemplars.max_exemplars, 10);
    assert_eq!(c.scrape_configs[0].consul_sd_configs[0].services, vec!["web"]);
    let w = &loaded.warnings;
    let expect = [
        "scrape_configs[job=\"c\"].consul_sd_configs: not implemented yet",
        "scrape_configs[job=\"c\"].docker_sd_configs: not implemented yet",
        "remote_write: not implemented yet",
        "remote_read: not implemented yet",
        // storage.tsdb's out_of_order_time_window and stale_series_compaction_threshold are
        // implemented: no warning
        "storage.exemplars: not implemented yet",
        "tracing: not implemented yet",
        "otlp: not implemented yet",
        "runtime: ",
    ];
    assert_eq!(w.len(), expect.len(), "{w:#?}");
    for (got, want) in w.iter().zip(expect) {
        assert!(got.starts_with(want), "{got} vs {want}");
    }
    // with the features on, no warnings
    let mut opts = env();
    opts.features.remote_write = true;
    opts.features.remote_read = true;
    opts.features.tsdb = true;
    opts.features.exemplars = true;
    opts.features.tracing = true;
    opts.features.otlp = true;
    opts.features.service_discoveries.insert("consul_sd_configs".into());
    opts.features.service_discoveries.insert("docker_sd_configs".into());
    let loaded = Config::parse_with(text, "prometheus.yml", &opts).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings); // runtime only
}

#[test]
fn a_stale_series_compaction_threshold_outside_0_to_1_fails_the_load() {
    for bad in ["1.5", "-0.1", ".nan"] {
        let text = format!("storage:\n  tsdb:\n    stale_series_compaction_threshold: {bad}\n");
        let err = parse(&text).err().unwrap_or_else(|| panic!("{bad} was taken")).to_string();
        assert!(err.contains("stale_series_compaction_threshold"), "{bad}: {err}");
    }
}

#[test]
fn load_file_resolves_paths_and_scrape_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(conf_dir.join("jobs")).unwrap();
    std::fs::write(
        conf_dir.join("jobs/a.yml"),
        "scrape_configs:\n  - job_name: from-file\n    file_sd_configs:\n      - files: [t.json]\n",
    )
    .unwrap();
    std::fs::write(conf_dir.join("jobs/b.yml"), "scrape_configs:\n  - job_name: main\n").unwrap();
    std::fs::write(conf_dir.join("jobs/ignored.txt"), "not yaml: [").unwrap();
    let main = conf_dir.join("prometheus.yml");
    std::fs::write(
        &main,
        "global:\n  scrape_interval: 7s\nscrape_config_files: ['jobs/a.yml']\nscrape_configs:\n  - job_name: main\n",
    )
    .unwrap();
    let loaded = Config::load_file(&main).unwrap();
    let c = &loaded.config;
    assert_eq!(c.scrape_configs.len(), 2);
    let ff = c.scrape_config("from-file").unwrap();
    assert_eq!(ff.scrape_interval, Duration::from_secs(7));
    let want = conf_dir.join("jobs/t.json");
    assert_eq!(ff.file_sd_configs[0].files, vec![want.display().to_string()]);

    // a duplicate job across files names both files
    std::fs::write(&main, "scrape_config_files: ['jobs/*.yml']\nscrape_configs:\n  - job_name: main\n")
        .unwrap();
    let msg = Config::load_file(&main).unwrap_err().to_string();
    assert!(
        msg.contains("b.yml:2:") && msg.contains("found multiple scrape configs with job name \"main\""),
        "{msg}"
    );
    assert!(msg.contains("first found in") && msg.contains("prometheus.yml"), "{msg}");

    // errors inside an included file name that file
    std::fs::write(conf_dir.join("jobs/b.yml"), "scrape_configs:\n  - job_name: other\n    bogus: 1\n")
        .unwrap();
    let msg = Config::load_file(&main).unwrap_err().to_string();
    assert!(msg.contains("b.yml:3:") && msg.contains("unknown field \"bogus\""), "{msg}");

    // rule files: globs resolved against the config directory
    std::fs::create_dir_all(conf_dir.join("rules")).unwrap();
    for f in ["b.yml", "a.yml", "c.txt"] {
        std::fs::write(conf_dir.join("rules").join(f), "groups: []\n").unwrap();
    }
    std::fs::write(&main, "rule_files: ['rules/*.yml', 'rules/a.yml', 'missing.yml']\n").unwrap();
    let c = Config::load_file(&main).unwrap().config;
    let rules_dir = conf_dir.join("rules");
    assert_eq!(
        c.rule_file_paths().unwrap(),
        vec![rules_dir.join("a.yml").display().to_string(), rules_dir.join("b.yml").display().to_string()]
    );

    let missing = Config::load_file(&dir.path().join("nope.yml")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }));
}

#[test]
fn no_panics_on_garbage() {
    let inputs = [
        "\u{0}",
        "[",
        "{",
        "- - -",
        ":",
        "global: !!binary AAAA",
        "scrape_configs: [[[]]]",
        "scrape_configs:\n  - job_name: a\n    relabel_configs: [{regex: '\\\\'}]\n",
        "a: &x [*x]",
        "global: &g\n  scrape_interval: *g\n",
        "scrape_configs:\n  - job_name: a\n    scrape_interval: 99999999999999999999999y\n",
        "scrape_configs:\n  - job_name: a\n    body_size_limit: 9999999999999999EB\n",
        "global:\n  external_labels:\n    a: ${\n",
        "\t\tglobal:",
        "global:\n  scrape_interval: [1]\n",
        "scrape_configs:\n  - job_name: a\n    params: {x: 1}\n",
        "alerting: 5",
        "remote_write: {}",
    ];
    for text in inputs {
        let _ = parse(text);
    }
    // deep nesting inside an untyped section, and a long alias chain
    let deep = format!(
        "scrape_configs:\n  - job_name: a\n    ec2_sd_configs:\n      - x: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let _ = parse(&deep);
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    let _ = parse(&format!(
        "scrape_configs:\n  - job_name: a\n    ec2_sd_configs:\n      - {}",
        bomb.replace('\n', "\n        ")
    ));
}

#[test]
fn unhonoured_scrape_settings_warn_by_name() {
    // target_limit is honoured: no warning
    let text = "scrape_configs:\n  - job_name: a\n    target_limit: 5\n    proxy_url: http://127.0.0.1:3128\n    keep_dropped_targets: 3\n    static_configs: [{targets: ['h:1']}]\n";
    let loaded = Config::parse(text, "p.yml").unwrap();
    assert_eq!(
        loaded.warnings,
        vec![
            "scrape_configs[job=\"a\"].proxy_url: not implemented yet; ignored",
            "scrape_configs[job=\"a\"].keep_dropped_targets: not implemented yet; ignored",
        ]
    );
}
