//! Validation, as users see it: every problem is one line `FILE: Kind/name: field.path: message`
//! with Kuma's field paths and messages (README, Validation).
//!
//! Most tests are cases of one table (`cases!`): inline YAML → the exact lines `validate` prints,
//! parsed with `parse_str` and run through the same steps as `policy::check`; each case is a test
//! of its own name. The ones of another shape are plain tests beside them: those about files
//! (size, bytes, folders, `--strict`) go through `check` on temp files.

use std::path::{Path, PathBuf};

use tracecar::policy::load::{load_dataplane, parse_str};
use tracecar::policy::validate::{diagnostics_for, validate_resource, validate_set};
use tracecar::policy::{Diagnostic, check};

/// Strips the indentation common to all lines, so YAML can be written indented in the test.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Every diagnostic for `yaml` read as file `file`, in the order `check` reports them.
fn diagnostics(file: &str, yaml: &str) -> Vec<Diagnostic> {
    let (resources, mut found) = parse_str(Path::new(file), &dedent(yaml));
    for r in &resources {
        found.extend(diagnostics_for(r.kind(), r.meta(), validate_resource(r)));
    }
    found.extend(validate_set(&resources));
    found
}

/// Every rendered line, warnings included.
fn lines(file: &str, yaml: &str) -> Vec<String> {
    diagnostics(file, yaml)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The case table: each case `name: "file", yaml => [lines…];` becomes a `#[test]` of its own
/// name, asserting that `yaml` read as `file` gives exactly those lines (`lines`), so a failing
/// case is reported by name and the others still run. `yaml` is a `&str` or a `String`.
macro_rules! cases {
    ($($name:ident: $file:literal, $yaml:expr => [$($line:expr),* $(,)?];)*) => {
        $(
            #[test]
            fn $name() {
                let yaml = $yaml;
                let expected: Vec<&str> = vec![$($line),*];
                assert_eq!(lines($file, AsRef::<str>::as_ref(&yaml)), expected);
            }
        )*
    };
}

/// A Universal Mesh named `default` with the given `tracing.backends` entries (YAML list items,
/// written at column 0).
fn mesh_with_backends(backends: &str) -> String {
    let items: String = dedent(backends)
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!("type: Mesh\nname: default\ntracing:\n  backends:\n{items}")
}

/// A valid dataplane with one inbound whose fields are replaced by `inbound` (YAML mapping
/// lines at column 0).
fn dataplane_with_inbound(inbound: &str) -> String {
    let fields: String = dedent(inbound)
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    -\n{fields}"
    )
}

/// A valid dataplane (one http inbound) with one outbound made of `outbound` lines.
fn dataplane_with_outbound(outbound: &str) -> String {
    let fields: String = dedent(outbound)
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 15000\n      tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n  outbound:\n    -\n{fields}"
    )
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

// =============================================================================================
// Mesh tracing: backends

cases! {
    a_valid_zipkin_mesh_has_no_diagnostics: "mesh.yaml", mesh_with_backends(
        "
        - name: zipkin
          type: zipkin
          sampling: 50.5
          conf: {url: 'http://zipkin:9411/api/v2/spans', apiVersion: httpProto, traceId128bit: true, sharedSpanContext: false}
        ",
    ) => [];

    backend_name_cannot_be_empty: "mesh.yaml", mesh_with_backends(
        "
        - name: ''
          type: zipkin
          conf: {url: 'http://zipkin:9411/api/v2/spans'}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].name: cannot be empty"];

    backend_name_is_empty_when_absent: "mesh.yaml", mesh_with_backends(
        "
        - type: zipkin
          conf: {url: 'http://zipkin:9411/api/v2/spans'}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].name: cannot be empty"];

    duplicate_backend_name_is_reported_on_the_second_backend: "mesh.yaml", mesh_with_backends(
        "
        - name: x
          type: zipkin
          conf: {url: 'http://a:9411/api/v2/spans'}
        - name: x
          type: zipkin
          conf: {url: 'http://b:9411/api/v2/spans'}
        ",
    ) => [
        r#"mesh.yaml: Mesh/default: tracing.backends[1].name: "x" name is already used for another backend"#
    ];

    // Kuma's duplicate check also applies to empty names.
    two_empty_backend_names_give_the_second_both_messages: "mesh.yaml", mesh_with_backends(
        "
        - name: ''
          type: zipkin
          conf: {url: 'http://a:9411/api/v2/spans'}
        - name: ''
          type: zipkin
          conf: {url: 'http://b:9411/api/v2/spans'}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].name: cannot be empty",
        "mesh.yaml: Mesh/default: tracing.backends[1].name: cannot be empty",
        r#"mesh.yaml: Mesh/default: tracing.backends[1].name: "" name is already used for another backend"#,
    ];

    sampling_above_100_is_out_of_range: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          sampling: 100.1
          conf: {url: 'http://a:9411/api/v2/spans'}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].sampling: has to be in [0.0 - 100.0] range"];

    negative_sampling_is_out_of_range: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          sampling: -1
          conf: {url: 'http://a:9411/api/v2/spans'}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].sampling: has to be in [0.0 - 100.0] range"];

    sampling_bounds_0_and_100_are_valid: "mesh.yaml", mesh_with_backends(
        "
        - name: none
          type: zipkin
          sampling: 0
          conf: {url: 'http://a:9411/api/v2/spans'}
        - name: all
          type: zipkin
          sampling: 100
          conf: {url: 'http://a:9411/api/v2/spans'}
        ",
    ) => [];

    unknown_backend_type_lists_the_available_ones: "mesh.yaml", mesh_with_backends(
        "
        - name: j
          type: jaeger
          conf: {url: 'not checked: the type is unknown'}
        ",
    ) => [
        r#"mesh.yaml: Mesh/default: tracing.backends[0].type: unknown backend type. Available backends: "zipkin", "datadog""#
    ];

    missing_backend_type_is_unknown: "mesh.yaml", mesh_with_backends("- name: j") => [
        r#"mesh.yaml: Mesh/default: tracing.backends[0].type: unknown backend type. Available backends: "zipkin", "datadog""#
    ];

    backend_type_is_case_sensitive: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: Zipkin
          conf: {url: 'http://a:9411/api/v2/spans'}
        ",
    ) => [
        r#"mesh.yaml: Mesh/default: tracing.backends[0].type: unknown backend type. Available backends: "zipkin", "datadog""#
    ];

    default_backend_must_name_a_backend_of_the_mesh: "mesh.yaml", dedent(
        "
        type: Mesh
        name: default
        tracing:
          defaultBackend: missing
          backends:
            - name: z
              type: zipkin
              conf: {url: 'http://a:9411/api/v2/spans'}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.defaultBackend: has to be set to one of the tracing backend in mesh"
    ];

    empty_default_backend_is_valid: "mesh.yaml", dedent(
        "
        type: Mesh
        name: default
        tracing:
          defaultBackend: ''
          backends: []
        ",
    ) => [];

    mesh_without_tracing_is_valid: "mesh.yaml", "type: Mesh\nname: default\n" => [];

    // mtls, logging, metrics, … are accepted and ignored.
    mesh_with_other_sections_is_valid: "mesh.yaml", dedent(
        "
        type: Mesh
        name: default
        mtls:
          enabledBackend: ca-1
          backends: [{name: ca-1, type: builtin}]
        logging:
          backends: [{name: file, type: file, conf: {path: /tmp/log}}]
        metrics:
          enabledBackend: prom
          backends: [{name: prom, type: prometheus}]
        constraints: {}
        ",
    ) => [];
}

