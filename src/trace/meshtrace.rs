//! MeshTrace's per-proxy settings in the data path: the sampling knobs and the user tags.
//! Built once per policy; per request only the decision and the header lookups remain.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use http::HeaderMap;
use http::header::HeaderName;

use super::b3::SamplingState;
use super::layer::TracedBackend;
use super::sampler::{self, Decision, Knobs};
use super::span::Tags;
use crate::proxy::observe::Forwarded;

/// Envoy's header that asks for client sampling.
pub const X_CLIENT_TRACE_ID: HeaderName = HeaderName::from_static("x-client-trace-id");

/// What a MeshTrace adds to a traced backend.
#[derive(Debug)]
pub struct MeshTraceSettings {
    pub knobs: Knobs,
    pub tags: Box<[UserTag]>,
}

#[derive(Debug)]
pub struct UserTag {
    pub name: &'static str,
    pub source: TagSource,
}

#[derive(Debug)]
pub enum TagSource {
    Literal(Arc<str>),
    /// The request header's value, else `default`, else no tag.
    Header {
        name: HeaderName,
        default: Option<Arc<str>>,
    },
}

/// One tag as the policy says it.
pub enum TagRule<'a> {
    Literal(&'a str),
    Header {
        name: &'a str,
        default: Option<&'a str>,
    },
}

impl MeshTraceSettings {
    /// Builds the tag list once per policy. A header name that is not a valid HTTP header
    /// name can never be present: such a tag takes its default.
    pub fn new<'a>(knobs: Knobs, tags: impl IntoIterator<Item = (&'a str, TagRule<'a>)>) -> Self {
        let tags = tags
            .into_iter()
            .filter_map(|(name, rule)| {
                let source = match rule {
                    TagRule::Literal(value) => TagSource::Literal(Arc::from(value)),
                    TagRule::Header { name, default } => match HeaderName::try_from(name) {
                        Ok(header) => TagSource::Header {
                            name: header,
                            default: default.map(Arc::from),
                        },
                        Err(_) => TagSource::Literal(Arc::from(default?)),
                    },
                };
                Some(UserTag {
                    name: intern(name),
                    source,
                })
            })
            .collect();
        MeshTraceSettings { knobs, tags }
    }

    /// Appends the user and automatic tags for one request (empty values left out).
    pub fn push_tags(&self, head: &Forwarded<'_>, out: &mut Tags) {
        for tag in &self.tags {
            let text = match &tag.source {
                TagSource::Literal(v) => v,
                TagSource::Header { name, default } => match head.get(name) {
                    Some(value) if !value.is_empty() => {
                        out.push_header(tag.name, value);
                        continue;
                    }
                    _ => match default {
                        Some(d) => d,
                        None => continue,
                    },
                },
            };
            if !text.is_empty() {
                out.push(tag.name, text);
            }
        }
    }
}

impl TracedBackend {
    /// The sampling decision: the backend's percentage (TrafficTrace), or MeshTrace's knobs.
    #[inline]
    pub fn decide(
        &self,
        incoming: Option<SamplingState>,
        key: &[u8],
        headers: &HeaderMap,
    ) -> Decision {
        match &self.meshtrace {
            None => sampler::decide(incoming, key, self.basis_points),
            Some(m) => sampler::decide_knobs(
                incoming,
                key,
                headers.contains_key(&X_CLIENT_TRACE_ID),
                &m.knobs,
            ),
        }
    }
}

/// Tag names live as long as the process (span tags are keyed by `&'static str`); each
/// distinct name is stored once, so policy reloads do not grow memory.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let Ok(mut names) = names.lock() else {
        return "tag";
    };
    if let Some(found) = names.get(name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}
