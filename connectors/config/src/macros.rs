//! `config_struct!`: declares a configuration section once, with each field's default next to
//! it, and derives `Deserialize` (unknown fields rejected, missing fields defaulted),
//! `Serialize` and a `Default` that matches the YAML defaults.
//!
//! `@http <enable_http2 default>;` appends Prometheus's inline HTTP client settings
//! (`basic_auth`, `authorization`, `tls_config`, …); `@sd <enable_http2 default>;` appends the
//! service discovery lists and then the HTTP client settings.

macro_rules! config_struct {
    (@sd $h2:expr; $(#[$m:meta])* pub struct $name:ident { $($body:tt)* }) => {
        config_struct!(@http $h2; $(#[$m])* pub struct $name { $($body)*
            /// `static_configs`: fixed target lists.
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub static_configs: Vec<crate::sd::StaticConfig> = Vec::new(),
            /// `file_sd_configs`: targets read from JSON or YAML files.
            #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
            pub file_sd_configs: Vec<crate::sd::FileSdConfig> = Vec::new(),
            /// `http_sd_configs`: targets fetched from an HTTP endpoint.
            #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
            pub http_sd_configs: Vec<crate::sd::HttpSdConfig> = Vec::new(),
            /// `dns_sd_configs`: targets from DNS SRV/A/AAAA/MX/NS records.
            #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
            pub dns_sd_configs: Vec<crate::sd::DnsSdConfig> = Vec::new(),
            /// `consul_sd_configs`: targets from Consul's catalog.
            #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
            pub consul_sd_configs: Vec<crate::sd::ConsulSdConfig> = Vec::new(),
            /// `kubernetes_sd_configs`: targets from the Kubernetes API.
            #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
            pub kubernetes_sd_configs: Vec<crate::sd::KubernetesSdConfig> = Vec::new(),
            /// `aws_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub aws_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `azure_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub azure_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `digitalocean_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub digitalocean_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `docker_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub docker_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `dockerswarm_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub dockerswarm_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `ec2_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub ec2_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `ecs_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub ecs_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `elasticache_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub elasticache_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `eureka_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub eureka_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `gce_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub gce_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `hetzner_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub hetzner_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `ionos_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub ionos_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `kuma_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub kuma_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `lightsail_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub lightsail_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `linode_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub linode_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `marathon_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub marathon_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `msk_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub msk_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `nerve_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub nerve_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `nomad_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub nomad_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `oci_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub oci_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `openstack_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub openstack_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `outscale_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub outscale_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `ovhcloud_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub ovhcloud_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `puppetdb_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub puppetdb_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `rds_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub rds_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `scaleway_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub scaleway_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `serverset_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub serverset_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `stackit_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub stackit_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `triton_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub triton_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `uyuni_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub uyuni_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
            /// `vultr_sd_configs` (accepted, not interpreted).
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
            pub vultr_sd_configs: Vec<crate::UntypedConfig> = Vec::new(),
        });

        impl $name {
            /// The service discovery lists that are present, by YAML key, with how many entries
            /// each has (`[("static_configs", 1), ("ec2_sd_configs", 2)]`).
            pub fn service_discoveries(&self) -> Vec<(&'static str, usize)> {
                let all: [(&'static str, usize); 37] = [
                    ("static_configs", self.static_configs.len()),
                    ("file_sd_configs", self.file_sd_configs.len()),
                    ("http_sd_configs", self.http_sd_configs.len()),
                    ("dns_sd_configs", self.dns_sd_configs.len()),
                    ("consul_sd_configs", self.consul_sd_configs.len()),
                    ("kubernetes_sd_configs", self.kubernetes_sd_configs.len()),
                    ("aws_sd_configs", self.aws_sd_configs.len()),
                    ("azure_sd_configs", self.azure_sd_configs.len()),
                    ("digitalocean_sd_configs", self.digitalocean_sd_configs.len()),
                    ("docker_sd_configs", self.docker_sd_configs.len()),
                    ("dockerswarm_sd_configs", self.dockerswarm_sd_configs.len()),
                    ("ec2_sd_configs", self.ec2_sd_configs.len()),
                    ("ecs_sd_configs", self.ecs_sd_configs.len()),
                    ("elasticache_sd_configs", self.elasticache_sd_configs.len()),
                    ("eureka_sd_configs", self.eureka_sd_configs.len()),
                    ("gce_sd_configs", self.gce_sd_configs.len()),
                    ("hetzner_sd_configs", self.hetzner_sd_configs.len()),
                    ("ionos_sd_configs", self.ionos_sd_configs.len()),
                    ("kuma_sd_configs", self.kuma_sd_configs.len()),
                    ("lightsail_sd_configs", self.lightsail_sd_configs.len()),
                    ("linode_sd_configs", self.linode_sd_configs.len()),
                    ("marathon_sd_configs", self.marathon_sd_configs.len()),
                    ("msk_sd_configs", self.msk_sd_configs.len()),
                    ("nerve_sd_configs", self.nerve_sd_configs.len()),
                    ("nomad_sd_configs", self.nomad_sd_configs.len()),
                    ("oci_sd_configs", self.oci_sd_configs.len()),
                    ("openstack_sd_configs", self.openstack_sd_configs.len()),
                    ("outscale_sd_configs", self.outscale_sd_configs.len()),
                    ("ovhcloud_sd_configs", self.ovhcloud_sd_configs.len()),
                    ("puppetdb_sd_configs", self.puppetdb_sd_configs.len()),
                    ("rds_sd_configs", self.rds_sd_configs.len()),
                    ("scaleway_sd_configs", self.scaleway_sd_configs.len()),
                    ("serverset_sd_configs", self.serverset_sd_configs.len()),
                    ("stackit_sd_configs", self.stackit_sd_configs.len()),
                    ("triton_sd_configs", self.triton_sd_configs.len()),
                    ("uyuni_sd_configs", self.uyuni_sd_configs.len()),
                    ("vultr_sd_configs", self.vultr_sd_configs.len()),
                ];
                all.into_iter().filter(|(_, n)| *n > 0).collect()
            }

            /// Joins the relative file paths of the service discoveries with `dir`.
            pub(crate) fn resolve_sd_paths(&mut self, dir: &std::path::Path) {
                for f in &mut self.file_sd_configs {
                    for file in &mut f.files {
                        *file = crate::config::join_dir(dir, file);
                    }
                }
                for h in &mut self.http_sd_configs {
                    h.resolve_http_paths(dir);
                }
                for c in &mut self.consul_sd_configs {
                    c.resolve_http_paths(dir);
                }
                for k in &mut self.kubernetes_sd_configs {
                    k.resolve_http_paths(dir);
                    if let Some(f) = &mut k.kubeconfig_file {
                        *f = crate::config::join_dir(dir, f);
                    }
                }
            }
        }
    };

    (@http $h2:expr; $(#[$m:meta])* pub struct $name:ident { $($body:tt)* }) => {
        config_struct!($(#[$m])* pub struct $name { $($body)*
            /// HTTP basic authentication.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub basic_auth: Option<crate::http::BasicAuth> = None,
            /// The `Authorization` header (`type` defaults to `Bearer`). A legacy
            /// `bearer_token`/`bearer_token_file` ends up here after loading, as in Prometheus.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub authorization: Option<crate::http::Authorization> = None,
            /// OAuth 2.0 client credentials.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub oauth2: Option<crate::http::OAuth2> = None,
            /// Legacy bearer token. Always `None` after loading: folded into `authorization`.
            #[serde(serialize_with = "crate::yaml::ser_secret", skip_serializing_if = "Option::is_none")]
            pub bearer_token: Option<String> = None,
            /// Legacy bearer token file. Always `None` after loading: folded into
            /// `authorization`.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub bearer_token_file: Option<String> = None,
            /// TLS settings.
            #[serde(deserialize_with = "crate::yaml::nullable")]
            pub tls_config: crate::http::TlsConfig = Default::default(),
            /// Whether to follow HTTP 3xx redirects (default true).
            pub follow_redirects: bool = true,
            /// Whether HTTP/2 may be used.
            pub enable_http2: bool = $h2,
            /// Proxy URL (its password is redacted when rendered).
            #[serde(serialize_with = "crate::yaml::ser_opt_url", skip_serializing_if = "Option::is_none")]
            pub proxy_url: Option<String> = None,
            /// Comma-separated hosts that bypass the proxy.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub no_proxy: Option<String> = None,
            /// Use the proxy from the `HTTP(S)_PROXY`/`NO_PROXY` environment.
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            pub proxy_from_environment: bool = false,
            /// Headers sent to the proxy on CONNECT (values are secrets).
            #[serde(
                deserialize_with = "crate::yaml::nullable",
                serialize_with = "crate::http::ser_secret_header_map",
                skip_serializing_if = "std::collections::BTreeMap::is_empty"
            )]
            pub proxy_connect_header: std::collections::BTreeMap<String, Vec<String>> = Default::default(),
            /// Extra request headers.
            #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            pub http_headers: std::collections::BTreeMap<String, crate::http::HttpHeader> = Default::default(),
        });

        impl $name {
            /// This section's HTTP client settings as one value.
            pub fn http_client(&self) -> crate::http::HttpClientConfig {
                crate::http::HttpClientConfig {
                    basic_auth: self.basic_auth.clone(),
                    authorization: self.authorization.clone(),
                    oauth2: self.oauth2.clone(),
                    bearer_token: self.bearer_token.clone(),
                    bearer_token_file: self.bearer_token_file.clone(),
                    tls_config: self.tls_config.clone(),
                    follow_redirects: self.follow_redirects,
                    enable_http2: self.enable_http2,
                    proxy_url: self.proxy_url.clone(),
                    no_proxy: self.no_proxy.clone(),
                    proxy_from_environment: self.proxy_from_environment,
                    proxy_connect_header: self.proxy_connect_header.clone(),
                    http_headers: self.http_headers.clone(),
                }
            }

            #[allow(dead_code)]
            pub(crate) fn set_http_client(&mut self, h: crate::http::HttpClientConfig) {
                self.basic_auth = h.basic_auth;
                self.authorization = h.authorization;
                self.oauth2 = h.oauth2;
                self.bearer_token = h.bearer_token;
                self.bearer_token_file = h.bearer_token_file;
                self.tls_config = h.tls_config;
                self.follow_redirects = h.follow_redirects;
                self.enable_http2 = h.enable_http2;
                self.proxy_url = h.proxy_url;
                self.no_proxy = h.no_proxy;
                self.proxy_from_environment = h.proxy_from_environment;
                self.proxy_connect_header = h.proxy_connect_header;
                self.http_headers = h.http_headers;
            }

            /// Validates the HTTP client settings as Prometheus does and folds the legacy
            /// bearer token into `authorization`.
            #[allow(dead_code)]
            pub(crate) fn check_http_client(&mut self) -> Result<(), String> {
                let mut h = self.http_client();
                h.normalize()?;
                self.set_http_client(h);
                Ok(())
            }

            /// Joins the relative file paths of the HTTP client settings with `dir`.
            #[allow(dead_code)]
            pub(crate) fn resolve_http_paths(&mut self, dir: &std::path::Path) {
                let mut h = self.http_client();
                h.resolve_paths(dir);
                self.set_http_client(h);
            }
        }
    };

    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty = $d:expr, )* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fm])* pub $f: $t, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $f: $d, )* }
            }
        }
    };
}