// ---------------------------------------------------------------------------------------------
// Mesh tracing: zipkin conf

cases! {
    zipkin_url_cannot_be_empty: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: ''}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].config.url: cannot be empty"];

    // A missing conf is an empty config in Kuma, not a parse error.
    zipkin_without_conf_reports_the_empty_url: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].config.url: cannot be empty"];

    zipkin_url_that_does_not_parse_is_invalid: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: invalid-url}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].config.url: invalid URL"];

    zipkin_url_with_non_numeric_port_is_invalid: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'http://h:abc/'}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].config.url: invalid URL"];

    zipkin_url_without_port_needs_one: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'http://zipkin-us.local/v2/spans'}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.url: port has to be explicitly specified"
    ];

    // Go's Port() is empty for `h:`.
    zipkin_url_with_empty_port_needs_one: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'http://h:/x'}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.url: port has to be explicitly specified"
    ];

    // Go's ParseRequestURI accepts an absolute path; it has no port.
    zipkin_url_that_is_an_absolute_path_needs_a_port: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: /api/v2/spans}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.url: port has to be explicitly specified"
    ];

    // Go's ParseRequestURI reads `localhost:9411` as scheme `localhost` with opaque `9411`
    // (an absolute URI, notes §1), whose Port() is empty: Kuma says the port is missing.
    zipkin_url_without_scheme_is_an_opaque_uri_without_port: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'localhost:9411'}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.url: port has to be explicitly specified"
    ];

    zipkin_https_url_with_port_is_valid: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'https://[::1]:9411/api/v2/spans'}
        ",
    ) => [];

    // Beyond Kuma: valid there, but tracecar cannot export to it.
    zipkin_url_with_a_scheme_other_than_http_is_a_warning: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'udp://zipkin:9411'}
        ",
    ) => [
        "warning: mesh.yaml: Mesh/default: tracing.backends[0].config.url: tracecar exports only over http and https; spans for this backend will be dropped"
    ];

    zipkin_api_version_must_be_a_known_one: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'http://a:9411/api/v2/spans', apiVersion: v2}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.apiVersion: has invalid value. Allowed values: httpJsonV1, httpJson, httpProto"
    ];

    zipkin_api_version_is_case_sensitive: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'http://a:9411/api/v2/spans', apiVersion: httpjson}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.apiVersion: has invalid value. Allowed values: httpJsonV1, httpJson, httpProto"
    ];

    zipkin_api_version_is_checked_before_the_url: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {apiVersion: v2}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.apiVersion: has invalid value. Allowed values: httpJsonV1, httpJson, httpProto",
        "mesh.yaml: Mesh/default: tracing.backends[0].config.url: cannot be empty",
    ];

    zipkin_api_version_http_json_v1_is_accepted: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'http://a:9411/api/v1/spans', apiVersion: httpJsonV1}
        ",
    ) => [];
}
#[test]
fn wrong_type_in_conf_is_one_parse_error_at_config() {
    // Kuma converts conf to the typed config first; a type mismatch stops that backend's
    // config checks (so the empty url is not reported).
    let found = lines(
        "mesh.yaml",
        &mesh_with_backends(
            "
            - name: z
              type: zipkin
              conf: {traceId128bit: 'yes please'}
            ",
        ),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "mesh.yaml: Mesh/default: tracing.backends[0].config: could not parse config: "
        ),
        "{found:?}"
    );
}

#[test]
fn conf_that_is_not_a_mapping_is_a_parse_error_at_config() {
    let found = lines(
        "mesh.yaml",
        &mesh_with_backends(
            "
            - name: d
              type: datadog
              conf: 'address=1.2.3.4'
            ",
        ),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "mesh.yaml: Mesh/default: tracing.backends[0].config: could not parse config: "
        ),
        "{found:?}"
    );
}

cases! {
    // Kuma ignores it; tracecar warns, as a misspelt key silently falls back to its default.
    unknown_conf_key_is_a_warning: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type: zipkin
          conf: {url: 'http://a:9411/api/v2/spans', sharedSpanContxt: false}
        ",
    ) => [
        "warning: mesh.yaml: Mesh/default: tracing.backends[0].config.sharedSpanContxt: unknown field, ignored"
    ];
}

// ---------------------------------------------------------------------------------------------
// Mesh tracing: datadog conf

cases! {
    a_valid_datadog_mesh_has_no_diagnostics: "mesh.yaml", mesh_with_backends(
        "
        - name: dd
          type: datadog
          conf: {address: datadog.agent, port: 8126, splitService: true}
        ",
    ) => [];

    datadog_address_cannot_be_empty: "mesh.yaml", mesh_with_backends(
        "
        - name: dd
          type: datadog
          conf: {address: '', port: 8126}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].config.address: cannot be empty"];

    datadog_port_zero_is_out_of_range: "mesh.yaml", mesh_with_backends(
        "
        - name: dd
          type: datadog
          conf: {address: 127.0.0.1, port: 0}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.port: port must be in the range [1, 65535]"
    ];

    datadog_port_above_65535_is_out_of_range: "mesh.yaml", mesh_with_backends(
        "
        - name: dd
          type: datadog
          conf: {address: 127.0.0.1, port: 65536}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.port: port must be in the range [1, 65535]"
    ];
}
#[test]
fn datadog_negative_port_is_a_parse_error_as_in_kuma() {
    // Kuma's port is a uint32: a negative number fails the typed conversion (notes §1), so the
    // message is `could not parse config`, not the range message.
    let found = lines(
        "mesh.yaml",
        &mesh_with_backends(
            "
            - name: dd
              type: datadog
              conf: {address: 127.0.0.1, port: -1}
            ",
        ),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "mesh.yaml: Mesh/default: tracing.backends[0].config: could not parse config: "
        ),
        "{found:?}"
    );
}

