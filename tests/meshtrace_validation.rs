//! MeshTrace validation as a case table: every case of Kuma v2.14.3's
//! `meshtrace/api/v1alpha1/validator_test.go` (valid and invalid), each run in Universal and in
//! Kubernetes form, then tracecar's own cases beyond Kuma. A failing case is reported by name.

use std::path::Path;

use tracecar::policy::load::parse_str;
use tracecar::policy::validate::{Violation, validate_resource};

struct Case {
    name: &'static str,
    spec: &'static str,
    /// `(path, message)` of every error, in Kuma's order.
    errors: &'static [(&'static str, &'static str)],
}

fn indent(spec: &str) -> String {
    spec.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect()
}

fn universal(spec: &str) -> String {
    format!(
        "type: MeshTrace\nname: mt\nmesh: default\nspec:\n{}",
        indent(spec)
    )
}

fn kubernetes(spec: &str) -> String {
    format!(
        "apiVersion: kuma.io/v1alpha1\nkind: MeshTrace\nmetadata:\n  name: mt\n  namespace: kuma-system\n  labels:\n    kuma.io/mesh: default\nspec:\n{}",
        indent(spec)
    )
}

/// Errors and warnings of the one MeshTrace in `text`; a parse problem is an error at `""`.
/// `(path, message)` pairs.
type Found = Vec<(String, String)>;

fn check(text: &str) -> (Found, Found) {
    let (resources, diagnostics) = parse_str(Path::new("mt.yaml"), text);
    let mut errors: Vec<(String, String)> = diagnostics
        .iter()
        .map(|d| (d.path.clone().unwrap_or_default(), d.message.clone()))
        .collect();
    let mut warnings = Vec::new();
    for r in &resources {
        for Violation {
            path,
            message,
            warning,
        } in validate_resource(r)
        {
            if warning {
                warnings.push((path, message));
            } else {
                errors.push((path, message));
            }
        }
    }
    (errors, warnings)
}

