//! A finished span, as every exporter needs it. Built only for sampled requests.

use std::sync::Arc;

use super::id::{SpanId, TraceId};
use crate::policy::effective::Direction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

/// A span's tags in the order they were added: every value in one text buffer, and beside it
/// each tag's key with where its value lies in the text.
///
/// Two allocations per span whatever the number of tags (a list of 14 owned or shared values
/// cost 896 bytes, a `String` or an `Arc` count per value, and a walk over them all to drop
/// it); a value is copied in once and read back as a slice.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tags {
    text: String,
    /// Key, and where its value starts and ends in `text` (24 bytes, as a key and one end
    /// would take; an iterator then needs no state beyond its position).
    index: Vec<(&'static str, u32, u32)>,
}

impl Tags {
    /// Room for `tags` tags whose values take `text` bytes together.
    pub fn with_capacity(tags: usize, text: usize) -> Tags {
        Tags {
            text: String::with_capacity(text),
            index: Vec::with_capacity(tags),
        }
    }

    /// Room for `tags` more tags whose values take `text` more bytes.
    pub fn reserve(&mut self, tags: usize, text: usize) {
        self.text.reserve(text);
        self.index.reserve(tags);
    }

    /// Bytes this list holds room for, its text and its index together.
    pub fn capacity_bytes(&self) -> usize {
        self.text.capacity() + self.index.capacity() * std::mem::size_of::<(&str, u32, u32)>()
    }

    pub fn push(&mut self, key: &'static str, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        self.close(key, start);
    }

    /// A value written in pieces (`http.url`: scheme, host, path), without a buffer of its own.
    pub fn push_parts(&mut self, key: &'static str, parts: &[&str]) {
        let start = self.text.len();
        for part in parts {
            self.text.push_str(part);
        }
        self.close(key, start);
    }

    /// A header's value, left out when empty: valid UTF-8 (nearly always) is taken as it is,
    /// anything else made valid. `from_utf8` first: `from_utf8_lossy` walks even valid text
    /// in chunks, several times slower.
    pub fn push_header(&mut self, key: &'static str, value: &[u8]) {
        match std::str::from_utf8(value) {
            Ok("") => {}
            Ok(text) => self.push(key, text),
            Err(_) => self.push(key, &String::from_utf8_lossy(value)),
        }
    }

    pub fn push_u64(&mut self, key: &'static str, value: u64) {
        self.push(key, itoa::Buffer::new().format(value));
    }

    /// Text past 4 GiB cannot come from one request's head; were it ever there, its values
    /// would read as empty rather than wrong.
    fn close(&mut self, key: &'static str, start: usize) {
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.index.push((key, at(start), at(self.text.len())));
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every value, one after another: for a check that holds for all of them at once.
    pub fn text_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.index.clear();
    }

    /// The first value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The tags with their values as UTF-8 bytes, for encoders that write bytes: each value
    /// is a plain slice, without [`Tags::iter`]'s check that it starts and ends on a character
    /// boundary (it always does).
    pub fn iter_bytes(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        let text = self.text.as_bytes();
        self.index.iter().map(move |&(key, start, end)| {
            (
                key,
                text.get(start as usize..end as usize).unwrap_or_default(),
            )
        })
    }

    pub fn iter(&self) -> TagIter<'_> {
        TagIter {
            text: &self.text,
            index: self.index.iter(),
        }
    }
}

impl std::fmt::Debug for Tags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = (&'static str, &'a str);
    type IntoIter = TagIter<'a>;

    fn into_iter(self) -> TagIter<'a> {
        self.iter()
    }
}

impl<V: AsRef<str>> FromIterator<(&'static str, V)> for Tags {
    fn from_iter<I: IntoIterator<Item = (&'static str, V)>>(tags: I) -> Tags {
        let mut out = Tags::default();
        out.extend(tags);
        out
    }
}

impl<V: AsRef<str>> Extend<(&'static str, V)> for Tags {
    fn extend<I: IntoIterator<Item = (&'static str, V)>>(&mut self, tags: I) {
        for (key, value) in tags {
            self.push(key, value.as_ref());
        }
    }
}

/// The tags of a [`Tags`], in order.
#[derive(Clone)]
pub struct TagIter<'a> {
    text: &'a str,
    index: std::slice::Iter<'a, (&'static str, u32, u32)>,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = (&'static str, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let &(key, start, end) = self.index.next()?;
        // Every start and end was the text's length before or after a whole `&str` was
        // appended, so each range lies on character boundaries; `get` keeps that a `None`,
        // not a panic.
        Some((
            key,
            self.text.get(start as usize..end as usize).unwrap_or(""),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.index.size_hint()
    }
}

impl ExactSizeIterator for TagIter<'_> {}

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub id: SpanId,
    pub parent_id: Option<SpanId>,
    pub kind: SpanKind,
    pub direction: Direction,
    /// The Host / `:authority` the request was for.
    pub name: String,
    /// Start, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub duration_us: u64,
    /// The proxy's own service.
    pub local_service: Arc<str>,
    /// Client spans: the outbound's service.
    pub remote_service: Option<Arc<str>>,
    /// The SERVER span reuses the caller's span id (Zipkin `shared`).
    pub shared: bool,
    pub debug: bool,
    pub error: bool,
    /// Envoy's tags, in a stable order, empty values left out.
    pub tags: Tags,
    /// W3C `tracestate` as propagated (OTLP `trace_state`); `None` when there was none.
    pub trace_state: Option<Box<str>>,
}

impl Span {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::Tags;

    const KEYS: [&str; 4] = ["http.url", "user_agent", "grpc.message", "node_id"];

    proptest::proptest! {
        /// Whatever is pushed, in whatever pieces, reads back as the same list in the same
        /// order: multi-byte characters and empty values included.
        #[test]
        fn tags_read_back_as_pushed(
            pushed in proptest::collection::vec((0usize..4, "\\PC{0,12}", "\\PC{0,12}"), 0..24)
        ) {
            let mut tags = Tags::with_capacity(2, 8);
            for (key, a, b) in &pushed {
                if a.len() % 2 == 0 {
                    tags.push(KEYS[*key], &format!("{a}{b}"));
                } else {
                    tags.push_parts(KEYS[*key], &[a, b]);
                }
            }
            let read: Vec<(&str, String)> = tags.iter().map(|(k, v)| (k, v.to_owned())).collect();
            let want: Vec<(&str, String)> =
                pushed.iter().map(|(k, a, b)| (KEYS[*k], format!("{a}{b}"))).collect();
            proptest::prop_assert_eq!(tags.len(), want.len());
            proptest::prop_assert_eq!(read, want);
        }
    }

    #[test]
    fn get_finds_the_first_value_under_a_key() {
        let mut tags: Tags = [("a", "1"), ("b", "2")].into_iter().collect();
        tags.push("a", "3");
        tags.push_u64("n", 18_446_744_073_709_551_615);
        assert_eq!(tags.get("a"), Some("1"));
        assert_eq!(tags.get("n"), Some("18446744073709551615"));
        assert_eq!(tags.get("missing"), None);
    }

    #[test]
    fn cleared_tags_are_empty_and_take_new_ones() {
        let mut tags: Tags = [("a", "1")].into_iter().collect();
        tags.clear();
        assert!(tags.is_empty());
        tags.push("b", "2");
        assert_eq!(tags.iter().collect::<Vec<_>>(), [("b", "2")]);
    }
}