cases! {
    datadog_empty_conf_reports_address_then_port: "mesh.yaml", mesh_with_backends(
        "
        - name: dd
          type: datadog
          conf: {}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.address: cannot be empty",
        "mesh.yaml: Mesh/default: tracing.backends[0].config.port: port must be in the range [1, 65535]",
    ];
}
#[test]
fn datadog_port_of_wrong_type_is_a_parse_error() {
    let found = lines(
        "mesh.yaml",
        &mesh_with_backends(
            "
            - name: dd
              type: datadog
              conf: {address: 127.0.0.1, port: abc}
            ",
        ),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "mesh.yaml: Mesh/default: tracing.backends[0].config: could not parse config: "
        ),
        "{found:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Mesh: every violation, in Kuma's order

cases! {
    // Backend i's own errors (name, sampling, type/config) come first, then its duplicate check;
    // defaultBackend last.
    every_mesh_violation_is_reported_in_kumas_order: "mesh.yaml", dedent(
        "
        type: Mesh
        name: default
        tracing:
          defaultBackend: nowhere
          backends:
            - name: ''
              type: zipkin
              sampling: 101
              conf: {apiVersion: v9, url: 'http://zipkin/api/v2/spans'}
            - name: ''
              type: kafka
            - name: dd
              type: datadog
              sampling: -5
            - name: dd
              type: zipkin
              conf: {url: 'http://a:9411/'}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].name: cannot be empty",
        "mesh.yaml: Mesh/default: tracing.backends[0].sampling: has to be in [0.0 - 100.0] range",
        "mesh.yaml: Mesh/default: tracing.backends[0].config.apiVersion: has invalid value. Allowed values: httpJsonV1, httpJson, httpProto",
        "mesh.yaml: Mesh/default: tracing.backends[0].config.url: port has to be explicitly specified",
        "mesh.yaml: Mesh/default: tracing.backends[1].name: cannot be empty",
        r#"mesh.yaml: Mesh/default: tracing.backends[1].type: unknown backend type. Available backends: "zipkin", "datadog""#,
        r#"mesh.yaml: Mesh/default: tracing.backends[1].name: "" name is already used for another backend"#,
        "mesh.yaml: Mesh/default: tracing.backends[2].sampling: has to be in [0.0 - 100.0] range",
        "mesh.yaml: Mesh/default: tracing.backends[2].config.address: cannot be empty",
        "mesh.yaml: Mesh/default: tracing.backends[2].config.port: port must be in the range [1, 65535]",
        r#"mesh.yaml: Mesh/default: tracing.backends[3].name: "dd" name is already used for another backend"#,
        "mesh.yaml: Mesh/default: tracing.defaultBackend: has to be set to one of the tracing backend in mesh",
    ];
}

// =============================================================================================
// TrafficTrace

cases! {
    a_valid_traffic_trace_has_no_diagnostics: "trace.yaml", dedent(
        "
        type: TrafficTrace
        name: trace-web
        mesh: default
        selectors:
          - match: {kuma.io/service: web, version: 'v1.2_x:y/z'}
        conf: {backend: zipkin}
        ",
    ) => [];

    traffic_trace_selectors_must_have_at_least_one_element: "trace.yaml", "type: TrafficTrace\nname: t\nmesh: default\nselectors: []\n" => ["trace.yaml: TrafficTrace/t: selectors: must have at least one element"];

    traffic_trace_without_selectors_must_have_at_least_one_element: "trace.yaml", "type: TrafficTrace\nname: t\nmesh: default\n" => ["trace.yaml: TrafficTrace/t: selectors: must have at least one element"];

    selector_match_must_have_at_least_one_tag: "trace.yaml", dedent(
        "
        type: TrafficTrace
        name: t
        selectors:
          - match: {kuma.io/service: web}
          - match: {}
        ",
    ) => ["trace.yaml: TrafficTrace/t: selectors[1].match: must have at least one tag"];

    selector_without_match_must_have_at_least_one_tag: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - {}\n" => ["trace.yaml: TrafficTrace/t: selectors[0].match: must have at least one tag"];

    // Kuma's own test case: keys are visited sorted, paths quote the key Go-style.
    selector_tag_values_must_be_non_empty_in_sorted_key_order: "trace.yaml", dedent(
        "
        type: TrafficTrace
        name: t
        selectors:
          - match: {region: '', kuma.io/service: ''}
        ",
    ) => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["kuma.io/service"]: tag value must be non-empty"#,
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["region"]: tag value must be non-empty"#,
    ];

    selector_tag_name_must_be_non_empty_at_the_match_path: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - match: {'': web}\n" => ["trace.yaml: TrafficTrace/t: selectors[0].match: tag name must be non-empty"];

    selector_tag_name_characters_are_restricted: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - match: {'inv@lid tag': web}\n" => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["inv@lid tag"]: tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"#
    ];

    selector_tag_name_cannot_be_a_wildcard: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - match: {'*': web}\n" => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["*"]: tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"#
    ];

    selector_tag_value_characters_are_restricted: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - match: {kuma.io/service: 'web app'}\n" => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["kuma.io/service"]: tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be "*""#
    ];

    selector_value_wildcard_must_be_exactly_a_star: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - match: {kuma.io/service: 'web*'}\n" => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["kuma.io/service"]: tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be "*""#
    ];

    selector_value_star_and_slash_are_valid: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - match: {kuma.io/service: '*', team: a/b}\n" => [];

    selector_violations_are_reported_per_key_name_before_value: "trace.yaml", dedent(
        "
        type: TrafficTrace
        name: t
        selectors:
          - match: {'b@d': 'x y', a: ''}
        ",
    ) => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["a"]: tag value must be non-empty"#,
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["b@d"]: tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"#,
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["b@d"]: tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be "*""#,
    ];

    // Kuma does not validate conf; a missing backend is only checked against a loaded Mesh.
    traffic_trace_conf_backend_is_not_validated_on_its_own: "trace.yaml", "type: TrafficTrace\nname: t\nselectors:\n  - match: {kuma.io/service: '*'}\nconf: {backend: nowhere}\n" => [];
}
#[test]
fn traffic_trace_naming_a_backend_the_mesh_lacks_is_a_warning() {
    let yaml = dedent(
        "
        type: Mesh
        name: default
        tracing:
          backends: [{name: zipkin, type: zipkin, conf: {url: 'http://z:9411/'}}]
        ---
        type: TrafficTrace
        name: t
        mesh: default
        selectors:
          - match: {kuma.io/service: '*'}
        conf: {backend: jaeger}
        ",
    );
    let found = diagnostics("policy.yaml", &yaml);
    assert_eq!(
        found.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            r#"warning: policy.yaml: TrafficTrace/t: conf.backend: backend "jaeger" not found in mesh "default": proxies it selects are not traced"#
        ]
    );
    assert!(!found[0].is_error());
}

cases! {
    traffic_trace_without_backend_in_a_mesh_without_default_is_a_warning: "policy.yaml", dedent(
        "
        type: Mesh
        name: default
        tracing:
          backends: [{name: zipkin, type: zipkin, conf: {url: 'http://z:9411/'}}]
        ---
        type: TrafficTrace
        name: t
        selectors:
          - match: {kuma.io/service: '*'}
        ",
    ) => [
        r#"warning: policy.yaml: TrafficTrace/t: conf: names no backend and mesh "default" has no defaultBackend: proxies it selects are not traced"#
    ];

    traffic_trace_using_the_default_backend_is_valid: "policy.yaml", dedent(
        "
        type: Mesh
        name: default
        tracing:
          defaultBackend: zipkin
          backends: [{name: zipkin, type: zipkin, conf: {url: 'http://z:9411/'}}]
        ---
        type: TrafficTrace
        name: t
        selectors:
          - match: {kuma.io/service: '*'}
        ",
    ) => [];
}
#[test]
fn strict_check_fails_on_a_missing_backend_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "policy.yaml",
        dedent(
            "
            type: Mesh
            name: default
            tracing:
              backends: [{name: zipkin, type: zipkin, conf: {url: 'http://z:9411/'}}]
            ---
            type: TrafficTrace
            name: t
            selectors:
              - match: {kuma.io/service: '*'}
            conf: {backend: jaeger}
            ",
        ),
    );
    let checked = check(&[file], None);
    assert!(!checked.failed(false), "{:?}", checked.diagnostics);
    assert!(checked.failed(true), "{:?}", checked.diagnostics);
}

