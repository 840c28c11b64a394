//! What users write: Kuma resources, their validation, which policy applies, loading and
//! (later) watching.

pub mod diagnostic;
pub mod effective;
pub mod load;
pub mod meshtrace;
pub mod null_as_empty;
pub mod resource;
pub mod select;
pub mod validate;
pub mod watch;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Severity};
pub use effective::Effective;
pub use resource::{Dataplane, Mesh, Resource, TrafficTrace};

/// The validated resources of a policy load.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub meshes: Vec<Mesh>,
    pub traffic_traces: Vec<TrafficTrace>,
    pub mesh_traces: Vec<meshtrace::MeshTrace>,
    pub otel_backends: Vec<meshtrace::MeshOpenTelemetryBackend>,
    /// Dataplanes found among the policy files: validated, not otherwise used.
    pub dataplanes: Vec<Dataplane>,
}

impl PolicySet {
    pub fn from_resources(resources: Vec<Resource>) -> Self {
        let mut set = PolicySet::default();
        for r in resources {
            match r {
                Resource::Mesh(m) => set.meshes.push(m),
                Resource::TrafficTrace(t) => set.traffic_traces.push(t),
                Resource::Dataplane(d) => set.dataplanes.push(d),
                Resource::MeshTrace(m) => set.mesh_traces.push(*m),
                Resource::MeshOpenTelemetryBackend(b) => set.otel_backends.push(b),
            }
        }
        set
    }

    /// What applies to `dataplane` under this policy.
    pub fn effective(&self, dataplane: &Dataplane, policy_version: u64) -> Effective {
        let mut effective = effective::compute(
            dataplane,
            &self.meshes,
            &self.traffic_traces,
            policy_version,
        );
        effective::apply_mesh_trace(
            &mut effective,
            meshtrace::resolve(dataplane, &self.mesh_traces, &self.otel_backends),
        );
        effective
    }
}

/// The outcome of loading and validating policy paths and, optionally, a dataplane file.
#[derive(Debug)]
pub struct Checked {
    pub set: PolicySet,
    pub dataplane: Option<Dataplane>,
    pub diagnostics: Vec<Diagnostic>,
    pub files: Vec<PathBuf>,
}

impl Checked {
    /// Whether the input must be refused: any error, or any warning when `strict`.
    pub fn failed(&self, strict: bool) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.is_error() || (strict && d.severity == Severity::Warning))
    }

    pub fn resource_count(&self) -> usize {
        self.set.meshes.len()
            + self.set.traffic_traces.len()
            + self.set.dataplanes.len()
            + self.set.mesh_traces.len()
            + self.set.otel_backends.len()
            + usize::from(self.dataplane.is_some())
    }
}

/// Loads every policy path and the dataplane file, and validates all of it. Problems are
/// collected, never returned early, so one run shows every one of them.
pub fn check(policy_paths: &[PathBuf], dataplane_file: Option<&Path>) -> Checked {
    let loaded = load::load_paths(policy_paths);
    let mut diagnostics = loaded.diagnostics;
    let mut files = loaded.files;
    for r in &loaded.resources {
        diagnostics.extend(validate::diagnostics_for(
            r.kind(),
            r.meta(),
            validate::validate_resource(r),
        ));
    }
    diagnostics.extend(validate::validate_set(&loaded.resources));
    diagnostics.extend(meshtrace::validate::validate_set(&loaded.resources));
    let set = PolicySet::from_resources(loaded.resources);

    let dataplane = dataplane_file.and_then(|file| {
        files.push(file.to_path_buf());
        match load::load_dataplane(file) {
            Ok((dp, warnings)) => {
                diagnostics.extend(warnings);
                diagnostics.extend(validate::diagnostics_for(
                    resource::Kind::Dataplane,
                    &dp.meta,
                    validate::validate_dataplane(&dp),
                ));
                if !set.meshes.is_empty() && !set.meshes.iter().any(|m| m.meta.name == dp.meta.mesh)
                {
                    diagnostics.push(
                        Diagnostic::warning(
                            file,
                            format!(
                                "mesh \"{}\" is not defined in the policy files: nothing is traced",
                                dp.meta.mesh
                            ),
                        )
                        .resource(format!("Dataplane/{}", dp.meta.name))
                        .at("mesh"),
                    );
                }
                Some(dp)
            }
            Err(problems) => {
                diagnostics.extend(problems);
                None
            }
        }
    });
    Checked {
        set,
        dataplane,
        diagnostics,
        files,
    }
}