fn run(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        for (form, text) in [
            ("universal", universal(case.spec)),
            ("kubernetes", kubernetes(case.spec)),
        ] {
            let (errors, _) = check(&text);
            let want: Vec<(String, String)> = case
                .errors
                .iter()
                .map(|(p, m)| (p.to_string(), m.to_string()))
                .collect();
            if errors != want {
                failures.push(format!(
                    "{} ({form}):\n  want {want:?}\n  got  {errors:?}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const KUMA_VALID: &[Case] = &[
    Case {
        name: "full zipkin example",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Zipkin
      zipkin:
        url: http://jaeger-collector.mesh-observability:9411/api/v2/spans
        apiVersion: httpJson
  tags:
    - name: team
      literal: core
    - name: env
      header:
        name: x-env
        default: prod
    - name: version
      header:
        name: x-version
  sampling:
    overall: 80
    random: "60.1"
    client: 40
"#,
        errors: &[],
    },
    Case {
        name: "with opentelemetry backend gRPC",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        endpoint: otel-collector:4317
"#,
        errors: &[],
    },
    Case {
        name: "with empty backends",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends: []
  tags:
    - name: team
      literal: core
    - name: env
      header:
        name: x-env
        default: prod
    - name: version
      header:
        name: x-version
  sampling:
    overall: 80
    random: 60
    client: 40
"#,
        errors: &[],
    },
    Case {
        name: "with datadog backend",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:8126
        splitService: true
"#,
        errors: &[],
    },
    Case {
        name: "top level MeshGateway",
        spec: r#"
targetRef:
  kind: MeshGateway
  name: edge
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:8126
        splitService: true
"#,
        errors: &[],
    },
    Case {
        name: "with opentelemetry backendRef",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        backendRef:
          kind: MeshOpenTelemetryBackend
          labels:
            kuma.io/display-name: my-otel
"#,
        errors: &[],
    },
];

const KUMA_INVALID: &[Case] = &[
    Case {
        name: "no default",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
"#,
        errors: &[("spec.default.backends", "must be defined")],
    },
    Case {
        name: "multiple backends",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - zipkin:
        url: http://jaeger-collector1.mesh-observability:9411/api/v2/spans
    - zipkin:
        url: http://jaeger-collector2.mesh-observability:9411/api/v2/spans
"#,
        errors: &[(
            "spec.default.backends",
            "must have zero or one backend defined",
        )],
    },
    Case {
        name: "no url for zipkin backend",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Zipkin
      zipkin: {}
"#,
        errors: &[("spec.default.backends[0].zipkin.url", "must not be empty")],
    },
    Case {
        name: "invalid url for zipkin backend",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Zipkin
      zipkin:
        url: not_valid_url
"#,
        errors: &[("spec.default.backends[0].zipkin.url", "must be a valid url")],
    },
    Case {
        name: "invalid url for datadog backend",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: not_valid_url
"#,
        errors: &[(
            "spec.default.backends[0].datadog.url",
            "must be a valid url",
        )],
    },
    Case {
        name: "no port for datadog backend url",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu
"#,
        errors: &[(
            "spec.default.backends[0].datadog.url",
            "port must be defined",
        )],
    },
    Case {
        name: "invalid port for datadog backend",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:999999
"#,
        errors: &[(
            "spec.default.backends[0].datadog.url",
            "port must be a valid (1-65535)",
        )],
    },
    Case {
        name: "invalid scheme for datadog backend",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: sql://intake.datadoghq.eu:8126
"#,
        errors: &[(
            "spec.default.backends[0].datadog.url",
            "scheme must be http",
        )],
    },
    Case {
        name: "path provided for datadog backend",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:8126/some/path
"#,
        errors: &[(
            "spec.default.backends[0].datadog.url",
            "path must not be defined",
        )],
    },
    Case {
        name: "tag missing name",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:443
  tags:
    - literal: example
    - header:
        default: example
"#,
        errors: &[
            ("spec.default.tags[0].name", "must not be empty"),
            ("spec.default.tags[1].name", "must not be empty"),
        ],
    },
    Case {
        name: "tag missing type",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:443
  tags:
    - name: example
"#,
        errors: &[(
            "spec.default.tags[0]",
            "tag must have only one type defined: header, literal",
        )],
    },
    Case {
        name: "sampling out of range",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:443
  sampling:
    overall: 101
"#,
        errors: &[("spec.default.sampling.overall", "must be between 0 and 100")],
    },
    Case {
        name: "sampling invalid string",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:443
  sampling:
    overall: xyz
    client: xyz
    random: xyz
"#,
        errors: &[
            ("spec.default.sampling.client", "string is not a number"),
            ("spec.default.sampling.random", "string is not a number"),
            ("spec.default.sampling.overall", "string is not a number"),
        ],
    },
    Case {
        name: "datadog backend must be defined",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Datadog
"#,
        errors: &[("spec.default.backends[0].datadog", "must be defined")],
    },
    Case {
        name: "zipkin backend must be defined",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: Zipkin
"#,
        errors: &[("spec.default.backends[0].zipkin", "must be defined")],
    },
    Case {
        name: "openTelemetry backend must be defined",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
"#,
        errors: &[("spec.default.backends[0].openTelemetry", "must be defined")],
    },
    Case {
        name: "openTelemetry neither endpoint nor backendRef",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        endpoint: ""
"#,
        errors: &[(
            "spec.default.backends[0].openTelemetry",
            "openTelemetry must have exactly one defined: endpoint, backendRef",
        )],
    },
    Case {
        name: "openTelemetry endpoint must not be a URL",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        endpoint: "http://otel-collector:4318/v1/traces"
"#,
        errors: &[(
            "spec.default.backends[0].openTelemetry.endpoint",
            "must be in host:port format, not a URL",
        )],
    },
    Case {
        name: "openTelemetry endpoint must not contain a path",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        endpoint: "otel-collector:4318/v1/traces"
"#,
        errors: &[(
            "spec.default.backends[0].openTelemetry.endpoint",
            "must be in host:port format, not a URL",
        )],
    },
    Case {
        name: "openTelemetry both endpoint and backendRef",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        endpoint: otel-collector:4317
        backendRef:
          kind: MeshOpenTelemetryBackend
          labels:
            kuma.io/display-name: my-otel
"#,
        errors: &[(
            "spec.default.backends[0].openTelemetry",
            "openTelemetry must have only one type defined: endpoint, backendRef",
        )],
    },
    Case {
        name: "openTelemetry backendRef no labels",
        spec: r#"
targetRef:
  kind: MeshService
  name: backend
default:
  backends:
    - type: OpenTelemetry
      openTelemetry:
        backendRef:
          kind: MeshOpenTelemetryBackend
"#,
        errors: &[(
            "spec.default.backends[0].openTelemetry.backendRef",
            "backendRef must have exactly one defined: labels",
        )],
    },
    Case {
        name: "gateway listener tags not allowed",
        spec: r#"
targetRef:
  kind: MeshGateway
  name: edge
  tags:
    name: listener-1
default:
  backends:
    - type: Datadog
      datadog:
        url: http://intake.datadoghq.eu:8126
        splitService: true
"#,
        errors: &[(
            "spec.targetRef.tags",
            "must not be set with kind MeshGateway",
        )],
    },
];

/// Checks Kuma's CRD schema makes, and tracecar's beyond Kuma.
const BEYOND_KUMA: &[Case] = &[
    Case {
        name: "unknown backend type",
        spec: r#"
default:
  backends:
    - type: Jaeger
      zipkin:
        url: http://jaeger:9411/api/v2/spans
"#,
        errors: &[(
            "spec.default.backends[0].type",
            "value 'Jaeger' is not supported; use one of Zipkin, Datadog, OpenTelemetry",
        )],
    },
    Case {
        name: "missing backend type",
        spec: r#"
default:
  backends:
    - zipkin:
        url: http://jaeger:9411/api/v2/spans
"#,
        errors: &[("spec.default.backends[0].type", "must be defined")],
    },
    Case {
        name: "missing datadog url",
        spec: r#"
default:
  backends:
    - type: Datadog
      datadog:
        splitService: true
"#,
        errors: &[("spec.default.backends[0].datadog.url", "must be defined")],
    },
    Case {
        name: "zipkin url without a port",
        spec: r#"
default:
  backends:
    - type: Zipkin
      zipkin:
        url: http://jaeger-collector/api/v2/spans
"#,
        errors: &[(
            "spec.default.backends[0].zipkin.url",
            "port must be defined",
        )],
    },
    Case {
        name: "zipkin url of another scheme",
        spec: r#"
default:
  backends:
    - type: Zipkin
      zipkin:
        url: ftp://jaeger-collector:9411/api/v2/spans
"#,
        errors: &[(
            "spec.default.backends[0].zipkin.url",
            "scheme must be http or https",
        )],
    },
    Case {
        name: "zipkin apiVersion outside the enum",
        spec: r#"
default:
  backends:
    - type: Zipkin
      zipkin:
        url: http://jaeger:9411/api/v2/spans
        apiVersion: httpThrift
"#,
        errors: &[(
            "spec.default.backends[0].zipkin.apiVersion",
            "must be one of: httpJson, httpProto",
        )],
    },
    Case {
        name: "absent targetRef is the whole mesh",
        spec: r#"
default:
  backends: []
"#,
        errors: &[],
    },
    Case {
        name: "unsupported targetRef kind",
        spec: r#"
targetRef:
  kind: MeshHTTPRoute
  name: route
default:
  backends: []
"#,
        errors: &[(
            "spec.targetRef.kind",
            "value 'MeshHTTPRoute' is not supported",
        )],
    },
    Case {
        name: "decimal sampling as a string",
        spec: r#"
default:
  backends: []
  sampling:
    overall: "60.1"
    client: "100"
    random: "0.01"
"#,
        errors: &[],
    },
    Case {
        name: "negative sampling",
        spec: r#"
default:
  backends: []
  sampling:
    random: -1
"#,
        errors: &[("spec.default.sampling.random", "must be between 0 and 100")],
    },
    Case {
        name: "a sampling of the wrong type is a type error at its path",
        spec: r#"
default:
  backends: []
  sampling:
    overall: [1]
"#,
        errors: &[(
            "spec.default.sampling.overall",
            "data did not match any variant of untagged enum Percent",
        )],
    },
];

/// A YAML null reads as the field's empty value, as for every kind (`policy::null_as_empty`):
/// an unset field, an empty string, a default list item.
const NULLS: &[Case] = &[
    Case {
        name: "null default is no default",
        spec: "default: ~\n",
        errors: &[("spec.default.backends", "must be defined")],
    },
    Case {
        name: "null backends is unset backends",
        spec: "default:\n  backends:\n",
        errors: &[("spec.default.backends", "must be defined")],
    },
    Case {
        name: "null zipkin url is empty",
        spec: "default:\n  backends: [{type: Zipkin, zipkin: {url: ~}}]\n",
        errors: &[("spec.default.backends[0].zipkin.url", "must not be empty")],
    },
    Case {
        name: "null backend item is an empty backend",
        spec: "default:\n  backends: [~]\n",
        errors: &[("spec.default.backends[0].type", "must be defined")],
    },
    Case {
        name: "null tag name and literal",
        spec: "default:\n  backends: []\n  tags: [{name: ~, literal: ~}]\n",
        errors: &[
            ("spec.default.tags[0].name", "must not be empty"),
            (
                "spec.default.tags[0]",
                "tag must have only one type defined: header, literal",
            ),
        ],
    },
    Case {
        name: "null sampling knobs are unset",
        spec: "default:\n  backends: []\n  sampling: {overall: ~, client: ~, random: ~}\n",
        errors: &[],
    },
    Case {
        name: "null targetRef is the whole mesh",
        spec: "targetRef: ~\ndefault:\n  backends: []\n",
        errors: &[],
    },
];

#[test]
fn yaml_nulls_read_as_empty_values_in_both_forms() {
    run(NULLS);
}

#[test]
fn every_valid_case_of_kumas_validator_test_passes_in_both_forms() {
    run(KUMA_VALID);
}

#[test]
fn every_invalid_case_of_kumas_validator_test_gives_kumas_violations_in_both_forms() {
    run(KUMA_INVALID);
}

#[test]
fn schema_level_and_beyond_kuma_checks_give_one_clear_violation_each() {
    run(BEYOND_KUMA);
}

#[test]
fn an_opentelemetry_endpoint_is_deprecated_with_kumas_text_as_a_warning() {
    let (errors, warnings) = check(&universal(
        "default:\n  backends:\n    - type: OpenTelemetry\n      openTelemetry:\n        endpoint: otel:4317\n",
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        warnings,
        vec![(
            "spec.default.backends[0].openTelemetry.endpoint".to_string(),
            "openTelemetry.endpoint is deprecated, use openTelemetry.backendRef with a MeshOpenTelemetryBackend resource instead".to_string()
        )]
    );
}

#[test]
fn a_mesh_service_target_ref_is_deprecated_with_kumas_text_as_a_warning() {
    let (errors, warnings) = check(&kubernetes(
        "targetRef:\n  kind: MeshService\n  name: backend\ndefault:\n  backends: []\n",
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        warnings,
        vec![(
            "spec.targetRef.kind".to_string(),
            "MeshService value for 'targetRef.kind' is deprecated, use Dataplane with labels instead".to_string()
        )]
    );
}

#[test]
fn a_non_system_policy_role_may_not_target_a_mesh_gateway() {
    let text = "type: MeshTrace\nname: mt\nmesh: default\nlabels:\n  kuma.io/policy-role: workload-owner\nspec:\n  targetRef:\n    kind: MeshGateway\n    name: edge\n  default:\n    backends: []\n";
    let (errors, _) = check(text);
    assert_eq!(
        errors,
        vec![(
            "spec.targetRef.kind".to_string(),
            "value 'MeshGateway' is not supported".to_string()
        )]
    );
}

#[test]
fn a_kubernetes_meshtrace_takes_its_mesh_from_the_kuma_mesh_label() {
    let text = "apiVersion: kuma.io/v1alpha1\nkind: MeshTrace\nmetadata:\n  name: mt\n  namespace: kuma-system\n  labels:\n    kuma.io/mesh: payments\nspec:\n  default:\n    backends: []\n";
    let (resources, diagnostics) = parse_str(Path::new("mt.yaml"), text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(resources[0].meta().mesh, "payments");
}

#[test]
fn mesh_open_telemetry_backend_checks_its_endpoint() {
    let text = "type: MeshOpenTelemetryBackend\nname: otel\nmesh: default\nspec:\n  endpoint:\n    address: \"\"\n    port: 70000\n    path: /otlp\n  protocol: grpc\n";
    let (errors, _) = check(text);
    assert_eq!(
        errors,
        vec![
            (
                "spec.endpoint.address".to_string(),
                "must not be empty".to_string()
            ),
            (
                "spec.endpoint.port".to_string(),
                "port must be in the range [1, 65535]".to_string()
            ),
            (
                "spec.endpoint.path".to_string(),
                "must not be set when protocol is grpc".to_string()
            ),
        ]
    );
}

const UNKNOWN: &str = "unknown field, ignored";

/// Warnings about unknown fields among `warnings`.
fn unknown(warnings: &Found) -> Found {
    warnings
        .iter()
        .filter(|(_, m)| m == UNKNOWN)
        .cloned()
        .collect()
}

#[test]
fn an_unknown_meshtrace_field_is_ignored_with_a_warning_at_its_path() {
    // The typed model has no place for it and drops it: a misspelt field would otherwise fall
    // back to its default unnoticed (as the legacy backends' `conf` keys are warned about).
    let (errors, warnings) = check(&universal(
        "default:
  sampling:
    overal: 5
  backends:
    - type: Zipkin
      zipkin:
        url: http://zipkin:9411/api/v2/spans
        sharedSpanContex: true
",
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        warnings,
        vec![
            (
                "spec.default.backends[0].zipkin.sharedSpanContex".to_string(),
                UNKNOWN.to_string()
            ),
            (
                "spec.default.sampling.overal".to_string(),
                UNKNOWN.to_string()
            ),
        ]
    );
}

#[test]
fn an_unknown_mesh_open_telemetry_backend_field_is_ignored_with_a_warning() {
    let text = "type: MeshOpenTelemetryBackend\nname: otel\nmesh: default\nspec:\n  endpoint:\n    address: otel\n    port: 4317\n  protcol: http\n";
    let (errors, warnings) = check(text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        warnings,
        vec![("spec.protcol".to_string(), UNKNOWN.to_string())]
    );
}

#[test]
fn no_field_of_kumas_own_cases_is_unknown() {
    for case in KUMA_VALID.iter().chain(KUMA_INVALID).chain(NULLS) {
        for text in [universal(case.spec), kubernetes(case.spec)] {
            let (_, warnings) = check(&text);
            assert_eq!(unknown(&warnings), vec![], "{}", case.name);
        }
    }
}

fn tracecar(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tracecar"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("tracecar runs")
}

#[test]
fn validate_warns_when_one_mesh_holds_both_traffic_trace_and_meshtrace() {
    let out = tracecar(&[
        "validate",
        "config/mesh.yaml",
        "config/trace-all-traffic.yaml",
        "config/meshtrace/meshtrace.yaml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: config/meshtrace/meshtrace.yaml: MeshTrace/trace-all-traffic: mesh \"default\" holds both MeshTrace and TrafficTrace"),
        "{stderr}"
    );
}

#[test]
fn the_meshtrace_example_validates_without_problems() {
    let out = tracecar(&["validate", "--strict", "config/meshtrace/meshtrace.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_demo_runs_on_the_meshtrace_example() {
    let out = tracecar(&["demo", "--policy", "meshtrace"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("24 traces (24 complete)"), "{stdout}");
}