// =============================================================================================
// Dataplane

cases! {
    a_valid_dataplane_has_no_diagnostics: "dataplane.yaml", dedent(
        "
        type: Dataplane
        mesh: default
        name: web-1
        networking:
          address: 127.0.0.1
          inbound:
            - port: 15000
              servicePort: 8080
              tags: {kuma.io/service: web, kuma.io/protocol: http, version: v1}
          outbound:
            - port: 15001
              tags: {kuma.io/service: backend, kuma.io/protocol: grpc}
              endpoints: ['10.0.0.7:15000', 'backend.local:15000', '[::1]:15000']
        ",
    ) => [];

    dataplane_networking_must_be_defined: "dataplane.yaml", "type: Dataplane\nmesh: default\nname: dp-1\n" => ["dataplane.yaml: Dataplane/dp-1: networking: must be defined"];

    // Kuma's test: `networking: {}` gives both, in this order.
    dataplane_needs_at_least_one_inbound_and_an_address: "dataplane.yaml", "type: Dataplane\nmesh: default\nname: dp-1\nnetworking: {}\n" => [
        "dataplane.yaml: Dataplane/dp-1: networking: has to contain at least one inbound interface or gateway",
        "dataplane.yaml: Dataplane/dp-1: networking.address: address can't be empty",
    ];

    dataplane_gateway_is_not_supported: "dataplane.yaml", dedent(
        "
        type: Dataplane
        mesh: default
        name: gw-1
        networking:
          address: 127.0.0.1
          gateway: {tags: {kuma.io/service: edge}}
        ",
    ) => [
        "dataplane.yaml: Dataplane/gw-1: networking.gateway: gateway dataplanes are not supported by tracecar; describe the inbounds instead"
    ];
}

fn dataplane_with_address(address: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: '{address}'\n  inbound:\n    - port: 15000\n      tags: {{kuma.io/service: web}}\n"
    )
}

cases! {
    dataplane_address_cannot_be_empty: "dataplane.yaml", &dataplane_with_address("") => ["dataplane.yaml: Dataplane/dp-1: networking.address: address can't be empty"];

    dataplane_address_cannot_be_the_ipv4_wildcard: "dataplane.yaml", &dataplane_with_address("0.0.0.0") => ["dataplane.yaml: Dataplane/dp-1: networking.address: must not be 0.0.0.0 or ::"];

    dataplane_address_cannot_be_the_ipv6_wildcard: "dataplane.yaml", &dataplane_with_address("::") => ["dataplane.yaml: Dataplane/dp-1: networking.address: must not be 0.0.0.0 or ::"];

    dataplane_address_must_be_an_ip_or_a_domain_name: "dataplane.yaml", &dataplane_with_address("..>_<..") => [
        "dataplane.yaml: Dataplane/dp-1: networking.address: address has to be valid IP address or domain name"
    ];
}
#[test]
fn dataplane_address_may_be_a_domain_name_or_ipv6() {
    assert_eq!(
        lines("dataplane.yaml", &dataplane_with_address("web-1.internal")),
        Vec::<String>::new()
    );
    assert_eq!(
        lines("dataplane.yaml", &dataplane_with_address("fd00::1")),
        Vec::<String>::new()
    );
}

cases! {
    inbound_port_zero_is_out_of_range: "dataplane.yaml", dataplane_with_inbound("port: 0\ntags: {kuma.io/service: web}") => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].port: port must be in the range [1, 65535]"
    ];

    inbound_port_above_65535_is_out_of_range: "dataplane.yaml", dataplane_with_inbound("port: 70000\ntags: {kuma.io/service: web}") => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].port: port must be in the range [1, 65535]"
    ];

    inbound_service_port_above_65535_is_out_of_range: "dataplane.yaml", dataplane_with_inbound("port: 15000\nservicePort: 65536\ntags: {kuma.io/service: web}") => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].servicePort: port must be in the range [1, 65535]"
    ];

    inbound_service_port_zero_means_unset: "dataplane.yaml", dataplane_with_inbound("port: 15000\nservicePort: 0\ntags: {kuma.io/service: web}") => [];

    inbound_service_address_must_be_an_ip: "dataplane.yaml", dataplane_with_inbound(
        "port: 15000\nservicePort: 8080\nserviceAddress: app.local\ntags: {kuma.io/service: web}",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].serviceAddress: serviceAddress has to be valid IP address"
    ];

    inbound_service_address_and_port_must_differ_from_the_listener: "dataplane.yaml", dataplane_with_inbound(
        "port: 15000\nserviceAddress: 127.0.0.1\ntags: {kuma.io/service: web}",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].serviceAddress: serviceAddress and servicePort has to differ from address and port"
    ];

    inbound_address_must_be_an_ip: "dataplane.yaml", dataplane_with_inbound(
        "port: 15000\nservicePort: 8080\naddress: web.local\ntags: {kuma.io/service: web}",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].address: address has to be valid IP address"
    ];

    inbound_service_tag_has_to_exist: "dataplane.yaml", dataplane_with_inbound("port: 15000\ntags: {kuma.io/protocol: http}") => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["kuma.io/service"]: tag has to exist"#
    ];

    inbound_service_tag_is_checked_after_the_other_inbound_errors: "dataplane.yaml", dataplane_with_inbound("port: 0\ntags: {version: ''}") => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].port: port must be in the range [1, 65535]",
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["version"]: tag value must be non-empty"#,
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["kuma.io/service"]: tag has to exist"#,
    ];

    inbound_unknown_protocol_lists_kumas_supported_protocols: "dataplane.yaml", dataplane_with_inbound(
        "port: 15000\ntags: {kuma.io/service: web, kuma.io/protocol: not-yet-supported-protocol}",
    ) => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["kuma.io/protocol"]: tag "kuma.io/protocol" has an invalid value "not-yet-supported-protocol". Allowed values: grpc, http, http2, kafka, tcp"#
    ];

    // Kuma's whole-map protocol check runs before the per-key checks: two messages.
    inbound_empty_protocol_is_invalid_and_empty: "dataplane.yaml", dataplane_with_inbound("port: 15000\ntags: {kuma.io/service: web, kuma.io/protocol: ''}") => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["kuma.io/protocol"]: tag "kuma.io/protocol" has an invalid value "". Allowed values: grpc, http, http2, kafka, tcp"#,
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["kuma.io/protocol"]: tag value must be non-empty"#,
    ];

    inbound_protocol_is_case_insensitive: "dataplane.yaml", dataplane_with_inbound(
        "port: 15000\ntags: {kuma.io/service: web, kuma.io/protocol: HTTP2}",
    ) => [];

    inbound_protocol_tls_is_accepted_though_not_listed: "dataplane.yaml", dataplane_with_inbound("port: 15000\ntags: {kuma.io/service: web, kuma.io/protocol: tls}") => [];
}
#[test]
fn inbound_every_listed_protocol_is_accepted() {
    for protocol in ["grpc", "http", "http2", "kafka", "tcp"] {
        let yaml = dataplane_with_inbound(&format!(
            "port: 15000\ntags: {{kuma.io/service: web, kuma.io/protocol: {protocol}}}"
        ));
        assert_eq!(
            lines("dataplane.yaml", &yaml),
            Vec::<String>::new(),
            "{protocol}"
        );
    }
}

cases! {
    inbound_tag_name_characters_are_restricted: "dataplane.yaml", dataplane_with_inbound("port: 15000\ntags: {kuma.io/service: web, 'inv@lidT/gN%me': x}") => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["inv@lidT/gN%me"]: tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"#
    ];

    inbound_tag_name_must_be_non_empty: "dataplane.yaml", dataplane_with_inbound("port: 15000\ntags: {kuma.io/service: web, '': x}") => ["dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags: tag name must be non-empty"];

    inbound_tag_value_allows_no_slash_and_no_wildcard: "dataplane.yaml", dataplane_with_inbound(
        "port: 15000\ntags: {kuma.io/service: web, team: 'a/b', version: '*'}",
    ) => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["team"]: tag value must consist of alphanumeric characters, dots, dashes and underscores"#,
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["version"]: tag value must consist of alphanumeric characters, dots, dashes and underscores"#,
    ];

    inbound_tls_needs_cert_and_key_files: "dataplane.yaml", dataplane_with_inbound("port: 15000\ntags: {kuma.io/service: web}\ntls: {}") => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tls.certFile: cannot be empty",
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tls.keyFile: cannot be empty",
    ];

    outbound_port_is_range_checked: "dataplane.yaml", dataplane_with_outbound(
        "port: 0\ntags: {kuma.io/service: backend}\nendpoints: ['10.0.0.1:80']",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.outbound[0].port: port must be in the range [1, 65535]"
    ];

    outbound_address_must_be_an_ip: "dataplane.yaml", dataplane_with_outbound(
        "port: 15001\naddress: localhost\ntags: {kuma.io/service: backend}\nendpoints: ['10.0.0.1:80']",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.outbound[0].address: address has to be valid IP address"
    ];

    outbound_without_tags_is_missing_the_service_tag: "dataplane.yaml", dataplane_with_outbound("port: 15001\nendpoints: ['10.0.0.1:80']") => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.outbound[0].tags: mandatory tag "kuma.io/service" is missing"#
    ];

    // Even with the legacy `service` field set, as in Kuma.
    outbound_with_tags_but_no_service_is_missing_the_service_tag: "dataplane.yaml", dataplane_with_outbound(
        "port: 15001\nservice: backend\ntags: {kuma.io/protocol: http}\nendpoints: ['10.0.0.1:80']",
    ) => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.outbound[0].tags: mandatory tag "kuma.io/service" is missing"#
    ];

    outbound_legacy_service_field_is_enough_without_tags: "dataplane.yaml", dataplane_with_outbound("port: 15001\nservice: backend\nendpoints: ['10.0.0.1:80']") => [];

    // Beyond Kuma: the listener needs a protocol it can speak.
    outbound_unknown_protocol_is_an_error: "dataplane.yaml", dataplane_with_outbound(
        "port: 15001\ntags: {kuma.io/service: backend, kuma.io/protocol: thrift}\nendpoints: ['10.0.0.1:80']",
    ) => [
        r#"dataplane.yaml: Dataplane/dp-1: networking.outbound[0].tags["kuma.io/protocol"]: tag "kuma.io/protocol" has an invalid value "thrift". Allowed values: grpc, http, http2, kafka, tcp"#
    ];

    outbound_without_endpoints_is_a_warning: "dataplane.yaml", dataplane_with_outbound("port: 15001\ntags: {kuma.io/service: backend}") => [
        "warning: dataplane.yaml: Dataplane/dp-1: networking.outbound[0].endpoints: no endpoints: requests to this outbound will get 503 (no control plane tells tracecar where the service lives)"
    ];

    outbound_endpoints_must_be_host_and_port: "dataplane.yaml", dataplane_with_outbound(
        "port: 15001\ntags: {kuma.io/service: backend}\nendpoints: ['10.0.0.1', '10.0.0.1:0', 'host:99999', 'ok.local:80', '::1:80']",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.outbound[0].endpoints[0]: has to be host:port with a port in the range [1, 65535]",
        "dataplane.yaml: Dataplane/dp-1: networking.outbound[0].endpoints[1]: has to be host:port with a port in the range [1, 65535]",
        "dataplane.yaml: Dataplane/dp-1: networking.outbound[0].endpoints[2]: has to be host:port with a port in the range [1, 65535]",
        "dataplane.yaml: Dataplane/dp-1: networking.outbound[0].endpoints[4]: has to be host:port with a port in the range [1, 65535]",
    ];

    outbound_tls_needs_a_ca_file: "dataplane.yaml", dataplane_with_outbound(
        "port: 15001\ntags: {kuma.io/service: backend}\nendpoints: ['10.0.0.1:443']\ntls: {serverName: backend}",
    ) => ["dataplane.yaml: Dataplane/dp-1: networking.outbound[0].tls.caFile: cannot be empty"];

    // Beyond Kuma: two listeners on one address and port could never both bind. Outbounds
    // bind 127.0.0.1 by default, as the dataplane address here.
    duplicate_listener_port_is_an_error_on_the_second_listener: "dataplane.yaml", dataplane_with_outbound(
        "port: 15000\ntags: {kuma.io/service: backend}\nendpoints: ['10.0.0.1:80']",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.outbound[0].port: 127.0.0.1:15000 is already used by networking.inbound[0]"
    ];

    same_port_on_different_addresses_is_fine: "dataplane.yaml", dataplane_with_outbound(
        "port: 15000\naddress: 127.0.0.2\ntags: {kuma.io/service: backend}\nendpoints: ['10.0.0.1:80']",
    ) => [];
}
#[test]
fn dataplane_file_holding_no_dataplane_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "dp.yaml", "type: Mesh\nname: default\n");
    let problems = load_dataplane(&file).unwrap_err();
    let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let shown = file.display();
    assert_eq!(
        rendered,
        [
            format!(
                "warning: {shown}: Mesh/default: not a Dataplane, ignored in the dataplane file"
            ),
            format!("{shown}: holds no Dataplane resource"),
        ]
    );
}

#[test]
fn dataplane_file_holding_two_dataplanes_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let one = "type: Dataplane\nname: a\nnetworking: {address: 127.0.0.1, inbound: [{port: 1, tags: {kuma.io/service: a}}]}\n";
    let two = one.replace("name: a", "name: b");
    let file = write(dir.path(), "dp.yaml", format!("{one}---\n{two}"));
    let problems = load_dataplane(&file).unwrap_err();
    let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [format!(
            "{}: holds 2 Dataplane resources; a sidecar proxies exactly one",
            file.display()
        )]
    );
}

#[test]
fn dataplane_of_a_mesh_the_policy_lacks_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "mesh.yaml", "type: Mesh\nname: default\n");
    let dp = write(
        dir.path(),
        "dp.yaml",
        "type: Dataplane\nmesh: other\nname: dp-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 1, tags: {kuma.io/service: a}}]}\n",
    );
    let checked = check(&[policy], Some(&dp));
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [format!(
            "warning: {}: Dataplane/dp-1: mesh: mesh \"other\" is not defined in the policy files: nothing is traced",
            dp.display()
        )]
    );
}

// =============================================================================================
// Null values: Kuma reads YAML through JSON into protobuf, so `key:`, `key: ~` and `key: null`
// are the field's empty value, and then Kuma's usual messages apply.

cases! {
    null_backend_name_cannot_be_empty: "mesh.yaml", mesh_with_backends(
        "
        - name: ~
          type: zipkin
          conf: {url: 'http://zipkin:9411/api/v2/spans'}
        ",
    ) => ["mesh.yaml: Mesh/default: tracing.backends[0].name: cannot be empty"];

    // `sampling:` is an unset wrapper in Kuma (100), `type:` an empty string (unknown type).
    null_mesh_fields_are_empty_and_absent_sampling_is_valid: "mesh.yaml", mesh_with_backends(
        "
        - name: z
          type:
          sampling:
          conf: {url: 'http://zipkin:9411/api/v2/spans', traceId128bit: ~, apiVersion: null, sharedSpanContext:}
        ",
    ) => [
        r#"mesh.yaml: Mesh/default: tracing.backends[0].type: unknown backend type. Available backends: "zipkin", "datadog""#
    ];

    null_zipkin_url_cannot_be_empty: "mesh.yaml", mesh_with_backends("- {name: z, type: zipkin, conf: {url: ~}}") => ["mesh.yaml: Mesh/default: tracing.backends[0].config.url: cannot be empty"];

    null_datadog_conf_fields_are_empty: "mesh.yaml", mesh_with_backends(
        "- {name: d, type: datadog, conf: {address: ~, port: , splitService: null}}",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.address: cannot be empty",
        "mesh.yaml: Mesh/default: tracing.backends[0].config.port: port must be in the range [1, 65535]",
    ];
}
#[test]
fn null_tracing_sections_are_empty() {
    for yaml in [
        "type: Mesh\nname: default\ntracing:\n",
        "type: Mesh\nname: default\ntracing: {defaultBackend: ~, backends: ~}\n",
        "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {tracing: {backends: null}}\n",
    ] {
        assert_eq!(lines("mesh.yaml", yaml), Vec::<String>::new(), "{yaml}");
    }
}

cases! {
    null_traffic_trace_backend_is_the_mesh_default_backend: "policy.yaml", dedent(
        "
        type: Mesh
        name: default
        tracing:
          defaultBackend: zipkin
          backends: [{name: zipkin, type: zipkin, conf: {url: 'http://z:9411/'}}]
        ---
        type: TrafficTrace
        name: t
        selectors:
          - match: {kuma.io/service: '*'}
        conf: {backend: }
        ",
    ) => [];

    null_selector_tag_values_must_be_non_empty: "trace.yaml", dedent(
        "
        type: TrafficTrace
        name: t
        selectors:
          - match: {kuma.io/service: , region: ~}
        ",
    ) => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["kuma.io/service"]: tag value must be non-empty"#,
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["region"]: tag value must be non-empty"#,
    ];
}
#[test]
fn null_selectors_and_match_are_empty() {
    assert_eq!(
        lines(
            "trace.yaml",
            "type: TrafficTrace\nname: t\nselectors: ~\nconf:\n"
        ),
        ["trace.yaml: TrafficTrace/t: selectors: must have at least one element"]
    );
    assert_eq!(
        lines(
            "trace.yaml",
            "type: TrafficTrace\nname: t\nselectors:\n  - match:\n"
        ),
        ["trace.yaml: TrafficTrace/t: selectors[0].match: must have at least one tag"]
    );
}

cases! {
    null_dataplane_address_and_tag_value_are_empty: "dataplane.yaml", dedent(
        "
        type: Dataplane
        mesh: default
        name: dp-1
        networking:
          address: ~
          advertisedAddress:
          inbound:
            - port: 15000
              servicePort: ~
              serviceAddress: null
              address:
              tags: {kuma.io/service: web, version: }
          outbound: ~
        ",
    ) => [
        "dataplane.yaml: Dataplane/dp-1: networking.address: address can't be empty",
        r#"dataplane.yaml: Dataplane/dp-1: networking.inbound[0].tags["version"]: tag value must be non-empty"#,
    ];

    null_dataplane_port_is_zero_and_out_of_range: "dataplane.yaml", dataplane_with_inbound("port: ~\ntags: {kuma.io/service: web}") => [
        "dataplane.yaml: Dataplane/dp-1: networking.inbound[0].port: port must be in the range [1, 65535]"
    ];

    null_outbound_fields_and_kubernetes_dataplane_are_empty: "dataplane.yaml", dedent(
        "
        apiVersion: kuma.io/v1alpha1
        kind: Dataplane
        mesh: default
        metadata: {name: dp-1, namespace: ~, creationTimestamp: ~}
        spec:
          networking:
            address: 127.0.0.1
            inbound:
              - port: 15000
                tags: {kuma.io/service: web}
                tls: ~
            outbound:
              - port: 15001
                address: ~
                service: ~
                tags: {kuma.io/service: backend}
                endpoints: ['10.0.0.7:15000']
                tls:
        ",
    ) => [];
}

// =============================================================================================
// Resource names

cases! {
    resource_name_must_be_an_rfc1123_subdomain: "trace.yaml", "type: TrafficTrace\nname: Trace_All\nselectors:\n  - match: {kuma.io/service: '*'}\n" => [
        "trace.yaml: TrafficTrace/Trace_All: name: invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    ];

    resource_name_cannot_end_with_a_dash: "mesh.yaml", "type: Mesh\nname: default-\n" => [
        "mesh.yaml: Mesh/default-: name: invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    ];

    resource_name_may_have_dotted_labels: "trace.yaml", "type: TrafficTrace\nname: trace.web-1\nselectors:\n  - match: {kuma.io/service: '*'}\n" => [];
}
#[test]
fn resource_name_longer_than_253_is_refused() {
    let name = "a".repeat(254);
    let yaml = format!(
        "type: TrafficTrace\nname: {name}\nselectors:\n  - match: {{kuma.io/service: '*'}}\n"
    );
    assert_eq!(
        lines("trace.yaml", &yaml),
        [format!(
            "trace.yaml: TrafficTrace/{name}: name: value length must less or equal 253"
        )]
    );
}

#[test]
fn mesh_name_longer_than_63_is_refused() {
    let name = "m".repeat(64);
    assert_eq!(
        lines("mesh.yaml", &format!("type: Mesh\nname: {name}\n")),
        [format!(
            "mesh.yaml: Mesh/{name}: name: cannot be longer than 63 characters"
        )]
    );
}

#[test]
fn mesh_name_of_63_is_fine() {
    let name = "m".repeat(63);
    assert_eq!(
        lines("mesh.yaml", &format!("type: Mesh\nname: {name}\n")),
        Vec::<String>::new()
    );
}

cases! {
    mesh_reference_characters_are_restricted: "trace.yaml", "type: TrafficTrace\nname: t\nmesh: Default\nselectors:\n  - match: {kuma.io/service: '*'}\n" => [
        "trace.yaml: TrafficTrace/t: mesh: invalid characters. Valid characters are numbers, lowercase latin letters and '-', '_', '.' symbols."
    ];
}
#[test]
fn mesh_reference_longer_than_253_is_refused() {
    let mesh = "m".repeat(254);
    let yaml = format!(
        "type: TrafficTrace\nname: t\nmesh: {mesh}\nselectors:\n  - match: {{kuma.io/service: '*'}}\n"
    );
    assert_eq!(
        lines("trace.yaml", &yaml),
        ["trace.yaml: TrafficTrace/t: mesh: value length must less or equal 253"]
    );
}

cases! {
    universal_resource_name_cannot_be_empty: "mesh.yaml", "type: Mesh\n" => ["mesh.yaml: document 1: Mesh: name: cannot be empty"];

    kubernetes_resource_name_cannot_be_empty: "mesh.yaml", "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {}\n" => ["mesh.yaml: document 1: Mesh: metadata.name: cannot be empty"];

    resource_name_must_be_a_string: "mesh.yaml", "type: Mesh\nname: [a]\n" => ["mesh.yaml: document 1: Mesh: name: expected a string, found a list"];
}

// =============================================================================================
// Kubernetes form

cases! {
    kubernetes_field_paths_have_no_spec_prefix: "mesh.yaml", dedent(
        "
        apiVersion: kuma.io/v1alpha1
        kind: Mesh
        metadata:
          name: default
        spec:
          tracing:
            backends:
              - name: z
                type: zipkin
                conf: {url: 'http://zipkin/api/v2/spans'}
        ",
    ) => [
        "mesh.yaml: Mesh/default: tracing.backends[0].config.url: port has to be explicitly specified"
    ];
}
#[test]
fn kubernetes_type_error_paths_have_no_spec_prefix() {
    let yaml = dedent(
        "
        apiVersion: kuma.io/v1alpha1
        kind: Mesh
        metadata:
          name: default
        spec:
          tracing:
            backends:
              - name: z
                type: zipkin
                sampling: lots
        ",
    );
    let found = lines("mesh.yaml", &yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("mesh.yaml: Mesh/default: tracing.backends[0].sampling: "),
        "{found:?}"
    );
}

cases! {
    kubernetes_traffic_trace_selector_paths_have_no_spec_prefix: "trace.yaml", dedent(
        "
        apiVersion: kuma.io/v1alpha1
        kind: TrafficTrace
        mesh: default
        metadata:
          name: t
        spec:
          selectors:
            - match: {kuma.io/service: ''}
        ",
    ) => [
        r#"trace.yaml: TrafficTrace/t: selectors[0].match["kuma.io/service"]: tag value must be non-empty"#
    ];

    kubernetes_dataplane_is_named_name_dot_namespace: "dataplane.yaml", dedent(
        "
        apiVersion: kuma.io/v1alpha1
        kind: Dataplane
        mesh: default
        metadata: {name: web-1, namespace: kuma-demo}
        spec: {}
        ",
    ) => ["dataplane.yaml: Dataplane/web-1.kuma-demo: networking: must be defined"];

    kubernetes_spec_must_be_a_mapping: "mesh.yaml", "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: x}\nspec: 5\n" => ["mesh.yaml: Mesh/x: spec: expected a mapping, found number `5`"];

    kubernetes_metadata_must_be_a_mapping: "mesh.yaml", "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: x\n" => [r#"mesh.yaml: document 1: Mesh: metadata: expected a mapping, found string "x""#];

    kubernetes_api_version_must_be_kumas: "mesh.yaml", "apiVersion: v1\nkind: Mesh\nmetadata: {name: x}\n" => [
        r#"mesh.yaml: document 1: Mesh: apiVersion: "v1" is not Kuma's; expected "kuma.io/v1alpha1""#
    ];

    kubernetes_api_version_cannot_be_missing: "mesh.yaml", "kind: Mesh\nmetadata: {name: x}\n" => [
        r#"mesh.yaml: document 1: Mesh: apiVersion: cannot be empty (expected "kuma.io/v1alpha1")"#
    ];

    kubernetes_kind_cannot_be_empty: "mesh.yaml", "apiVersion: kuma.io/v1alpha1\nmetadata: {name: x}\n" => ["mesh.yaml: document 1: kind: cannot be empty"];
}
#[test]
fn kubernetes_creation_timestamp_must_be_rfc3339() {
    let yaml = "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: x, creationTimestamp: yesterday}\n";
    let found = lines("mesh.yaml", yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "mesh.yaml: Mesh/x: metadata.creationTimestamp: not an RFC 3339 timestamp: "
        ),
        "{found:?}"
    );
}

#[test]
fn universal_creation_time_must_be_rfc3339() {
    let found = lines(
        "mesh.yaml",
        "type: Mesh\nname: x\ncreationTime: yesterday\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("mesh.yaml: Mesh/x: creationTime: not an RFC 3339 timestamp: "),
        "{found:?}"
    );
}

// =============================================================================================
// Kinds, documents, files

#[test]
fn known_kuma_kind_is_skipped_with_a_warning() {
    let yaml = "type: TrafficPermission\nname: allow-all\nmesh: default\n";
    let found = diagnostics("policy.yaml", yaml);
    assert_eq!(
        found.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["warning: policy.yaml: TrafficPermission/allow-all: not used by tracecar, skipped"]
    );
    assert!(!found[0].is_error());
}

cases! {
    known_kuma_kind_in_kubernetes_form_is_skipped_with_a_warning: "policy.yaml", "apiVersion: kuma.io/v1alpha1\nkind: MeshMetric\nmetadata: {name: mt}\nspec: {}\n" => ["warning: policy.yaml: MeshMetric/mt: not used by tracecar, skipped"];

    unknown_kind_is_an_error: "policy.yaml", "type: TrafficTrac\nname: t\n" => [
        r#"policy.yaml: document 1: unknown kind "TrafficTrac"; tracecar reads Mesh, TrafficTrace, MeshTrace, MeshOpenTelemetryBackend and Dataplane"#
    ];

    document_without_type_or_kind_is_an_error: "policy.yaml", "name: t\n" => ["policy.yaml: document 1: missing `type:` (Universal form) or `kind:` (Kubernetes form)"];

    type_must_be_a_string: "policy.yaml", "type: 3\nname: t\n" => ["policy.yaml: document 1: type: expected a string, found number `3`"];

    document_that_is_not_a_mapping_is_an_error: "policy.yaml", "- a\n- b\n" => [
        "policy.yaml: document 1: expected a Kuma resource (a mapping with `type:` or `kind:`), found a list"
    ];

    problems_name_the_document_they_are_in: "policy.yaml", "type: Mesh\nname: default\n---\ntype: Nope\nname: x\n" => [
        r#"policy.yaml: document 2: unknown kind "Nope"; tracecar reads Mesh, TrafficTrace, MeshTrace, MeshOpenTelemetryBackend and Dataplane"#
    ];

    a_bad_document_does_not_hide_its_siblings_problems: "policy.yaml", "type: Nope\nname: x\n---\ntype: Mesh\nname: Bad\n" => [
        r#"policy.yaml: document 1: unknown kind "Nope"; tracecar reads Mesh, TrafficTrace, MeshTrace, MeshOpenTelemetryBackend and Dataplane"#,
        "policy.yaml: Mesh/Bad: name: invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
    ];

    resource_defined_twice_is_an_error: "policy.yaml", "type: Mesh\nname: default\n---\ntype: Mesh\nname: default\n" => ["policy.yaml: Mesh/default: defined twice (first in policy.yaml, document 1)"];

    same_name_in_two_meshes_is_not_a_duplicate: "policy.yaml", dedent(
        "
        type: TrafficTrace
        name: t
        mesh: a
        selectors: [{match: {kuma.io/service: '*'}}]
        ---
        type: TrafficTrace
        name: t
        mesh: b
        selectors: [{match: {kuma.io/service: '*'}}]
        ",
    ) => [];

    universal_and_kubernetes_twins_are_duplicates: "policy.yaml", "type: Mesh\nname: default\n---\napiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n" => ["policy.yaml: Mesh/default: defined twice (first in policy.yaml, document 1)"];

    empty_text_is_an_error: "policy.yaml", "" => ["policy.yaml: file is empty: it holds no resource"];

    text_of_only_comments_and_separators_is_empty: "policy.yaml", "# nothing here\n---\n---\n" => ["policy.yaml: file is empty: it holds no resource"];
}
#[test]
fn invalid_yaml_is_one_line_naming_the_file() {
    let found = lines("policy.yaml", "type: Mesh\nname: [default\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("policy.yaml: invalid YAML: "),
        "{found:?}"
    );
    assert!(!found[0].contains('\n'));
}

#[test]
fn wrong_type_is_one_line_with_the_field_path() {
    let yaml = mesh_with_backends(
        "
        - name: z
          type: zipkin
          sampling: lots
          conf: {url: ''}
        ",
    );
    let found = lines("mesh.yaml", &yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("mesh.yaml: Mesh/default: tracing.backends[0].sampling: "),
        "{found:?}"
    );
}

#[test]
fn wrong_type_in_a_dataplane_is_one_line_with_the_field_path() {
    let yaml = dataplane_with_inbound("port: fifteen\ntags: {kuma.io/service: web}");
    let found = lines("dataplane.yaml", &yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("dataplane.yaml: Dataplane/dp-1: networking.inbound[0].port: "),
        "{found:?}"
    );
}

#[test]
fn empty_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "empty.yaml", "");
    let checked = check(std::slice::from_ref(&file), None);
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [format!(
            "{}: file is empty: it holds no resource",
            file.display()
        )]
    );
    assert!(checked.failed(false));
}

#[test]
fn missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope.yaml");
    let checked = check(std::slice::from_ref(&file), None);
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [format!(
            "{}: cannot read: no such file or folder",
            file.display()
        )]
    );
}

#[test]
fn file_that_is_not_utf8_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bin.yaml", b"type: Mesh\n\xff\xfe\x00");
    let checked = check(std::slice::from_ref(&file), None);
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [format!(
            "{}: not UTF-8 text (invalid byte at offset 11)",
            file.display()
        )]
    );
}

#[test]
fn file_larger_than_the_limit_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let size = tracecar::policy::load::MAX_FILE_BYTES + 1;
    let file = write(dir.path(), "big.yaml", vec![b'#'; size as usize]);
    let checked = check(std::slice::from_ref(&file), None);
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [format!(
            "{}: file is {size} bytes, larger than the 1048576-byte limit for policy files",
            file.display()
        )]
    );
}

#[test]
fn folder_reads_only_yaml_files_not_starting_with_a_dot() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mesh.yaml",
        "type: Mesh\nname: default\ntracing:\n  defaultBackend: z\n  backends: [{name: z, type: zipkin, conf: {url: 'http://z:9411/'}}]\n",
    );
    write(
        dir.path(),
        "trace.yml",
        "type: TrafficTrace\nname: t\nselectors: [{match: {kuma.io/service: '*'}}]\n",
    );
    write(dir.path(), ".hidden.yaml", "type: Nope\n");
    write(dir.path(), "notes.txt", "type: Nope\n");
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    write(
        &dir.path().join("..data"),
        "mesh.yaml",
        "type: Mesh\nname: default\n",
    );
    let checked = check(&[dir.path().to_path_buf()], None);
    assert_eq!(checked.diagnostics, Vec::<Diagnostic>::new());
    assert_eq!(
        checked.files,
        [dir.path().join("mesh.yaml"), dir.path().join("trace.yml")]
    );
    assert_eq!(checked.resource_count(), 2);
}

/// The one-line renderings of `check`'s diagnostics for `paths`.
fn rendered(paths: &[PathBuf]) -> Vec<String> {
    check(paths, None)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn folder_without_policy_files_is_an_error() {
    // Like an empty file: an emptied folder is a mount or a deploy gone wrong, and a running
    // sidecar must not take it as "trace nothing".
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.txt", "type: Mesh\n");
    write(dir.path(), ".hidden.yaml", "type: Mesh\nname: default\n");
    assert_eq!(
        rendered(&[dir.path().to_path_buf()]),
        [format!(
            "{}: folder holds no policy file (*.yaml or *.yml)",
            dir.path().display()
        )]
    );
}

#[test]
fn dangling_symlink_in_a_folder_is_an_error_not_skipped() {
    // Skipping it would silently drop the resources it was meant to hold.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mesh.yaml", "type: Mesh\nname: default\n");
    let link = dir.path().join("trace.yaml");
    std::os::unix::fs::symlink("gone.yaml", &link).unwrap();
    assert_eq!(
        rendered(&[dir.path().to_path_buf()]),
        [format!(
            "{}: cannot read: no such file or folder",
            link.display()
        )]
    );
}

#[test]
fn symlink_loop_in_a_folder_is_an_error_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mesh.yaml", "type: Mesh\nname: default\n");
    let a = dir.path().join("a.yaml");
    std::os::unix::fs::symlink("b.yml", &a).unwrap();
    std::os::unix::fs::symlink("a.yaml", dir.path().join("b.yml")).unwrap();
    let loop_message = "cannot read: symbolic link loop (too many levels of symbolic links)";
    assert_eq!(
        rendered(&[dir.path().to_path_buf()]),
        [
            format!("{}: {loop_message}", a.display()),
            format!("{}: {loop_message}", dir.path().join("b.yml").display()),
        ]
    );
}

#[test]
fn symlink_loop_named_as_a_policy_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::os::unix::fs::symlink("b.yaml", &a).unwrap();
    std::os::unix::fs::symlink("a.yaml", dir.path().join("b.yaml")).unwrap();
    assert_eq!(
        rendered(std::slice::from_ref(&a)),
        [format!(
            "{}: cannot read: symbolic link loop (too many levels of symbolic links)",
            a.display()
        )]
    );
}
